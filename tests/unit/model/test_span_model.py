"""The span model on a tiny random encoder: batching, losses, checkpoints, training, prediction."""

import json

import pytest
import torch

from linkner.data.spans import Sentence, Span, make_sentence
from linkner.model.encoders import load_pretrained_encoder, load_tokenizer
from linkner.model.batching import IGNORE_INDEX, SpanBatcher
from linkner.model.casing import LOWER, NUMERIC, PUNCT, TITLE, UPPER, casing_class
from linkner.model.checkpoint import CheckpointError, load_checkpoint, read_metadata
from linkner.model.config import SpanModelConfig
from linkner.model.metadata import checkpoint_labels
from linkner.model.span_model import SpanNER, dirichlet_kl_to_uniform, span_loss
from linkner.model.predictor import SpanPredictor
from linkner.model.training import TrainConfig, Trainer


@pytest.fixture()
def batcher(tiny_encoder):
    return SpanBatcher(load_tokenizer(tiny_encoder), ["LOC", "PER"], max_span_len=3)


def test_casing_classes():
    assert [casing_class(w) for w in ["paris", "EU", "Paris", "1996", ","]] == [LOWER, UPPER, TITLE, NUMERIC, PUNCT]


def test_batch_enumerates_spans_and_gold_labels(batcher):
    sentence = make_sentence(["John", "Smith", "visited", "Paris"], [Span(0, 2, "PER"), Span(3, 4, "LOC")])
    batch = batcher.encode([sentence, make_sentence(["hi"])], with_labels=True)
    spans = batch.spans[0]
    # 4 words, widths up to 3: 3 + 3 + 2 + 1
    assert len(spans) == 9 and batch.spans[1] == [(0, 1)]
    labels = dict(zip(spans, batch.span_labels[0].tolist()))
    assert labels[(0, 2)] == batcher.class_index["PER"] and labels[(3, 4)] == batcher.class_index["LOC"]
    assert labels[(0, 1)] == 0
    assert batch.span_labels[1, 1:].eq(IGNORE_INDEX).all()
    assert batch.span_mask.sum().item() == 10
    # each word points at its first sub-token: 'john' 'smith' 'visited' 'paris' after [CLS]
    assert batch.word_index[0].tolist() == [1, 2, 3, 4]


def test_words_split_into_pieces_point_at_their_first_piece(batcher):
    batch = batcher.encode([Sentence(("zork", "paris"))])
    assert batch.word_index[0].tolist() == [1, 5]  # z ##o ##r ##k


def test_kl_matches_torch_distributions():
    alpha = torch.tensor([[1.5, 2.0, 7.0], [1.0, 1.0, 1.0]])
    expected = torch.distributions.kl_divergence(
        torch.distributions.Dirichlet(alpha), torch.distributions.Dirichlet(torch.ones_like(alpha))
    )
    assert torch.allclose(dirichlet_kl_to_uniform(alpha), expected, atol=1e-5)


def test_evidential_loss_matches_a_hand_computed_value():
    import math

    config = SpanModelConfig(labels=["LOC", "PER"], objective="evidential")
    logits = torch.tensor([[[0.0, math.log(3), 0.0], [math.log(2), 0.0, 0.0], [50.0, -9.0, 3.0]]])
    labels = torch.tensor([[1, 0, IGNORE_INDEX]])  # span 1 is LOC, span 2 is O, span 3 is padding
    # alpha = exp(logits) + 1: span 1 [2, 4, 2] (S = 8), span 2 [3, 2, 2] (S = 7)
    nll_1 = math.log(8) - math.log(4)
    nll_2 = math.log(7) - math.log(3)
    # misleading evidence (the gold class's alpha set to 1): [2, 1, 2] and [1, 2, 2], both S~ = 5, so
    # KL(Dir(a) || Dir(1, 1, 1)) = lgamma(5) - lgamma(3) - sum lgamma(a) + sum (a - 1)(digamma(a) - digamma(5))
    #   = log 24 - log 2 - 0 + 2 (digamma(2) - digamma(5)) = log 12 - 2 (1/2 + 1/3 + 1/4) = log 12 - 13/6
    kl = math.log(12) - 13 / 6
    weight = min(1.0, 2 / 4)  # the annealed KL weight at epoch 2 of kl_anneal_epochs=4
    # O spans weigh outside_weight = 0.5; the mean is weighted
    expected = (1.0 * (nll_1 + weight * kl) + 0.5 * (nll_2 + weight * kl)) / 1.5
    loss = span_loss(logits, labels, config, outside_weight=0.5, kl_weight=weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    no_kl = span_loss(logits, labels, config, outside_weight=0.5, kl_weight=0.0)
    assert no_kl.item() == pytest.approx((nll_1 + 0.5 * nll_2) / 1.5, rel=1e-6)


@pytest.mark.parametrize("objective", ["cross_entropy", "evidential"])
def test_loss_falls_when_fitting_one_batch(tiny_encoder, batcher, objective):
    torch.manual_seed(0)
    config = SpanModelConfig(labels=["LOC", "PER"], max_span_len=3, hidden_dim=32, objective=objective)
    model = SpanNER(config, load_pretrained_encoder(tiny_encoder))
    sentence = make_sentence(["John", "Smith", "visited", "Paris"], [Span(0, 2, "PER"), Span(3, 4, "LOC")])
    batch = batcher.encode([sentence], with_labels=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = span_loss(model(batch), batch.span_labels, config, kl_weight=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_trained_tiny_model_finds_entities(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    predictions = predictor.predict([s.tokens for s in toy_dev], ["confidence", "entropy", "mc_dropout"])
    gold = {(i, span) for i, s in enumerate(toy_dev) for span in s.entities}
    found = {(i, p.span) for i, sentence in enumerate(predictions) for p in sentence}
    assert len(found & gold) / len(gold) > 0.8
    entity = predictions[0][0]
    assert set(entity.uncertainty) == {"confidence", "entropy", "mc_dropout"}
    assert all(0.0 <= value <= 1.0 for value in entity.uncertainty.values())
    assert entity.uncertainty["confidence"] == pytest.approx(1 - entity.probability)
    assert entity.alternatives[0] == (entity.label, pytest.approx(entity.probability))
    metadata = read_metadata(tiny_checkpoint)
    assert metadata["training"]["dev_f1"] > 0.8


def test_checkpoint_round_trip_gives_identical_outputs(tiny_encoder, toy_train, toy_dev, tmp_path):
    config = TrainConfig(encoder=str(tiny_encoder), epochs=1, batch_size=16, hidden_dim=16, progress=False,
                         max_span_len=3, lr_encoder=1e-3, lr_head=3e-3)
    trainer = Trainer(config, toy_train[:64], toy_dev[:16], tmp_path / "m")
    trainer.fit()  # one epoch: the saved best is the model in memory
    trained = trainer.model.eval()
    loaded, batcher = load_checkpoint(tmp_path / "m")
    batch = batcher.encode(toy_dev[:8])
    with torch.no_grad():
        before, after = trained(batch), loaded(batch)
    assert torch.equal(before, after)
    assert trainer.batcher.classes == batcher.classes and trainer.batcher.max_subwords == batcher.max_subwords
    saved = json.loads((tmp_path / "m" / "linkner_config.json").read_text())
    assert saved["labels"] == ["LOC", "ORG", "PER"] and saved["encoder_config"]["model_type"] == "bert"
    # the labels the app reads without loading the model (to warm the LLM pool's prefix cache)
    assert checkpoint_labels(tmp_path / "m") == loaded.config.labels == ["LOC", "ORG", "PER"]
    assert checkpoint_labels(tmp_path / "none") is None


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(CheckpointError, match="linkner train"):
        load_checkpoint(tmp_path)


def test_long_sentences_are_windowed_and_every_word_is_seen(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", window_words=16)
    long_tokens, gold = [], []
    for s in toy_dev[:12]:
        gold += [Span(span.start + len(long_tokens), span.end + len(long_tokens), span.label) for span in s.entities]
        long_tokens += s.tokens
    assert len(long_tokens) > 5 * 16
    entities = predictor.predict([long_tokens])[0]
    predicted = [p.span for p in entities]
    assert all(a.end <= b.start for a, b in zip(predicted, predicted[1:]))  # sorted, non-overlapping
    assert max(span.end for span in predicted) > len(long_tokens) - 8  # the last window was read
    # nearly as good as the same sentences read one by one (a 16-word window run across sentence
    # ends gives this toy model less context than it was trained with, but no word goes unread)
    one_by_one = [Span(p.span.start + offset, p.span.end + offset, p.span.label)
                  for s, offset, found in zip(toy_dev[:12], _offsets(toy_dev[:12]), predictor.predict(
                      [s.tokens for s in toy_dev[:12]])) for p in found]
    recall = len(set(predicted) & set(gold)) / len(gold)
    assert recall > 0.5 and recall >= len(set(one_by_one) & set(gold)) / len(gold) - 0.2


def _offsets(sentences) -> list[int]:
    starts, total = [], 0
    for sentence in sentences:
        starts.append(total)
        total += len(sentence.tokens)
    return starts


def test_long_windows_respect_the_encoders_position_table(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")  # 128 positions
    assert predictor.batcher.max_subwords == 128
    words = [t for s in toy_dev for t in s.tokens][:400]  # 128-word windows: far over 128 pieces
    assert predictor.predict([words])[0]


def test_sub_word_limit_splits_windows_instead_of_dropping_words(tiny_checkpoint, toy_dev):
    model, batcher = load_checkpoint(tiny_checkpoint)
    batcher.max_subwords = 24  # far fewer pieces than the text has
    predictor = SpanPredictor(model, batcher, window_words=500)
    long_tokens, gold = [], []
    for s in toy_dev[:8]:
        gold += [Span(span.start + len(long_tokens), span.end + len(long_tokens), span.label) for span in s.entities]
        long_tokens += s.tokens
    predicted = {p.span for p in predictor.predict([long_tokens])[0]}
    assert max(span.end for span in predicted) > len(long_tokens) - 8
    assert len(predicted & set(gold)) / len(gold) > 0.6


def test_training_resumes_and_respects_time_budget(tiny_encoder, toy_train, toy_dev, tmp_path):
    base = dict(encoder=str(tiny_encoder), batch_size=16, hidden_dim=32, progress=False, max_span_len=4,
                patience=5, lr_encoder=1e-3, lr_head=3e-3)
    first = Trainer(TrainConfig(epochs=2, **base), toy_train, toy_dev, tmp_path / "m").fit()
    assert first.epochs_run == 2 and first.stopped == "epochs"
    resumed = Trainer(TrainConfig(epochs=3, **base), toy_train, toy_dev, tmp_path / "m").fit(resume=True)
    assert [int(h["epoch"]) for h in resumed.history] == [1, 2, 3]
    assert resumed.epochs_run == 3
    budget = Trainer(TrainConfig(epochs=50, time_budget_s=0.5, **base), toy_train, toy_dev, tmp_path / "b").fit()
    assert budget.stopped == "time_budget" and budget.epochs_run < 50
    assert (tmp_path / "b" / "model.safetensors").is_file()


def test_evidential_training_supports_all_estimators(tiny_encoder, toy_train, toy_dev, tmp_path):
    config = TrainConfig(encoder=str(tiny_encoder), objective="evidential", epochs=4, batch_size=16, hidden_dim=64,
                         progress=False, max_span_len=4, lr_encoder=1e-3, lr_head=3e-3, kl_anneal_epochs=4)
    result = Trainer(config, toy_train, toy_dev, tmp_path / "ev").fit()
    assert result.best_dev_f1 > 0.5
    predictor = SpanPredictor.from_checkpoint(tmp_path / "ev", device="cpu")
    entity = next(p for sentence in predictor.predict([s.tokens for s in toy_dev[:10]],
                                                      ["evidential", "confidence"]) for p in sentence)
    assert 0.0 < entity.uncertainty["evidential"] <= 1.0


def test_ensure_trained_trains_once(tiny_encoder, toy_train, toy_dev, tmp_path):
    from linkner.data.readers import write_conll
    from linkner.model.training import ensure_trained

    write_conll(tmp_path / "train.txt", toy_train[:64])
    write_conll(tmp_path / "dev.txt", toy_dev[:16])
    config = TrainConfig(encoder=str(tiny_encoder), epochs=1, batch_size=16, hidden_dim=16, progress=False,
                         max_span_len=3)
    model = ensure_trained(tmp_path / "m", tmp_path, config)
    stamp = (model / "model.safetensors").stat().st_mtime_ns
    assert ensure_trained(model, tmp_path / "nowhere", config) == model  # already there: nothing to do
    assert (model / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="no training data"):
        ensure_trained(tmp_path / "other", tmp_path / "nowhere", config)


def _interrupt_after(epochs: int):
    """An on_epoch callback that interrupts training when epoch ``epochs + 1`` is reported (before
    that epoch is saved), as Ctrl-C would."""
    def on_epoch(record: dict[str, float]) -> None:
        if record["epoch"] > epochs:
            raise KeyboardInterrupt
    return on_epoch


def test_ensure_trained_resumes_an_interrupted_first_run(tiny_encoder, toy_train, toy_dev, tmp_path, capsys):
    from linkner.data.readers import write_conll
    from linkner.model.metadata import is_checkpoint, unfinished_training
    from linkner.model.training import ensure_trained

    write_conll(tmp_path / "train.txt", toy_train[:64])
    write_conll(tmp_path / "dev.txt", toy_dev[:16])
    config = TrainConfig(encoder=str(tiny_encoder), epochs=3, batch_size=16, hidden_dim=16, progress=False,
                         max_span_len=3, patience=5, lr_encoder=1e-3, lr_head=3e-3)
    output = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, toy_train[:64], toy_dev[:16], output, on_epoch=_interrupt_after(1)).fit()
    assert is_checkpoint(output)  # epoch 1's model is there, but the run is not done
    assert read_metadata(output)["training"]["completed"] is False
    assert unfinished_training(output)["last_epoch"] == 1

    saved: list[int] = []
    assert ensure_trained(output, tmp_path, config, on_saved=saved.append) == output
    assert "resuming an unfinished training run after epoch 1" in capsys.readouterr().err
    assert saved == [2, 3]  # resumed, not restarted
    training = read_metadata(output)["training"]
    assert training["completed"] is True and training["stopped"] == "epochs" and training["last_epoch"] == 3
    assert not (output / "train_state.pt").exists()  # finished: nothing left to resume from
    assert unfinished_training(output) is None
    stamp = (output / "model.safetensors").stat().st_mtime_ns
    assert ensure_trained(output, tmp_path / "nowhere", config) == output  # finished: nothing to do
    assert (output / "model.safetensors").stat().st_mtime_ns == stamp


def test_runs_stopped_by_their_own_rules_are_completed(tiny_encoder, toy_train, toy_dev, tmp_path):
    base = dict(encoder=str(tiny_encoder), batch_size=16, hidden_dim=16, progress=False, max_span_len=3)
    early = Trainer(TrainConfig(epochs=30, patience=1, lr_encoder=1e-9, lr_head=1e-9, **base), toy_train[:32],
                    toy_dev[:8], tmp_path / "early").fit()
    assert early.stopped == "early_stopping"
    assert read_metadata(tmp_path / "early")["training"]["completed"] is True
    assert read_metadata(tmp_path / "early")["training"]["stopped"] == "early_stopping"
    budget = Trainer(TrainConfig(epochs=50, patience=50, time_budget_s=0.5, **base), toy_train[:32], toy_dev[:8],
                     tmp_path / "budget").fit()
    assert budget.stopped == "time_budget"
    training = read_metadata(tmp_path / "budget")["training"]
    assert (training["completed"], training["stopped"]) == (True, "time_budget")


def test_checkpoints_without_the_completed_flag(tmp_path):
    from linkner.model.metadata import is_finished_checkpoint, unfinished_training, write_metadata

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    (folder / "linkner_config.json").write_text("{}")
    write_metadata(folder, {"training": {"epoch": 2, "dev_f1": 0.5}})
    assert unfinished_training(folder) is None and is_finished_checkpoint(folder)  # nothing to resume from
    (folder / "train_state.pt").write_bytes(b"x")
    assert unfinished_training(folder)["epoch"] == 2 and not is_finished_checkpoint(folder)
    write_metadata(folder, {})  # not written by the trainer
    assert is_finished_checkpoint(folder)


def test_main_job_finishes_an_unfinished_default_model(tmp_path, monkeypatch):
    import linkner.model.training as training
    from linkner.model.metadata import write_metadata
    from linkner.service.prepare import ensure_model

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.safetensors", "linkner_config.json", "train_state.pt"):
        (folder / name).write_bytes(b"x")
    write_metadata(folder, {"training": {"epoch": 1, "last_epoch": 1, "completed": False}})
    calls = []
    monkeypatch.setattr(training, "ensure_trained", lambda *args, **kwargs: calls.append(args) or args[0])
    assert ensure_model(folder, tmp_path, None, None) == folder
    assert calls and calls[0][0] == folder
    write_metadata(folder, {"training": {"epoch": 1, "completed": True}})
    calls.clear()
    assert ensure_model(folder, tmp_path, None, None) == folder and not calls


def _snapshot(predictions) -> list:
    return [[(p.start, p.end, p.label, p.probability, p.uncertainty["confidence"]) for p in sentence]
            for sentence in predictions]


def test_mc_dropout_does_not_disturb_concurrent_deterministic_predictions(tiny_checkpoint, toy_dev):
    import threading

    model, batcher = load_checkpoint(tiny_checkpoint)
    assert model.config.dropout > 0
    deterministic = SpanPredictor(model, batcher)
    sampling = SpanPredictor(model, batcher, mc_samples=64)  # the same module: long stretches of sampling
    tokens = [s.tokens for s in toy_dev[:16]]
    expected = _snapshot(deterministic.predict(tokens, ["confidence"]))
    seen, sampled, stop = [], [], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sampled.append(sampling.predict(tokens, ["confidence", "mc_dropout"]))

    def predict() -> None:
        try:
            for _ in range(25):
                seen.append(_snapshot(deterministic.predict(tokens, ["confidence"])))
        finally:
            stop.set()

    threads = [threading.Thread(target=sample), threading.Thread(target=predict)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(seen) == 25 and sampled
    assert all(result == expected for result in seen)  # no dropout leaked into the deterministic pass
    for result in sampled:
        assert _snapshot(result) == expected  # sampling's own deterministic pass was deterministic too
        entities = [p for sentence in result for p in sentence]
        assert any(abs(p.uncertainty["mc_dropout"] - p.uncertainty["confidence"]) > 1e-4 for p in entities)
    assert not model.head_dropout.training


def test_mc_dropout_samples_vary_and_vanish_without_dropout(tiny_checkpoint, toy_dev):
    model, batcher = load_checkpoint(tiny_checkpoint)
    predictor = SpanPredictor(model, batcher, mc_samples=8)
    batch = batcher.encode(toy_dev[:8])
    _, outputs, positions = predictor._outputs(batch, samples=8)
    assert positions and outputs.sample_probs.shape == (8, len(positions), len(batcher.classes))
    assert not torch.equal(outputs.sample_probs[0], outputs.sample_probs[1])  # every pass draws its own mask
    assert not torch.allclose(outputs.sample_probs.mean(0), outputs.probs, atol=1e-4)
    entities = [p for s in predictor.predict([s.tokens for s in toy_dev], ["confidence", "mc_dropout"]) for p in s]
    gaps = [abs(p.uncertainty["mc_dropout"] - p.uncertainty["confidence"]) for p in entities]
    assert max(gaps) > 1e-3  # dropout on: the uncertainty is not the deterministic confidence

    model.head_dropout.p = 0.0  # no dropout: every pass is the deterministic one
    _, outputs, _ = predictor._outputs(batch, samples=8)
    assert torch.allclose(outputs.sample_probs, outputs.probs.expand_as(outputs.sample_probs), atol=1e-6)
    entities = [p for s in predictor.predict([s.tokens for s in toy_dev], ["confidence", "mc_dropout"]) for p in s]
    assert all(p.uncertainty["mc_dropout"] == pytest.approx(p.uncertainty["confidence"], abs=1e-6)
               for p in entities)

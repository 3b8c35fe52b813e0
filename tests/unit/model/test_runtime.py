"""The encoder's runtimes: int8 is the encoder exported to ONNX and quantized, cached beside the
checkpoint for its weights (rebuilt when stale, never served stale), answering as float32 does."""

import json
import logging
import shutil

import pytest
import torch

from deployments.ingress import served_model_name
from linkner.model.onnx_encoder import OnnxEncoder
from linkner.model.predictor import SpanPredictor
from linkner.model.runtime import INT8_GRAPH, INT8_STAMP, RUNTIME_FOLDER, apply_runtime, int8_graph_problem


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint, so its runtime folder starts empty."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "model", ignore=shutil.ignore_patterns(RUNTIME_FOLDER))


def test_an_int8_predictor_runs_the_cached_graph_and_finds_what_float32_finds(checkpoint, toy_dev):
    sentences = [s.tokens for s in toy_dev[:40]]
    eager = SpanPredictor.from_checkpoint(checkpoint, device="cpu")
    assert int8_graph_problem(checkpoint) == "none made yet"
    int8 = SpanPredictor.from_checkpoint(checkpoint, device="cpu", runtime="int8")
    assert (eager.runtime, int8.runtime) == ("eager", "int8") and int8.describe()["runtime"] == "int8"
    assert isinstance(int8.model.encoder, OnnxEncoder) and int8_graph_problem(checkpoint) is None
    assert int8.pack_tokens == eager.pack_tokens > 0  # packing was decided on the float32 encoder
    found = {(i, e.span, e.label) for i, entities in enumerate(eager.predict(sentences)) for e in entities}
    quantized = {(i, e.span, e.label) for i, entities in enumerate(int8.predict(sentences)) for e in entities}
    assert len(found & quantized) >= 0.9 * len(found) > 0
    # padded and packed rows give the same states up to int8 rounding
    batch = int8.batcher.encode(toy_dev[:6])
    words, _ = int8.model.word_states(batch)
    packed, _ = int8.model.word_states(batch, pack_tokens=64, first_position=int8.first_position)
    assert torch.allclose(words, packed, atol=0.2)


def test_a_graph_made_for_other_weights_is_rebuilt_not_served(checkpoint):
    SpanPredictor.from_checkpoint(checkpoint, device="cpu", runtime="int8")
    stamp = checkpoint / RUNTIME_FOLDER / INT8_STAMP
    made = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**made, "weights_sha256": "0" * 64}))
    assert int8_graph_problem(checkpoint) == "made for another weights_sha256"
    (checkpoint / RUNTIME_FOLDER / INT8_GRAPH).write_bytes(b"not a graph")
    predictor = SpanPredictor.from_checkpoint(checkpoint, device="cpu", runtime="int8")
    assert json.loads(stamp.read_text()) == made and predictor.predict([["John", "Smith", "."]]) is not None


def test_int8_on_another_device_runs_float32_and_says_so(checkpoint, caplog):
    predictor = SpanPredictor.from_checkpoint(checkpoint, device="cpu")
    with caplog.at_level(logging.WARNING):
        assert apply_runtime(predictor.model, "int8", torch.device("meta"), checkpoint) == "eager"
    assert "CPU only" in caplog.text and not isinstance(predictor.model.encoder, OnnxEncoder)
    with pytest.raises(ValueError, match="unknown runtime 'fp8'"):
        apply_runtime(predictor.model, "fp8", torch.device("cpu"), checkpoint)


def test_the_graph_runs_on_the_threads_torch_is_set_to(checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(checkpoint, device="cpu", runtime="int8")
    batch = predictor.batcher.encode(toy_dev[:4])
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            predictor.model.word_states(batch)
    finally:
        torch.set_num_threads(before)
    assert set(predictor.model.encoder._sessions) >= {1, 2}


def test_the_served_model_names_a_runtime_other_than_float32():
    info = {"checkpoint": "default@0123456789ab", "encoder": "default", "objective": "cross_entropy"}
    assert served_model_name({**info, "runtime": "eager"}) == "default@0123456789ab (default:cross_entropy)"
    assert served_model_name({**info, "runtime": "int8"}) == "default@0123456789ab (default:cross_entropy, int8)"


def test_the_exported_graph_masks_with_a_finite_score_and_keeps_the_encoders_states(checkpoint, tmp_path):
    import onnx
    import onnxruntime

    from linkner.model.checkpoint import load_checkpoint
    from linkner.model.onnx_mask import finite_attention_mask
    from linkner.model.packing import pack_inputs
    from linkner.model.runtime import export_encoder

    encoder = load_checkpoint(checkpoint)[0].encoder.eval()
    graph = export_encoder(encoder, tmp_path / "encoder.onnx")
    operators = [node.op_type for node in onnx.load(str(graph)).graph.node]
    assert "IsNaN" not in operators and operators.count("Softmax") == encoder.config.num_hidden_layers
    assert finite_attention_mask(graph) == 0  # already rewritten: nothing left to do, the graph unchanged

    # three sentences of 5, 3 and 2 sub-words packed, each attending only to itself
    ids = torch.tensor([[101, 7, 8, 9, 102], [101, 10, 102, 0, 0], [101, 102, 0, 0, 0]])
    real = (ids != 0).long()
    packed = pack_inputs(ids, real, row_tokens=6)
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    states = session.run(None, {"input_ids": packed.input_ids.numpy(), "position_ids": packed.position_ids.numpy(),
                                "attention_mask": packed.attention_mask.numpy()})[0]
    assert torch.from_numpy(states).isfinite().all()
    with torch.no_grad():
        expected = encoder(input_ids=ids, attention_mask=real).last_hidden_state[real.bool()]
    found = torch.from_numpy(states).reshape(-1, states.shape[-1])[packed.token_index[real.bool()]]
    assert torch.allclose(found, expected, atol=1e-4)

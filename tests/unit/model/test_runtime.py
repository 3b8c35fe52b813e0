"""The encoder's runtimes: int8 quantizes the encoder's linear layers (but those kept float) on a
CPU, answers as float32 does on a trained model, and is named in the served model."""

import logging

import pytest
import torch
from torch import nn

from deployments.ingress import served_model_name
from linkner.model.predictor import SpanPredictor
from linkner.model.runtime import apply_runtime, quantizable_layers


def quantized_layer_names(module: nn.Module) -> list[str]:
    return [name for name, child in module.named_modules()
            if type(child).__name__ == "Linear" and type(child).__module__.startswith("torch.ao.nn.quantized")]


def test_int8_quantizes_the_encoders_linear_layers_but_those_kept_float(tiny_checkpoint):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    linear = [name for name, child in predictor.model.encoder.named_modules() if isinstance(child, nn.Linear)]
    kept = (r"^encoder\.layer\.1\.output\.dense$",)
    assert "encoder.layer.1.output.dense" in linear
    assert apply_runtime(predictor.model, "int8", torch.device("cpu"), kept) == "int8"
    assert quantized_layer_names(predictor.model.encoder) == [n for n in linear if n != "encoder.layer.1.output.dense"]
    assert quantized_layer_names(predictor.model.hidden) == [] and isinstance(predictor.model.output, nn.Linear)
    assert quantizable_layers(nn.Sequential(nn.Linear(2, 2)), ()) == ["0"]


def test_an_int8_predictor_finds_what_the_float32_one_finds(tiny_checkpoint, toy_dev):
    sentences = [s.tokens for s in toy_dev[:40]]
    eager = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    int8 = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", runtime="int8")
    assert (eager.runtime, int8.runtime) == ("eager", "int8")
    assert int8.pack_tokens == eager.pack_tokens > 0  # packing was decided on the float32 encoder
    found = {(i, e.span) for i, entities in enumerate(eager.predict(sentences)) for e in entities}
    quantized = {(i, e.span) for i, entities in enumerate(int8.predict(sentences)) for e in entities}
    assert len(found & quantized) >= 0.9 * len(found) > 0
    assert int8.describe()["runtime"] == "int8"


def test_int8_on_another_device_runs_float32_and_says_so(tiny_checkpoint, caplog):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    with caplog.at_level(logging.WARNING):
        assert apply_runtime(predictor.model, "int8", torch.device("meta")) == "eager"
    assert "CPU only" in caplog.text and quantized_layer_names(predictor.model) == []
    with pytest.raises(ValueError, match="unknown runtime 'fp8'"):
        apply_runtime(predictor.model, "fp8", torch.device("cpu"))


def test_the_served_model_names_a_runtime_other_than_float32():
    info = {"checkpoint": "default@0123456789ab", "encoder": "default", "objective": "cross_entropy"}
    assert served_model_name({**info, "runtime": "eager"}) == "default@0123456789ab (default:cross_entropy)"
    assert served_model_name({**info, "runtime": "int8"}) == "default@0123456789ab (default:cross_entropy, int8)"

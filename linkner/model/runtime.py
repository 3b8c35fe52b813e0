"""How the encoder runs at inference: float32 as trained (``eager``), or with its linear layers
quantized to int8 (``int8``) on a CPU.

``int8`` is PyTorch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``, the x86
fbgemm kernels): weights per output channel, activations per call, accumulation in int32. It is made
from the float32 weights when a predictor loads (about a second) and held in memory only, so it can
never go stale against the checkpoint. The layers :data:`KEPT_FLOAT` names stay float32: the ones
quantization hurts most, chosen on dev F1 (``python -m benchmarks.runtimes``; docs/performance.md).
The span head is never quantized: it is small, and the uncertainties are read from it.

Chosen by measurement on CPU (docs/performance.md): ONNX Runtime float32 and OpenVINO float32 ran at
eager PyTorch's speed, ONNX Runtime's dynamic int8 below PyTorch's, and torchao's int8 configurations
have no fast CPU kernel without ``torch.compile``.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where a model is set up, so configs can name a runtime cheaply
    import torch
    from torch import nn

log = logging.getLogger(__name__)

Runtime = Literal["eager", "int8"]
RUNTIMES: tuple[str, ...] = ("eager", "int8")
DEFAULT_RUNTIME: Runtime = "int8"
"""What ``ner.runtime`` defaults to: the fastest runtime within the quality bounds on CPU."""

KEPT_FLOAT: tuple[str, ...] = (r"^encoder\.layer\.5\.output\.dense$",)
"""Regular expressions over the encoder's module names whose linear layers stay float32 under
``int8``: MiniLM-L6's last feed-forward output projection (its six layers are ``encoder.layer.0-5``;
for a deeper encoder the pattern names nothing and every layer is quantized)."""


def quantizable_layers(encoder: "nn.Module", kept_float: tuple[str, ...] = KEPT_FLOAT) -> list[str]:
    """Names of the encoder's linear layers that ``int8`` quantizes: all but those ``kept_float`` matches."""
    from torch import nn

    patterns = [re.compile(pattern) for pattern in kept_float]
    return [name for name, module in encoder.named_modules()
            if isinstance(module, nn.Linear) and not any(pattern.search(name) for pattern in patterns)]


def quantized_encoder(encoder: "nn.Module", kept_float: tuple[str, ...] = KEPT_FLOAT) -> "nn.Module":
    """A copy of ``encoder`` whose linear layers (but those ``kept_float`` matches) run in int8."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layers = {name: per_channel_dynamic_qconfig for name in quantizable_layers(encoder, kept_float)}
    with warnings.catch_warnings():  # the eager-mode API warns it will move to torchao, whose CPU int8 is slower
        warnings.simplefilter("ignore")
        return quantize_dynamic(encoder, layers, dtype=torch.qint8, inplace=False)


def apply_runtime(model: "nn.Module", runtime: Runtime, device: "torch.device",
                  kept_float: tuple[str, ...] = KEPT_FLOAT) -> str:
    """Set up ``model`` (a :class:`SpanNER` in eval mode) to run its encoder in ``runtime`` on
    ``device``; returns the runtime it runs in. ``int8`` is a CPU runtime: elsewhere the model stays
    float32, and says so in the log."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "eager":
        return "eager"
    if device.type != "cpu":
        log.warning("runtime int8 runs on a CPU only: the model on %s stays float32 (eager)", device)
        return "eager"
    import torch

    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"
    model.encoder = quantized_encoder(model.encoder, kept_float)
    return "int8"

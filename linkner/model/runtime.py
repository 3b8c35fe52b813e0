"""How the encoder runs at inference: float32 PyTorch as trained (``eager``), or ONNX Runtime with
its matrix products in int8 (``int8``) on a CPU.

``int8`` is the encoder exported to ONNX (inputs as the predictor's packed rows: sub-word ids,
position ids and a 4-D boolean attention mask) and quantized dynamically by ONNX Runtime: weights
int8 per output channel, activations uint8 per call. The graph is made once (the preparation
step, ``linkner prepare``, or the first load) and cached beside the checkpoint in ``runtime/``,
with the SHA-256 of the weights it was made from and the versions that made it; a graph made from
other weights or by other versions is rebuilt, never served. The span head stays in PyTorch
float32: the uncertainties are read from it.

Chosen by measurement (``python -m benchmarks.runtimes``, docs/performance.md): of the runtimes
that keep test F1 within 0.3 and ``learned`` AUROC within 0.01 of float32, the fastest. PyTorch's
own dynamic int8 ran faster but lost 0.7 test F1 (its x86 kernels quantize activations to 7 bits);
ONNX Runtime and OpenVINO in float32 ran at eager PyTorch's speed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch is imported where a model is set up, so configs can name a runtime cheaply
    import torch
    from torch import nn

log = logging.getLogger(__name__)

Runtime = Literal["eager", "int8"]
RUNTIMES: tuple[str, ...] = ("eager", "int8")
DEFAULT_RUNTIME: Runtime = "int8"
"""What ``ner.runtime`` defaults to: the fastest runtime within the quality bounds on CPU."""

RUNTIME_FOLDER = "runtime"  # beside the checkpoint's weights
INT8_GRAPH = "encoder-int8.onnx"
INT8_STAMP = "encoder-int8.json"
GRAPH_FORMAT = 2  # bump when the export or the quantization settings change (2: finite attention mask)
INPUTS = ("input_ids", "position_ids", "attention_mask")


def apply_runtime(model: "nn.Module", runtime: Runtime, device: "torch.device", checkpoint: str | Path,
                  first_position: int = 0) -> str:
    """Set up ``model`` (a :class:`SpanNER` in eval mode, loaded from ``checkpoint``) to run its
    encoder in ``runtime`` on ``device``; returns the runtime it runs in. ``int8`` is a CPU runtime:
    elsewhere the model stays float32, and says so in the log. ``first_position`` is where packed
    rows count each sentence's positions from (the predictor found it on the float32 encoder)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "eager":
        return "eager"
    if device.type != "cpu":
        log.warning("runtime int8 runs on a CPU only: the model on %s stays float32 (eager)", device)
        return "eager"
    from linkner.model.onnx_encoder import OnnxEncoder

    graph = ensure_int8_graph(checkpoint, model.encoder)
    model.encoder = OnnxEncoder(graph, model.encoder.config, first_position)
    return "int8"


# ------------------------------------------------------------------ the cached graph


def graph_stamp(checkpoint: str | Path) -> dict[str, Any]:
    """What an int8 graph must have been made from to serve ``checkpoint`` as it is now."""
    import onnxruntime
    import torch

    from linkner.model.metadata import weights_fingerprint

    return {"weights_sha256": weights_fingerprint(checkpoint), "format": GRAPH_FORMAT,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def int8_graph_problem(checkpoint: str | Path) -> str | None:
    """Why the cached int8 graph cannot serve ``checkpoint`` (None when it can)."""
    folder = Path(checkpoint) / RUNTIME_FOLDER
    if not (folder / INT8_GRAPH).is_file() or not (folder / INT8_STAMP).is_file():
        return "none made yet"
    try:
        stamp = json.loads((folder / INT8_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its stamp is unreadable"
    differences = [key for key, value in graph_stamp(checkpoint).items() if stamp.get(key) != value]
    return f"made for another {', '.join(differences)}" if differences else None


def ensure_int8_graph(checkpoint: str | Path, encoder: "nn.Module | None" = None) -> Path:
    """The checkpoint's int8 encoder graph, made first when missing or stale (from ``encoder``, or
    the checkpoint's float32 one). Written to temporary names and renamed, so a process reading it
    never sees half a file, and two making it at once both leave a whole one."""
    folder = Path(checkpoint) / RUNTIME_FOLDER
    problem = int8_graph_problem(checkpoint)
    if problem is None:
        return folder / INT8_GRAPH
    log.info("int8 encoder of %s: %s; making it", checkpoint, problem)
    if encoder is None:
        from linkner.model.checkpoint import load_checkpoint

        encoder = load_checkpoint(checkpoint)[0].encoder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".making-") as scratch:
        float_graph = export_encoder(encoder, Path(scratch) / "encoder-fp32.onnx")
        quantized = Path(scratch) / INT8_GRAPH
        quantize_int8(float_graph, quantized)
        stamp = Path(scratch) / INT8_STAMP
        stamp.write_text(json.dumps(graph_stamp(checkpoint), indent=2), encoding="utf-8")
        os.replace(quantized, folder / INT8_GRAPH)
        os.replace(stamp, folder / INT8_STAMP)
    return folder / INT8_GRAPH


def export_encoder(encoder: "nn.Module", path: Path) -> Path:
    """``encoder`` as an ONNX graph taking packed rows (ids, positions, a ``[R, 1, W, W]`` boolean
    mask) and giving every position's last hidden state; its attention mask made finite, without
    the per-layer NaN guard (:mod:`linkner.model.onnx_mask`)."""
    import torch

    from linkner.model.onnx_mask import finite_attention_mask

    class Rows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, position_ids, attention_mask):
            return self.encoder(input_ids=input_ids, position_ids=position_ids,
                                attention_mask=attention_mask).last_hidden_state

    token = min(5, encoder.config.vocab_size - 1)  # any id the vocabulary has
    example = (torch.full((1, 8), token), torch.arange(8).unsqueeze(0), torch.ones(1, 1, 8, 8, dtype=torch.bool))
    axes = {"input_ids": {0: "rows", 1: "width"}, "position_ids": {0: "rows", 1: "width"},
            "attention_mask": {0: "rows", 2: "width", 3: "width"}, "states": {0: "rows", 1: "width"}}
    was_training = encoder.training
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is the older one; it handles BERT
        warnings.simplefilter("ignore")
        torch.onnx.export(Rows().eval(), example, str(path), input_names=list(INPUTS), output_names=["states"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    encoder.train(was_training)
    finite_attention_mask(path)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """ONNX Runtime's dynamic quantization of ``source``'s matrix products: int8 weights per output
    channel, uint8 activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises pre-processing on the root logger: that is for static quantization
    try:
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)
    return target

"""Checkpoints: ``model.safetensors`` + ``linkner_config.json`` + the tokenizer, in one folder.

Loading rebuilds the encoder from the stored config, so it needs neither the original encoder
folder nor any training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from linkner.model.encoders import encoder_from_config, load_tokenizer, offline_hub, subword_limit
from linkner.model.batching import SpanBatcher
from linkner.model.metadata import (CONFIG_FILE, WEIGHTS_FILE, is_checkpoint, read_metadata, read_model_config,
                                    write_metadata)
from linkner.model.span_model import SpanNER

__all__ = ["CheckpointError", "is_checkpoint", "load_checkpoint", "read_metadata", "save_checkpoint",
           "write_metadata"]


class CheckpointError(FileNotFoundError):
    """A folder that is not a usable LinkNER checkpoint."""


def save_checkpoint(
    folder: str | Path, model: SpanNER, tokenizer: Any, metadata: dict[str, Any] | None = None
) -> Path:
    """Write weights, config, tokenizer and optional metadata (training summary, calibration)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.model_copy(update={"encoder_config": _encoder_config_dict(model)})
    save_model(model, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(config.model_dump_json(indent=2), encoding="utf-8")
    tokenizer.save_pretrained(folder)
    if metadata is not None:
        write_metadata(folder, metadata)
    return folder


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[SpanNER, SpanBatcher]:
    """Load a trained model (in eval mode) and the batcher that feeds it."""
    from safetensors.torch import load_model

    offline_hub()
    folder = Path(folder)
    if not is_checkpoint(folder):
        raise CheckpointError(
            f"{folder}: no LinkNER checkpoint here (expected {WEIGHTS_FILE} and {CONFIG_FILE}); "
            "train one with `linkner train --train TRAIN --dev DEV --output DIR`"
        )
    config = read_model_config(folder)
    model = SpanNER(config, encoder_from_config(config.encoder_config))
    load_model(model, str(folder / WEIGHTS_FILE), device=str(device))
    model.to(device).eval()
    tokenizer = load_tokenizer(folder, config.encoder_config.get("model_type"))
    limit = subword_limit(config.encoder_config, config.max_subwords)
    return model, SpanBatcher(tokenizer, config.labels, config.max_span_len, limit)


def _encoder_config_dict(model: SpanNER) -> dict[str, Any]:
    config = model.encoder.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
        config.pop(key, None)
    return config

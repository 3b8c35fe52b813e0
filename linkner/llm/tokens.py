"""Token helpers shared by the scoring backends (transformers, vLLM)."""

from __future__ import annotations

from typing import Any

_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The token that closes an assistant turn in the model's chat format (else end-of-sequence)."""
    for token in _END_OF_TURN:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            return [token_id]
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def single_token_id(tokenizer: Any, text: str) -> int:
    """The id of ``text`` (an option letter), which must be exactly one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"option letter {text!r} is not a single token for this tokenizer")
    return ids[0]

"""What the service accepts: its request limits, and the largest message they let through."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServiceLimits(BaseModel):
    max_chars: int = Field(100_000, ge=1, description="longest text accepted")
    max_words: int = Field(20_000, ge=1, description="most words accepted in one document")
    max_word_chars: int = Field(200, ge=1)
    max_batch_items: int = Field(256, ge=1)
    max_batch_chars: int = Field(1_000_000, ge=1, description="most characters (text or words) in one batch or "
                                 "stream request, all items together")
    max_llm_spans_per_request: int = Field(64, ge=0, description="hard cap on spans one request routes to the "
                                           "LLM; a request's max_llm_spans can only lower it")


def max_request_bytes(limits: ServiceLimits) -> int:
    """The largest serialized request the limits can let through, with a margin: a character is at
    most 4 bytes of UTF-8 and starts at most one word (at most 3 bytes of framing), plus 1 KiB per
    batch item and 1 MiB for the rest. A larger message is refused before it is read."""
    characters = max(limits.max_chars, limits.max_batch_chars)
    return 7 * characters + 1024 * limits.max_batch_items + 1024 * 1024

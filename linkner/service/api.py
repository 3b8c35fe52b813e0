"""The service's request and response shapes (pydantic), and the error for a refused request.

The gRPC gateway converts protobuf messages to and from these and maps :class:`InvalidRequest` to
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from linkner.data.spans import Entity


class InvalidRequest(ValueError):
    """A request the service refuses; the message says what is wrong."""


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


class RecognizeOptions(BaseModel):
    """Per-request overrides; None means the server's configuration."""

    estimator: str | None = None
    policy: str | None = None
    threshold: float | None = None
    budget: float | None = None
    max_llm_spans: int | None = None
    return_candidates: bool = False
    return_words: bool = False


class RecognizeInput(BaseModel):
    text: str = ""
    words: list[str] = Field(default_factory=list)
    options: RecognizeOptions = Field(default_factory=RecognizeOptions)
    request_id: str = ""


@dataclass(slots=True)
class Word:
    """A word of the request's document: its text, character offsets (-1 for given words) and sentence."""

    text: str
    char_start: int
    char_end: int
    sentence: int


@dataclass
class RecognizeOutput:
    """One answer: the entities placed in the document (uncertainty under ``estimator``), whether
    linking degraded and why, identifiers, per-stage timings, and the words when asked for."""

    entities: list[Entity]
    estimator: str
    degraded: bool = False
    degraded_reason: str = ""
    model: str = ""
    llm_backend: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    llm_spans: int = 0
    spans: int = 0  # spans the local model found, routed or not (``llm_spans / spans``: the LLM share)
    degraded_kind: str = ""  # "llm_timeout", "llm_overloaded" or "llm_error" when degraded
    llm_errors: int = 0  # routed spans whose LLM answer failed (timeouts and refusals included)
    llm_timeouts: int = 0
    llm_overloaded: int = 0  # routed spans the LLM refused at once (its queue was full)
    words: list[Word] = field(default_factory=list)
    request_id: str = ""


class ServiceDescription(BaseModel):
    """What the service runs: model, labels, estimators, LLM, the effective default policy, and
    whether the checkpoint's calibration is applied (``calibration_status``) and what it holds."""

    model: str
    labels: list[str]
    estimators: list[str]
    llm_backend: str = ""
    policy: str
    calibration_status: str
    calibration: str = ""  # the stored calibration as JSON, "" when there is none
    max_llm_spans_per_request: int

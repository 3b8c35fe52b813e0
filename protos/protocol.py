"""The LinkNER service's request, response, description and failure kinds, defined once.

The server (``linkner.service``, ``deployments``) answers with these shapes and the Python client
(``clients``) returns them; ``protos.convert`` maps them to and from the ``linkner.v1`` protobuf
messages of ``linkner/v1/linkner.proto``. Plain pydantic: no protobuf, torch or Ray here, so the
standalone client package carries it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FailureKind = Literal["timeout", "overloaded", "error"]
"""Why an LLM answer failed, set where it is caught: a missed deadline, a call the LLM refused at
once (its queue was full), anything else."""

DegradedKind = Literal["", "llm_timeout", "llm_overloaded", "llm_error"]
"""Why an answer is degraded (the local answer kept): ``llm_`` and the first failure's kind; ""
when it is not."""


def degraded_kind(failure: FailureKind) -> DegradedKind:
    """The answer's degraded kind when an LLM answer failed with ``failure``."""
    return "llm_timeout" if failure == "timeout" else "llm_overloaded" if failure == "overloaded" else "llm_error"


class InvalidRequest(ValueError):
    """A request the service refuses (gRPC ``INVALID_ARGUMENT``); the message says what is wrong."""


class RecognizeOptions(BaseModel):
    """Per-request routing overrides; None keeps the server's configuration."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not the server's default

    estimator: str | None = None
    policy: str | None = None
    threshold: float | None = None
    budget: float | None = None
    max_llm_spans: int | None = None
    return_candidates: bool = False
    return_words: bool = False


class RecognizeRequest(BaseModel):
    """One document: a text, or words already split (never both)."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    words: list[str] = Field(default_factory=list)
    options: RecognizeOptions = Field(default_factory=RecognizeOptions)
    request_id: str = ""


class Word(BaseModel):
    """A word of the document: its text, character offsets (-1 for given words) and sentence."""

    text: str
    char_start: int
    char_end: int
    sentence: int


class Entity(BaseModel):
    """An entity placed in the document; ``uncertainty`` under the request's estimator, ``source``
    ``local`` or ``llm``, ``candidates`` the local model's top classes when asked for."""

    text: str
    label: str
    char_start: int
    char_end: int
    word_start: int
    word_end: int
    sentence: int
    source: str
    uncertainty: float
    local_label: str
    local_probability: float
    llm_score: float | None = None
    degraded: bool = False
    candidates: list[tuple[str, float]] = Field(default_factory=list)


class RecognizeResult(BaseModel):
    """One answer: the entities, whether linking degraded and why, what answered (model, LLM),
    per-stage timings in milliseconds, the words when asked for, and the W3C trace it ran under."""

    entities: list[Entity]
    degraded: bool = False
    degraded_reason: str = ""
    degraded_kind: str = ""  # a DegradedKind; str, so a client reads kinds a newer server adds
    model: str = ""
    llm_backend: str = ""
    llm_spans: int = 0
    timings_ms: dict[str, float] = Field(default_factory=dict)
    request_id: str = ""
    words: list[Word] = Field(default_factory=list)
    trace_id: str = ""  # "" when untraced


class Description(BaseModel):
    """What the service runs: model, labels, estimators, LLM, the effective default policy, and
    whether the checkpoint's calibration is ``applied``, absent (``none``) or refused (``stale: ...``)
    with what it holds."""

    model: str
    labels: list[str]
    estimators: list[str]
    llm_backend: str = ""
    policy: str
    calibration_status: str
    calibration: dict | None = None
    max_llm_spans_per_request: int

"""Client-side result shapes (pydantic), built from the protobuf responses."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Entity(BaseModel):
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


class Word(BaseModel):
    text: str
    char_start: int
    char_end: int
    sentence: int


class Result(BaseModel):
    entities: list[Entity]
    degraded: bool
    degraded_reason: str = ""
    degraded_kind: str = ""  # "llm_timeout", "llm_overloaded" or "llm_error" when degraded
    model: str = ""
    llm_backend: str = ""
    llm_spans: int = 0
    timings_ms: dict[str, float] = Field(default_factory=dict)
    request_id: str = ""
    words: list[Word] = Field(default_factory=list)  # only when the request asked (return_words)
    trace_id: str = ""  # the W3C trace this request was recorded under ("" when untraced)


def result_from_proto(response) -> Result:
    """Convert a ``linkner.v1.RecognizeResponse``."""
    t = response.timings
    return Result(
        entities=[Entity(text=e.text, label=e.label, char_start=e.char_start, char_end=e.char_end,
                         word_start=e.word_start, word_end=e.word_end, sentence=e.sentence, source=e.source,
                         uncertainty=e.uncertainty, local_label=e.local_label, local_probability=e.local_probability,
                         llm_score=e.llm_score if e.HasField("llm_score") else None, degraded=e.degraded,
                         candidates=[(c.label, c.probability) for c in e.candidates])
                  for e in response.entities],
        degraded=response.degraded, degraded_reason=response.degraded_reason,
        degraded_kind=response.degraded_kind, model=response.model,
        llm_backend=response.llm_backend, llm_spans=response.llm_spans, request_id=response.request_id,
        timings_ms={"recognize": t.recognize_ms, "detect": t.detect_ms, "classify": t.classify_ms,
                    "merge": t.merge_ms, "total": t.total_ms},
        trace_id=response.trace_id,
        words=[Word(text=w.text, char_start=w.char_start, char_end=w.char_end, sentence=w.sentence)
               for w in response.words],
    )


class Description(BaseModel):
    """What the server runs (``Describe``): ``calibration_status`` says whether the checkpoint's
    calibration is applied ("applied"), absent ("none") or refused ("stale: ...")."""

    model: str
    labels: list[str]
    estimators: list[str]
    llm_backend: str = ""
    policy: str
    calibration_status: str
    calibration: dict | None = None
    max_llm_spans_per_request: int


def description_from_proto(response) -> Description:
    """Convert a ``linkner.v1.DescribeResponse`` (the calibration JSON becomes a dict)."""
    import json

    return Description(model=response.model, labels=list(response.labels), estimators=list(response.estimators),
                       llm_backend=response.llm_backend, policy=response.policy,
                       calibration_status=response.calibration_status,
                       calibration=json.loads(response.calibration) if response.calibration else None,
                       max_llm_spans_per_request=response.max_llm_spans_per_request)

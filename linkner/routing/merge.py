"""Merging LLM answers into the local predictions: the LLM's label replaces the local one,
"Non-entity" drops the span, boundaries stay the local model's, and a failed answer keeps the local
label with the span and the result marked degraded."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from pydantic import BaseModel, Field

from linkner.data.spans import Entity
from linkner.llm.protocol import NON_ENTITY, SpanAnswer
from linkner.routing.ranking import EntityRef, Predictions
from protos.protocol import DegradedKind, degraded_kind


class LinkStats(BaseModel):
    """What linking did for one request."""

    spans: int = 0
    routed: int = 0
    changed: int = 0
    dropped: int = 0
    llm_errors: int = 0
    llm_timeouts: int = 0  # the part of ``llm_errors`` that were missed deadlines
    llm_overloaded: int = 0  # the part of ``llm_errors`` the LLM refused at once (its queue was full)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    degraded: bool = False
    degraded_reason: str | None = None
    degraded_kind: DegradedKind = ""  # the first failure's kind: a bounded reason
    llm_model: str | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)


def merge(
    predictions: Predictions,
    routed: Sequence[EntityRef],
    answers: Sequence[SpanAnswer],
) -> tuple[list[list[Entity]], LinkStats]:
    """Apply LLM answers to the routed spans (copies; the predictions are not changed); keep the
    local answer where the LLM failed."""
    by_ref = dict(zip(routed, answers))
    stats = LinkStats(spans=sum(len(entities) for entities in predictions), routed=len(routed))
    sentences: list[list[Entity]] = []
    for i, entities in enumerate(predictions):
        linked = []
        for j, entity in enumerate(entities):
            answer = by_ref.get((i, j))
            if answer is None:
                linked.append(entity)
                continue
            stats.prompt_tokens += answer.prompt_tokens
            stats.completion_tokens += answer.completion_tokens
            stats.llm_model = stats.llm_model or answer.model or None
            if not answer.ok:
                stats.llm_errors += 1
                kind = answer.failure or "error"
                stats.llm_timeouts += kind == "timeout"
                stats.llm_overloaded += kind == "overloaded"
                stats.degraded = True
                stats.degraded_reason = stats.degraded_reason or f"LLM failed: {answer.error}"
                stats.degraded_kind = stats.degraded_kind or degraded_kind(kind)
                linked.append(replace(entity, degraded=True))
                continue
            if answer.label == NON_ENTITY:
                stats.dropped += 1
                continue
            stats.changed += answer.label != entity.label
            linked.append(replace(entity, label=answer.label, source="llm", llm_score=answer.score))
        sentences.append(linked)
    return sentences, stats

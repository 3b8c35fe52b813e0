"""RDC: Recognize with the local model, Detect uncertain spans, Classify them with the LLM, merge.

Detect and merge are pure functions over predictions so that a router in another process can use
them; :class:`RDCLinker` composes all steps in-process. The LLM's answer replaces the local
label, "Non-entity" drops the span, boundaries stay the local model's, and any LLM failure keeps
the local answer and marks the span and the result as degraded.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Literal, Protocol, Sequence

from pydantic import BaseModel, Field, model_validator

from linkner.llm.protocol import NON_ENTITY, Demonstration, LLMBackend, SpanAnswer, SpanQuery
from linkner.telemetry import traced
from linkner.names import ESTIMATOR_NAMES

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector
    from linkner.predictor import EntityPrediction, SpanPredictor

PolicyKind = Literal["threshold", "budget", "calibrated", "none"]
SpanRef = tuple[int, int]  # (sentence index, entity index)
DEADLINE_MARGIN_S = 0.3  # kept for merging and answering when a caller's deadline bounds the LLM


class Calibration(BaseModel):
    """A threshold chosen on dev data; ``threshold`` None means the LLM did not help: route nothing."""

    estimator: str
    threshold: float | None
    llm_model: str
    dev_f1_local: float
    dev_f1_linked: float
    routed_share: float
    max_share: float
    sentences: int


class DetectionPolicy(BaseModel):
    """Which predicted spans go to the LLM."""

    kind: PolicyKind = "threshold"
    estimator: str = "confidence"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="route spans with uncertainty above this")
    budget: float = Field(0.1, ge=0.0, le=1.0, description="route this fraction of spans, most uncertain first")
    max_llm_spans: int | None = Field(None, ge=0, description="per request cap, most uncertain kept")
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _known_estimator(self) -> "DetectionPolicy":
        if self.estimator not in ESTIMATOR_NAMES:
            raise ValueError(f"unknown uncertainty estimator {self.estimator!r}; "
                             f"choose from {', '.join(ESTIMATOR_NAMES)}")
        if self.kind == "calibrated" and self.calibration is None:
            raise ValueError("the calibrated policy needs a calibration (run `linkner calibrate` on dev data)")
        if self.kind == "calibrated" and self.calibration and self.calibration.estimator != self.estimator:
            return self.model_copy(update={"estimator": self.calibration.estimator})
        return self


def detect(predictions: Sequence[Sequence["EntityPrediction"]], policy: DetectionPolicy) -> list[SpanRef]:
    """The spans to route, most uncertain first."""
    flat = [((i, j), entity.uncertainty[policy.estimator])
            for i, entities in enumerate(predictions) for j, entity in enumerate(entities)]
    flat.sort(key=lambda item: -item[1])
    if policy.kind == "none":
        chosen = []
    elif policy.kind == "budget":
        chosen = flat[: math.ceil(policy.budget * len(flat) - 1e-9)]
    else:
        threshold = policy.threshold if policy.kind == "threshold" else policy.calibration.threshold  # type: ignore[union-attr]
        chosen = [] if threshold is None else [item for item in flat if item[1] > threshold]
    if policy.max_llm_spans is not None:
        chosen = chosen[: policy.max_llm_spans]
    return [ref for ref, _ in chosen]


class LinkedEntity(BaseModel):
    """An output entity: word offsets (end exclusive), final label and where it came from."""

    start: int
    end: int
    label: str
    source: Literal["local", "llm"]
    local_label: str
    local_probability: float
    uncertainty: float
    llm_label: str | None = None
    llm_score: float | None = None
    degraded: bool = False  # routed, but the LLM could not answer: the local label stands
    alternatives: list[tuple[str, float]] = Field(default_factory=list)  # the local model's top classes


class LinkStats(BaseModel):
    """What linking did for one request."""

    spans: int = 0
    routed: int = 0
    changed: int = 0
    dropped: int = 0
    llm_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    degraded: bool = False
    degraded_reason: str | None = None
    llm_model: str | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)


class LinkResult(BaseModel):
    sentences: list[list[LinkedEntity]]
    stats: LinkStats


def merge(
    predictions: Sequence[Sequence["EntityPrediction"]],
    estimator: str,
    routed: Sequence[SpanRef],
    answers: Sequence[SpanAnswer],
) -> tuple[list[list[LinkedEntity]], LinkStats]:
    """Apply LLM answers to the routed spans; keep the local answer where the LLM failed."""
    by_ref = dict(zip(routed, answers))
    stats = LinkStats(spans=sum(len(entities) for entities in predictions), routed=len(routed))
    sentences: list[list[LinkedEntity]] = []
    for i, entities in enumerate(predictions):
        linked = []
        for j, entity in enumerate(entities):
            base = LinkedEntity(start=entity.start, end=entity.end, label=entity.label, source="local",
                                local_label=entity.label, local_probability=entity.probability,
                                uncertainty=entity.uncertainty.get(estimator, 1.0 - entity.probability),
                                alternatives=entity.alternatives)
            answer = by_ref.get((i, j))
            if answer is None:
                linked.append(base)
                continue
            stats.prompt_tokens += answer.prompt_tokens
            stats.completion_tokens += answer.completion_tokens
            stats.llm_model = stats.llm_model or answer.model or None
            if not answer.ok:
                stats.llm_errors += 1
                stats.degraded = True
                stats.degraded_reason = stats.degraded_reason or f"LLM failed: {answer.error}"
                linked.append(base.model_copy(update={"degraded": True}))
                continue
            if answer.label == NON_ENTITY:
                stats.dropped += 1
                continue
            stats.changed += answer.label != entity.label
            linked.append(base.model_copy(update={"label": answer.label, "source": "llm",
                                                  "llm_label": answer.label, "llm_score": answer.score}))
        sentences.append(linked)
    return sentences, stats


def span_queries(
    tokens: Sequence[Sequence[str]],
    predictions: Sequence[Sequence["EntityPrediction"]],
    routed: Sequence[SpanRef],
    selector: "DemonstrationSelector | None" = None,
    demonstrations: "Sequence[list[Demonstration]] | None" = None,
) -> list[SpanQuery]:
    """Backend queries for the routed spans, with the given demonstrations, or a selector's."""
    refs = routed_refs(tokens, predictions, routed)
    if demonstrations is not None:
        demos = list(demonstrations)
    else:
        demos = selector.select(refs) if selector is not None else [[] for _ in refs]
    return [
        SpanQuery(tokens=list(tokens[i]), start=predictions[i][j].start, end=predictions[i][j].end,
                  local_label=predictions[i][j].label, alternatives=predictions[i][j].alternatives,
                  demonstrations=demo)
        for (i, j), demo in zip(routed, demos)
    ]


def routed_refs(tokens: Sequence[Sequence[str]], predictions: Sequence[Sequence["EntityPrediction"]],
                routed: Sequence[SpanRef]) -> list[tuple[Sequence[str], int, int]]:
    """``(words, start, end)`` of each routed span."""
    return [(tokens[i], predictions[i][j].start, predictions[i][j].end) for i, j in routed]


async def build_queries(tokens: Sequence[Sequence[str]], predictions: Sequence[Sequence["EntityPrediction"]],
                        routed: Sequence[SpanRef], selector: object | None) -> list[SpanQuery]:
    """Queries with demonstrations from a local selector (in a thread) or a remote one (awaited)."""
    if selector is not None and hasattr(selector, "select_async"):
        demos = await selector.select_async(routed_refs(tokens, predictions, routed))  # type: ignore[attr-defined]
        return span_queries(tokens, predictions, routed, demonstrations=demos)
    return await asyncio.to_thread(span_queries, tokens, predictions, routed, selector)


async def classify_with_deadline(
    backend: LLMBackend, queries: Sequence[SpanQuery], labels: Sequence[str], timeout_s: float | None
) -> list[SpanAnswer]:
    """One batched backend call; a missed deadline or an exception becomes error answers."""
    if not queries:
        return []
    model = getattr(backend, "model_id", "llm")
    try:
        call = backend.classify(queries, labels, timeout_s)
        answers = await (asyncio.wait_for(call, timeout_s) if timeout_s else call)
    except asyncio.TimeoutError:
        return [SpanAnswer(model=model, error=f"LLM deadline of {timeout_s:.2f}s exceeded") for _ in queries]
    except Exception as error:  # a backend must not fail the request
        return [SpanAnswer(model=model, error=f"{type(error).__name__}: {error}") for _ in queries]
    if len(answers) != len(queries):
        return [SpanAnswer(model=model, error="LLM returned a wrong number of answers") for _ in queries]
    return list(answers)


class Recognizer(Protocol):
    """The local model as the linker sees it: in-process, or a remote replica pool."""

    labels: list[str]

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list["EntityPrediction"]]:
        ...


class LocalRecognizer:
    """A :class:`SpanPredictor` in this process (inference runs in a worker thread)."""

    def __init__(self, predictor: "SpanPredictor") -> None:
        self.predictor = predictor
        self.labels = predictor.labels

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list["EntityPrediction"]]:
        return await asyncio.to_thread(self.predictor.predict, sentences, list(estimators))


class RDCLinker:
    """Runs Recognize, Detect, Classify and merge for batches of word-tokenised sentences."""

    def __init__(
        self,
        recognizer: "Recognizer | SpanPredictor",
        backend: LLMBackend | None,
        policy: DetectionPolicy,
        selector: "DemonstrationSelector | None" = None,
        llm_timeout_s: float | None = 30.0,
    ) -> None:
        self.recognizer = recognizer if hasattr(recognizer, "recognize") else LocalRecognizer(recognizer)
        self.backend = backend
        self.policy = policy
        self.selector = selector
        self.llm_timeout_s = llm_timeout_s

    async def link(
        self, sentences: Sequence[Sequence[str]], policy: DetectionPolicy | None = None,
        timeout_s: float | None = None, deadline_at: float | None = None,
    ) -> LinkResult:
        """Link a batch; ``policy`` and ``timeout_s`` override the defaults for this call. With
        ``deadline_at`` (wall clock), the LLM step also ends ``DEADLINE_MARGIN_S`` before it."""
        policy = policy or self.policy
        timings: dict[str, float] = {}
        with traced("linkner.link", sentences=len(sentences), policy=policy.kind, estimator=policy.estimator) as span:
            started = time.perf_counter()
            with traced("linkner.recognize", sentences=len(sentences)):
                predictions = await self.recognizer.recognize(sentences, [policy.estimator])
            timings["recognize"] = time.perf_counter() - started
            mark = time.perf_counter()
            with traced("linkner.detect", spans=sum(map(len, predictions))):
                routed = detect(predictions, policy) if self.backend is not None else []
            timings["detect"] = time.perf_counter() - mark
            mark = time.perf_counter()
            answers: list[SpanAnswer] = []
            if routed and self.backend is not None:
                with traced("linkner.classify", routed=len(routed)):
                    queries = await build_queries(sentences, predictions, routed, self.selector)
                    deadline = timeout_s if timeout_s is not None else self.llm_timeout_s
                    if deadline_at is not None:
                        left = deadline_at - time.time() - DEADLINE_MARGIN_S
                        deadline = left if deadline is None else min(deadline, left)
                        deadline = max(deadline, 0.001)
                    answers = await classify_with_deadline(self.backend, queries, self.recognizer.labels, deadline)
            timings["classify"] = time.perf_counter() - mark
            mark = time.perf_counter()
            with traced("linkner.merge"):
                linked, stats = merge(predictions, policy.estimator, routed, answers)
            timings["merge"] = time.perf_counter() - mark
            stats.timings_s = timings
            if span is not None:
                span.set_attribute("linkner.routed", stats.routed)
                span.set_attribute("linkner.degraded", stats.degraded)
            return LinkResult(sentences=linked, stats=stats)

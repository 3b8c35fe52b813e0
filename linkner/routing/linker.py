"""RDC: Recognize with the local model, Detect uncertain spans, Classify them with the LLM, merge.

Detect and merge are pure functions over predictions so that a router in another process can use
them; :class:`RDCLinker` composes all steps in-process. The LLM's answer replaces the local
label, "Non-entity" drops the span, boundaries stay the local model's, and any LLM failure keeps
the local answer and marks the span and the result as degraded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import time
from typing import TYPE_CHECKING, Protocol, Sequence


from linkner.data.spans import OUTSIDE
from linkner.llm.protocol import Demonstration, LLMBackend, LLMOverloaded, SpanAnswer, SpanQuery, failed, failure_of
from linkner.data.spans import Entity
from linkner.routing.merge import LinkStats, merge
from linkner.routing.policy import DetectionPolicy, detect
from linkner.routing.ranking import EntityRef, Predictions
from linkner.telemetry import traced

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector
    from linkner.model.predictor import SpanPredictor

DEADLINE_MARGIN_S = 0.3  # kept for merging and answering when a caller's deadline bounds the LLM


class DeadlineExceeded(TimeoutError):
    """The deadline passed before even the local answer was ready."""


@dataclass
class LinkResult:
    sentences: list[list[Entity]]
    stats: LinkStats


def candidate_labels(entity: Entity, count: int) -> list[str]:
    """The local model's ``count`` most probable entity labels for a span (``O`` skipped), most
    probable first; the predicted label alone when the prediction carries no alternatives."""
    labels = [label for label, _ in entity.alternatives if label != OUTSIDE]
    return (labels or [entity.label])[:count]


def backend_candidates(backend: object | None) -> int | None:
    """The top-N option form a backend was configured with (None: it is offered every label)."""
    return getattr(backend, "candidates", None)


def span_queries(
    tokens: Sequence[Sequence[str]],
    predictions: Predictions,
    routed: Sequence[EntityRef],
    selector: "DemonstrationSelector | None" = None,
    demonstrations: "Sequence[list[Demonstration]] | None" = None,
    candidates: int | None = None,
) -> list[SpanQuery]:
    """Backend queries for the routed spans, with the given demonstrations, or a selector's; with
    ``candidates``, each offers only the local model's top-``candidates`` entity labels."""
    refs = routed_refs(tokens, predictions, routed)
    if demonstrations is not None:
        demos = list(demonstrations)
    else:
        demos = selector.select(refs) if selector is not None else [[] for _ in refs]
    return [
        SpanQuery(tokens=list(tokens[i]), start=predictions[i][j].start, end=predictions[i][j].end,
                  demonstrations=demo,
                  options=None if candidates is None else candidate_labels(predictions[i][j], candidates))
        for (i, j), demo in zip(routed, demos)
    ]


def routed_refs(tokens: Sequence[Sequence[str]], predictions: Predictions,
                routed: Sequence[EntityRef]) -> list[tuple[Sequence[str], int, int]]:
    """``(words, start, end)`` of each routed span."""
    return [(tokens[i], predictions[i][j].start, predictions[i][j].end) for i, j in routed]


async def build_queries(tokens: Sequence[Sequence[str]], predictions: Predictions,
                        routed: Sequence[EntityRef], selector: object | None,
                        candidates: int | None = None) -> list[SpanQuery]:
    """Queries with demonstrations from a local selector (in a thread) or a remote one (awaited)."""
    if selector is not None and hasattr(selector, "select_async"):
        demos = await selector.select_async(routed_refs(tokens, predictions, routed))  # type: ignore[attr-defined]
        return span_queries(tokens, predictions, routed, demonstrations=demos, candidates=candidates)
    return await asyncio.to_thread(span_queries, tokens, predictions, routed, selector, None, candidates)


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
        return failed(queries, model, f"LLM deadline of {timeout_s:.2f}s exceeded", "timeout")
    except LLMOverloaded as error:  # refused at once: the local answer now beats a place in a long queue
        return failed(queries, model, f"LLM overloaded: {error}", "overloaded")
    except Exception as error:  # a backend must not fail the request
        return failed(queries, model, f"{type(error).__name__}: {error}", failure_of(error))
    if len(answers) != len(queries):
        return failed(queries, model, "LLM returned a wrong number of answers")
    return list(answers)


class Recognizer(Protocol):
    """The local model as the linker sees it: in-process, or a remote replica pool."""

    labels: list[str]

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list[Entity]]:
        ...


class LocalRecognizer:
    """A :class:`SpanPredictor` in this process (inference runs in a worker thread)."""

    def __init__(self, predictor: "SpanPredictor") -> None:
        self.predictor = predictor
        self.labels = predictor.labels

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list[Entity]]:
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

    async def _recognize(self, sentences: Sequence[Sequence[str]], estimator: str,
                         deadline_at: float | None) -> list[list[Entity]]:
        """The local model's predictions, by ``deadline_at`` (wall clock) or :class:`DeadlineExceeded`
        (the pending call is cancelled, so a queued batch slot is given back)."""
        call = self.recognizer.recognize(sentences, [estimator])
        if deadline_at is None:
            return await call
        left = deadline_at - time.time()
        try:
            async with asyncio.timeout(max(left, 0.0)):  # no task of its own, unlike wait_for
                return await call
        except TimeoutError:
            raise DeadlineExceeded(f"deadline exceeded before the local model answered "
                                   f"({max(left, 0.0):.2f}s were left for it)") from None

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
                predictions = await self._recognize(sentences, policy.estimator, deadline_at)
            timings["recognize"] = time.perf_counter() - started
            mark = time.perf_counter()
            with traced("linkner.detect", spans=sum(map(len, predictions))):
                routed = detect(predictions, policy) if self.backend is not None else []
            timings["detect"] = time.perf_counter() - mark
            mark = time.perf_counter()
            answers: list[SpanAnswer] = []
            if routed and self.backend is not None:
                with traced("linkner.classify", routed=len(routed)):
                    queries = await build_queries(sentences, predictions, routed, self.selector,
                                                  backend_candidates(self.backend))
                    deadline = timeout_s if timeout_s is not None else self.llm_timeout_s
                    if deadline_at is not None:
                        left = deadline_at - time.time() - DEADLINE_MARGIN_S
                        deadline = left if deadline is None else min(deadline, left)
                        deadline = max(deadline, 0.001)
                    answers = await classify_with_deadline(self.backend, queries, self.recognizer.labels, deadline)
            timings["classify"] = time.perf_counter() - mark
            mark = time.perf_counter()
            with traced("linkner.merge"):
                linked, stats = merge(predictions, routed, answers)
            timings["merge"] = time.perf_counter() - mark
            stats.timings_s = timings
            if span is not None:
                span.set_attribute("linkner.routed", stats.routed)
                span.set_attribute("linkner.degraded", stats.degraded)
            return LinkResult(sentences=linked, stats=stats)

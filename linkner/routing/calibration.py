"""Calibrating the routing threshold on dev data: the threshold that maximises linked F1, or no
routing at all when the LLM does not beat the local model there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from pydantic import BaseModel

from linkner.data.spans import Sentence, Span
from linkner.evaluation.scores import entity_scores
from linkner.llm.protocol import LLMBackend, SpanAnswer
from linkner.routing.merge import merge
from linkner.routing.ranking import EntityRef, Predictions, rank_by_uncertainty, share_count

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector
    from linkner.routing.answers import AnswerCache


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


def linked_f1(sentences: Sequence[Sentence], predictions: Predictions, estimator: str,
              routed: Sequence[EntityRef], answers: Sequence[SpanAnswer]) -> float:
    linked, _ = merge(predictions, estimator, routed, answers)
    return entity_scores([s.entities for s in sentences],
                         [[Span(e.start, e.end, e.label) for e in sent] for sent in linked]).micro.f1


def calibrate(sentences: Sequence[Sentence], predictions: Predictions, estimator: str, cache: AnswerCache,
              max_share: float = 0.3, steps: int = 60) -> Calibration:
    """Choose the uncertainty threshold that maximises linked F1 on these (dev) sentences, routing
    at most ``max_share`` of spans; no threshold (route nothing) unless the LLM beats local-only."""
    ranked = rank_by_uncertainty(predictions, estimator)
    limit = share_count(max_share, len(ranked))
    local = linked_f1(sentences, predictions, estimator, [], [])
    best_f1, best_n = local, 0
    for n in sorted({round(limit * k / steps) for k in range(1, steps + 1)}):
        routed = ranked[:n]
        f1 = linked_f1(sentences, predictions, estimator, routed, cache.for_refs(routed))
        if f1 > best_f1 + 1e-12:
            best_f1, best_n = f1, n
    threshold = None
    if best_n:
        i, j = ranked[best_n] if best_n < len(ranked) else ranked[-1]
        threshold = predictions[i][j].uncertainty[estimator] if best_n < len(ranked) else 0.0
    return Calibration(estimator=estimator, threshold=threshold, llm_model=cache.backend.model_id,
                       dev_f1_local=local, dev_f1_linked=best_f1, routed_share=best_n / max(1, len(ranked)),
                       max_share=max_share, sentences=len(sentences))


async def calibrate_on(predictor, backend: LLMBackend, dev: Sequence[Sentence], estimator: str = "confidence",
                       max_share: float = 0.3, selector: "DemonstrationSelector | None" = None,
                       progress: bool = True) -> Calibration:
    """Ask the LLM about the most uncertain ``max_share`` of dev spans and choose the threshold."""
    from linkner.evaluation.assessment import predict_with_progress
    from linkner.routing.answers import AnswerCache

    predictions = predict_with_progress(predictor, dev, [estimator], progress)
    cache = AnswerCache(backend, dev, predictions, predictor.labels, selector)
    ranked = rank_by_uncertainty(predictions, estimator)
    await cache.ensure(ranked[: share_count(max_share, len(ranked))], progress=progress)
    return calibrate(dev, predictions, estimator, cache, max_share)

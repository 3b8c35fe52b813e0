"""The offline calibration sweep: on dev data, the routing threshold that maximises linked F1, kept
only when a paired bootstrap over sentences shows the gain over local-only is not noise; otherwise no
routing at all. The result is the :class:`~linkner.routing.policy.Calibration` the detection policy
applies at run time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from linkner.data.spans import Sentence, Span
from linkner.evaluation.scores import entity_scores
from linkner.llm.protocol import LLMBackend, SpanAnswer
from linkner.routing.answers import AnswerCache
from linkner.routing.calibration_key import CalibrationKey
from linkner.routing.merge import merge
from linkner.routing.policy import Calibration
from linkner.routing.ranking import EntityRef, Predictions, rank_by_uncertainty, share_count

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector


def linked_spans(predictions: Predictions, estimator: str, routed: Sequence[EntityRef],
                 answers: Sequence[SpanAnswer]) -> list[list[Span]]:
    """The merged entities of each sentence as spans."""
    linked, _ = merge(predictions, routed, answers)
    return [[Span(e.start, e.end, e.label) for e in sent] for sent in linked]


def linked_f1(sentences: Sequence[Sentence], predictions: Predictions, estimator: str,
              routed: Sequence[EntityRef], answers: Sequence[SpanAnswer]) -> float:
    """Micro entity F1 after routing ``routed`` and merging ``answers``."""
    return entity_scores([s.entities for s in sentences],
                         linked_spans(predictions, estimator, routed, answers)).micro.f1


def sentence_counts(sentences: Sequence[Sentence], spans: Sequence[Sequence[Span]]) -> np.ndarray:
    """Per sentence: (correct, predicted, gold) entity counts, shape (sentences, 3)."""
    rows = []
    for sentence, predicted in zip(sentences, spans):
        gold, guessed = set(sentence.entities), set(predicted)
        rows.append((len(gold & guessed), len(guessed), len(gold)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _f1(totals: np.ndarray) -> np.ndarray:
    """Micro F1 from (..., 3) totals of (correct, predicted, gold): 2 correct / (predicted + gold)."""
    denominator = totals[..., 1] + totals[..., 2]
    return np.where(denominator > 0, 2 * totals[..., 0] / np.maximum(denominator, 1), 0.0)


def paired_bootstrap(local: np.ndarray, linked: np.ndarray, resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float]:
    """The ``confidence`` interval of (linked - local) micro F1, resampling sentences with
    replacement (the same sentences for both: paired). Inputs are :func:`sentence_counts`."""
    if len(local) == 0:
        return 0.0, 0.0
    picks = np.random.default_rng(seed).integers(0, len(local), size=(resamples, len(local)))
    gains = _f1(linked[picks].sum(axis=1)) - _f1(local[picks].sum(axis=1))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(gains, [tail, 100 - tail])
    return float(low), float(high)


def calibrate(sentences: Sequence[Sentence], predictions: Predictions, estimator: str, cache: AnswerCache,
              max_share: float = 0.3, steps: int = 60, margin: float = 0.0, resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> Calibration:
    """Choose the uncertainty threshold that maximises linked F1 on these (dev) sentences, routing at
    most ``max_share`` of spans; route nothing unless the low end of the paired-bootstrap interval of
    its gain over local-only is above ``margin``."""
    ranked = rank_by_uncertainty(predictions, estimator)
    limit = share_count(max_share, len(ranked))
    gold = [s.entities for s in sentences]
    local_spans = linked_spans(predictions, estimator, [], [])
    local = entity_scores(gold, local_spans).micro.f1
    best_f1, best_n = -1.0, 0
    for n in sorted({round(limit * k / steps) for k in range(1, steps + 1)} - {0}):
        routed = ranked[:n]
        f1 = linked_f1(sentences, predictions, estimator, routed, cache.for_refs(routed))
        if f1 > best_f1 + 1e-12:
            best_f1, best_n = f1, n
    gain = low = high = None
    routes = False
    if best_n:
        routed = ranked[:best_n]
        linked = linked_spans(predictions, estimator, routed, cache.for_refs(routed))
        low, high = paired_bootstrap(sentence_counts(sentences, local_spans), sentence_counts(sentences, linked),
                                     resamples, confidence, seed)
        gain = best_f1 - local
        routes = gain > 1e-12 and low > margin
    threshold = None
    if routes:
        threshold = predictions[ranked[best_n][0]][ranked[best_n][1]].uncertainty[estimator] \
            if best_n < len(ranked) else 0.0
    total = max(1, len(ranked))
    return Calibration(estimator=estimator, threshold=threshold, llm_model=cache.backend.model_id,
                       dev_f1_local=local, dev_f1_linked=best_f1 if routes else local,
                       routed_share=best_n / total if routes else 0.0, max_share=max_share,
                       sentences=len(sentences), gain=gain, gain_low=low, gain_high=high,
                       candidate_share=best_n / total if best_n else None, confidence=confidence,
                       resamples=resamples if best_n else 0, margin=margin)


async def calibrate_on(predictor, backend: LLMBackend, dev: Sequence[Sentence], estimator: str = "confidence",
                       max_share: float = 0.3, selector: "DemonstrationSelector | None" = None,
                       progress: bool = True, margin: float = 0.0, key: CalibrationKey | None = None) -> Calibration:
    """Ask the LLM about the most uncertain ``max_share`` of dev spans and choose the threshold;
    ``key`` (what this measures) is stored with the result."""
    from linkner.evaluation.assessment import predict_with_progress  # imports the predictor (torch): when run

    predictions = predict_with_progress(predictor, dev, [estimator], progress)
    cache = AnswerCache(backend, dev, predictions, predictor.labels, selector)
    ranked = rank_by_uncertainty(predictions, estimator)
    await cache.ensure(ranked[: share_count(max_share, len(ranked))], progress=progress)
    calibration = calibrate(dev, predictions, estimator, cache, max_share, margin=margin)
    return calibration.model_copy(update={"key": key}) if key is not None else calibration

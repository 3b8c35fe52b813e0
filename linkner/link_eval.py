"""Evaluating RDC linking: F1 against LLM share for each estimator, with local-only and oracle
references, LLM cost, and the calibration of the routing threshold on dev data.

Predictions are made once (all estimators); the LLM (or oracle) is asked once per span, and every
point of a sweep reuses those answers.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pydantic import BaseModel

from linkner.data import Sentence
from linkner.evaluation import entity_scores
from linkner.linking import Calibration, SpanRef, classify_with_deadline, merge, span_queries
from linkner.llm.protocol import LLMBackend, SpanAnswer

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector
    from linkner.predictor import EntityPrediction

Predictions = Sequence[Sequence["EntityPrediction"]]


def ranked_spans(predictions: Predictions, estimator: str) -> list[SpanRef]:
    """All predicted spans, most uncertain first."""
    flat = [((i, j), entity.uncertainty[estimator]) for i, sent in enumerate(predictions) for j, entity in enumerate(sent)]
    flat.sort(key=lambda item: -item[1])
    return [ref for ref, _ in flat]


class AnswerCache:
    """LLM answers by span, asked for in batches with progress, timed and counted."""

    def __init__(self, backend: LLMBackend, sentences: Sequence[Sentence], predictions: Predictions,
                 labels: Sequence[str], selector: "DemonstrationSelector | None" = None) -> None:
        self.backend = backend
        self.sentences = sentences
        self.predictions = predictions
        self.labels = list(labels)
        self.selector = selector
        self.answers: dict[SpanRef, SpanAnswer] = {}
        self.seconds = 0.0

    async def ensure(self, refs: Sequence[SpanRef], batch: int = 64, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        missing = [ref for ref in dict.fromkeys(refs) if ref not in self.answers]
        tokens = [s.tokens for s in self.sentences]
        with tqdm(total=len(missing), desc=f"asking {self.backend.model_id}", unit="span",
                  disable=not progress or not missing, file=sys.stderr) as bar:
            for start in range(0, len(missing), batch):
                chunk = missing[start : start + batch]
                started = time.perf_counter()
                queries = span_queries(tokens, self.predictions, chunk, self.selector)
                answers = await classify_with_deadline(self.backend, queries, self.labels, None)
                self.seconds += time.perf_counter() - started
                self.answers.update(zip(chunk, answers))
                bar.update(len(chunk))

    def for_refs(self, refs: Sequence[SpanRef]) -> list[SpanAnswer]:
        return [self.answers[ref] for ref in refs]


def linked_f1(sentences: Sequence[Sentence], predictions: Predictions, estimator: str,
              routed: Sequence[SpanRef], answers: Sequence[SpanAnswer]) -> float:
    linked, _ = merge(predictions, estimator, routed, answers)
    return entity_scores([s.entities for s in sentences],
                         [[_span(e) for e in sent] for sent in linked]).micro.f1


def _span(entity):  # LinkedEntity -> Span
    from linkner.data import Span

    return Span(entity.start, entity.end, entity.label)


class SweepPoint(BaseModel):
    estimator: str
    share: float
    routed: int
    f1: float


def sweep(sentences: Sequence[Sentence], predictions: Predictions, estimator: str, shares: Sequence[float],
          cache: AnswerCache) -> list[SweepPoint]:
    """Linked F1 when the most uncertain ``share`` of spans goes to ``cache``'s backend (answers must be
    cached for the largest share)."""
    ranked = ranked_spans(predictions, estimator)
    points = []
    for share in shares:
        routed = ranked[: math.ceil(share * len(ranked) - 1e-9)]
        points.append(SweepPoint(estimator=estimator, share=share, routed=len(routed),
                                 f1=linked_f1(sentences, predictions, estimator, routed, cache.for_refs(routed))))
    return points


def calibrate(sentences: Sequence[Sentence], predictions: Predictions, estimator: str, cache: AnswerCache,
              max_share: float = 0.3, steps: int = 60) -> Calibration:
    """Choose the uncertainty threshold that maximises linked F1 on these (dev) sentences, routing
    at most ``max_share`` of spans; no threshold (route nothing) unless the LLM beats local-only."""
    ranked = ranked_spans(predictions, estimator)
    limit = math.ceil(max_share * len(ranked) - 1e-9)
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
    from linkner.assessment import predict_with_progress

    predictions = predict_with_progress(predictor, dev, [estimator], progress)
    cache = AnswerCache(backend, dev, predictions, predictor.labels, selector)
    ranked = ranked_spans(predictions, estimator)
    await cache.ensure(ranked[: math.ceil(max_share * len(ranked))], progress=progress)
    return calibrate(dev, predictions, estimator, cache, max_share)


def sweep_plot(curves: dict[str, list[SweepPoint]], local_f1: float, path: Path, title: str) -> Path:
    """F1 against LLM share: one line per curve, local-only as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.axhline(100 * local_f1, color="black", linestyle="--", label=f"local only ({100 * local_f1:.2f})")
    for name, points in curves.items():
        style = ":" if name.startswith("oracle") else "-"
        axis.plot([100 * p.share for p in points], [100 * p.f1 for p in points], style, marker="o", markersize=3,
                  label=name)
    axis.set_xlabel("LLM share (% of predicted spans routed to the LLM)")
    axis.set_ylabel("entity F1 (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# --------------------------------------------------------------------------- the whole evaluation


class LLMRun(BaseModel):
    """The real LLM on one data set: the sweep, and what it cost."""

    estimator: str
    points: list[SweepPoint]
    spans_asked: int
    accuracy_on_asked: float  # answers equal to the gold label (Non-entity for non-gold spans)
    errors: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    seconds_per_1000_sentences_at_calibrated: float | None = None


class LinkingReport(BaseModel):
    data: str
    sentences: int
    spans: int
    local_f1: float
    shares: list[float]
    oracle: dict[str, list[SweepPoint]]
    llm: LLMRun | None = None
    calibration: Calibration | None = None
    calibrated_f1: float | None = None
    calibrated_share: float | None = None
    plot: str | None = None

    def oracle_f1_at(self, estimator: str, share: float) -> float:
        return next(p.f1 for p in self.oracle[estimator] if abs(p.share - share) < 1e-9)

    def markdown(self) -> str:
        rows = [f"{self.data}: {self.sentences} sentences, {self.spans} predicted spans, local-only F1 "
                f"{100 * self.local_f1:.2f}", "",
                "| routed by | " + " | ".join(f"{100 * s:g}%" for s in self.shares) + " |",
                "|---|" + "---|" * len(self.shares)]
        for name, points in self.oracle.items():
            rows.append(f"| oracle, {name} | " + " | ".join(f"{100 * p.f1:.2f}" for p in points) + " |")
        if self.llm:
            rows.append(f"| {self.llm_name}, {self.llm.estimator} | "
                        + " | ".join(f"{100 * p.f1:.2f}" for p in self.llm.points) + " |")
            rows += ["", f"LLM on the {self.llm.spans_asked} spans asked: accuracy {100 * self.llm.accuracy_on_asked:.1f}%, "
                         f"{self.llm.errors} errors, {self.llm.prompt_tokens} prompt tokens, "
                         f"{self.llm.seconds:.0f}s ({1000 * self.llm.seconds / max(1, self.llm.spans_asked):.0f} ms/span)"]
        if self.calibration:
            threshold = "none (route nothing)" if self.calibration.threshold is None else f"{self.calibration.threshold:.4f}"
            rows.append(f"calibrated on dev ({self.calibration.estimator}): threshold {threshold}, dev F1 "
                        f"{100 * self.calibration.dev_f1_local:.2f} -> {100 * self.calibration.dev_f1_linked:.2f}; "
                        f"here F1 {100 * (self.calibrated_f1 or 0):.2f} at LLM share {100 * (self.calibrated_share or 0):.1f}%")
        return "\n".join(rows)

    @property
    def llm_name(self) -> str:
        return self.calibration.llm_model if self.calibration else "LLM"


def gold_answer(sentence: Sentence, entity: "EntityPrediction") -> str:
    from linkner.llm.protocol import NON_ENTITY

    for span in sentence.entities:
        if (span.start, span.end) == (entity.start, entity.end):
            return span.label
    return NON_ENTITY


async def evaluate_linking(
    predictor, data: Sequence[Sentence], data_name: str, shares: Sequence[float], estimators: Sequence[str],
    backend: LLMBackend | None = None, llm_estimator: str = "confidence", dev: Sequence[Sentence] = (),
    selector: "DemonstrationSelector | None" = None, max_share_calibration: float = 0.3,
    plot: Path | None = None, progress: bool = True, calibration: Calibration | None = None,
) -> LinkingReport:
    """Local-only, oracle sweeps per estimator, and (with a backend) the LLM sweep; the routing
    threshold is ``calibration``'s, or calibrated on ``dev`` when that is given instead."""
    from linkner.assessment import predict_with_progress
    from linkner.llm.oracle import OracleBackend

    shares = sorted(set(shares))
    predictions = predict_with_progress(predictor, data, estimators, progress)
    local = linked_f1(data, predictions, estimators[0], [], [])
    oracle_cache = AnswerCache(OracleBackend(data), data, predictions, predictor.labels)
    oracle = {}
    for estimator in estimators:
        ranked = ranked_spans(predictions, estimator)
        await oracle_cache.ensure(ranked[: math.ceil(max(shares) * len(ranked))], progress=False)
        oracle[estimator] = sweep(data, predictions, estimator, shares, oracle_cache)
    report = LinkingReport(data=data_name, sentences=len(data), spans=sum(map(len, predictions)), local_f1=local,
                           shares=list(shares), oracle=oracle)
    if backend is not None:
        cache = AnswerCache(backend, data, predictions, predictor.labels, selector)
        ranked = ranked_spans(predictions, llm_estimator)
        asked = ranked[: math.ceil(max(shares) * len(ranked))]
        await cache.ensure(asked, progress=progress)
        answers = cache.for_refs(asked)
        right = sum(a.label == gold_answer(data[i], predictions[i][j]) for (i, j), a in zip(asked, answers))
        report.llm = LLMRun(
            estimator=llm_estimator, points=sweep(data, predictions, llm_estimator, shares, cache),
            spans_asked=len(asked), accuracy_on_asked=right / max(1, len(asked)),
            errors=sum(not a.ok for a in answers), prompt_tokens=sum(a.prompt_tokens for a in answers),
            completion_tokens=sum(a.completion_tokens for a in answers), seconds=cache.seconds)
        if calibration is None and dev:
            calibration = await calibrate_on(predictor, backend, dev, llm_estimator, max_share_calibration,
                                             selector, progress)
        if calibration is not None:
            routed = [] if calibration.threshold is None else [
                ref for ref in ranked if predictions[ref[0]][ref[1]].uncertainty[llm_estimator] > calibration.threshold]
            await cache.ensure(routed, progress=progress)
            report.calibration = calibration
            report.calibrated_f1 = linked_f1(data, predictions, llm_estimator, routed, cache.for_refs(routed))
            report.calibrated_share = len(routed) / max(1, len(ranked))
            per_span = cache.seconds / max(1, len(cache.answers))
            report.llm.seconds_per_1000_sentences_at_calibrated = 1000 * per_span * len(routed) / max(1, len(data))
    if plot is not None:
        curves = {f"oracle, {name}": points for name, points in oracle.items()}
        if report.llm:
            curves[f"{backend.model_id}, {llm_estimator}"] = report.llm.points
        report.plot = str(sweep_plot(curves, local, plot, f"LinkNER on {data_name}: F1 against LLM share"))
    return report

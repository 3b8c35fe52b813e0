"""Evaluating RDC linking: F1 against LLM share for each estimator, with local-only and oracle
references, LLM cost, and the calibration of the routing threshold on dev data.

Predictions are made once (all estimators); the LLM (or oracle) is asked once per span, and every
point of a sweep reuses those answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pydantic import BaseModel

from linkner.data.spans import Sentence
from linkner.evaluation.calibration import calibrate_on, linked_f1
from linkner.llm.protocol import LLMBackend
from linkner.routing.answers import AnswerCache
from linkner.routing.policy import Calibration
from linkner.routing.ranking import Predictions, rank_by_uncertainty, share_count

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector
    from linkner.data.spans import Entity
    from linkner.routing.calibration_key import CalibrationKey


class SweepPoint(BaseModel):
    estimator: str
    share: float
    routed: int
    f1: float


def sweep(sentences: Sequence[Sentence], predictions: Predictions, estimator: str, shares: Sequence[float],
          cache: AnswerCache) -> list[SweepPoint]:
    """Linked F1 when the most uncertain ``share`` of spans goes to ``cache``'s backend (answers must be
    cached for the largest share)."""
    ranked = rank_by_uncertainty(predictions, estimator)
    points = []
    for share in shares:
        routed = ranked[: share_count(share, len(ranked))]
        points.append(SweepPoint(estimator=estimator, share=share, routed=len(routed),
                                 f1=linked_f1(sentences, predictions, estimator, routed, cache.for_refs(routed))))
    return points


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
            rows.append(f"calibrated on dev ({self.calibration.estimator}): {self.calibration.summary()}; "
                        f"here F1 {100 * (self.calibrated_f1 or 0):.2f} at LLM share {100 * (self.calibrated_share or 0):.1f}%")
        return "\n".join(rows)

    @property
    def llm_name(self) -> str:
        return self.calibration.llm_model if self.calibration else "LLM"


def gold_answer(sentence: Sentence, entity: Entity) -> str:
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
    margin: float = 0.0, key: "CalibrationKey | None" = None,
) -> LinkingReport:
    """Local-only, oracle sweeps per estimator, and (with a backend) the LLM sweep; the routing
    threshold is ``calibration``'s, or calibrated on ``dev`` when that is given instead (routing
    only when the bootstrap interval of the gain is above ``margin``; ``key`` is stored with it)."""
    from linkner.evaluation.assessment import predict_with_progress
    from linkner.llm.oracle import OracleBackend

    shares = sorted(set(shares))
    predictions = predict_with_progress(predictor, data, estimators, progress)
    local = linked_f1(data, predictions, estimators[0], [], [])
    oracle_cache = AnswerCache(OracleBackend(data), data, predictions, predictor.labels)
    oracle = {}
    for estimator in estimators:
        ranked = rank_by_uncertainty(predictions, estimator)
        await oracle_cache.ensure(ranked[: share_count(max(shares), len(ranked))], progress=False)
        oracle[estimator] = sweep(data, predictions, estimator, shares, oracle_cache)
    report = LinkingReport(data=data_name, sentences=len(data), spans=sum(map(len, predictions)), local_f1=local,
                           shares=list(shares), oracle=oracle)
    if backend is not None:
        cache = AnswerCache(backend, data, predictions, predictor.labels, selector)
        ranked = rank_by_uncertainty(predictions, llm_estimator)
        asked = ranked[: share_count(max(shares), len(ranked))]
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
                                             selector, progress, margin, key)
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

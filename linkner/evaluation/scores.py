"""Entity-level scores (seqeval strict IOB2 semantics) and the quality of span uncertainties."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel

from linkner.data.spans import Span

MICRO = "micro"


class TypeScores(BaseModel):
    """Precision, recall and F1 (as fractions) of one type, or micro-averaged."""

    precision: float
    recall: float
    f1: float
    support: int  # gold entities
    predicted: int


class EntityScores(BaseModel):
    """Per-type and micro entity scores."""

    per_type: dict[str, TypeScores]
    micro: TypeScores

    def table(self) -> str:
        """A markdown table, percentages with one decimal."""
        rows = ["| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, scores in [*sorted(self.per_type.items()), (MICRO, self.micro)]:
            rows.append(
                f"| {name} | {100 * scores.precision:.1f} | {100 * scores.recall:.1f} | "
                f"{100 * scores.f1:.1f} | {scores.support} |"
            )
        return "\n".join(rows)


def _scores(correct: int, predicted: int, gold: int) -> TypeScores:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TypeScores(precision=precision, recall=recall, f1=f1, support=gold, predicted=predicted)


def entity_scores(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> EntityScores:
    """Exact-match (boundaries and type) entity scores over aligned sentences."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct: Counter[str] = Counter()
    gold_count: Counter[str] = Counter()
    predicted_count: Counter[str] = Counter()
    for gold_spans, predicted_spans in zip(gold, predicted):
        gold_set = set(gold_spans)
        gold_count.update(span.label for span in gold_set)
        predicted_set = set(predicted_spans)
        predicted_count.update(span.label for span in predicted_set)
        correct.update(span.label for span in predicted_set & gold_set)
    types = sorted(set(gold_count) | set(predicted_count))
    per_type = {name: _scores(correct[name], predicted_count[name], gold_count[name]) for name in types}
    micro = _scores(sum(correct.values()), sum(predicted_count.values()), sum(gold_count.values()))
    return EntityScores(per_type=per_type, micro=micro)


# --------------------------------------------------------------------------- uncertainty quality


class UncertaintyQuality(BaseModel):
    """How well an estimator's uncertainty tells wrong predicted spans from right ones."""

    estimator: str
    auroc: float | None  # None when all predictions are right (or all wrong)
    ece: float  # expected calibration error of 1 - uncertainty as P(correct)
    spans: int
    wrong: int
    bins: list[tuple[float, float, int]]  # (mean confidence, accuracy, count) per non-empty bin


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` for detecting ``positives`` (ties count half)."""
    values = np.asarray(scores, dtype=float)
    labels = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibration_bins(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error over equal-width confidence bins, and the non-empty bins."""
    values = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    hits = np.asarray(correct, dtype=float)
    if len(values) == 0:
        return 0.0, []
    index = np.minimum((values * bins).astype(int), bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            mean_confidence, accuracy = float(values[members].mean()), float(hits[members].mean())
            ece += count / len(values) * abs(mean_confidence - accuracy)
            table.append((mean_confidence, accuracy, count))
    return float(ece), table


def uncertainty_quality(
    estimator: str, uncertainties: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> UncertaintyQuality:
    """AUROC (uncertainty as the score for 'wrong') and calibration of ``1 - uncertainty``."""
    wrong = [not hit for hit in correct]
    ece, table = calibration_bins([1.0 - u for u in uncertainties], correct, bins)
    return UncertaintyQuality(
        estimator=estimator,
        auroc=auroc(uncertainties, wrong),
        ece=ece,
        spans=len(correct),
        wrong=sum(wrong),
        bins=table,
    )


def reliability_plot(qualities: Sequence[UncertaintyQuality], path: str | Path, title: str = "Reliability") -> Path:
    """Save a reliability diagram (accuracy against confidence, one line per estimator) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for quality in qualities:
        if quality.bins:
            confidence, accuracy, _ = zip(*quality.bins)
            auroc_text = "n/a" if quality.auroc is None else f"{quality.auroc:.3f}"
            axis.plot(confidence, accuracy, marker="o",
                      label=f"{quality.estimator} (ECE {quality.ece:.3f}, AUROC {auroc_text})")
    axis.set_xlabel("confidence = 1 - uncertainty")
    axis.set_ylabel("fraction of predicted spans that are right")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path

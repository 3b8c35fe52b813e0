"""Evaluating a predictor on gold data: entity scores plus uncertainty quality per estimator."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Sequence

from pydantic import BaseModel

from linkner.data.spans import Sentence
from linkner.evaluation.scores import EntityScores, UncertaintyQuality, entity_scores, uncertainty_quality
from linkner.uncertainty.names import available_estimators

if TYPE_CHECKING:
    from linkner.data.spans import Entity
from linkner.model.predictor import SpanPredictor


class AssessmentReport(BaseModel):
    """Scores of one model on one data set."""

    sentences: int
    scores: EntityScores
    uncertainty: list[UncertaintyQuality]
    seconds: float
    sentences_per_second: float

    def markdown(self) -> str:
        """Entity table followed by an uncertainty table."""
        rows = [self.scores.table(), "", "| estimator | AUROC (wrong vs right) | ECE | spans | wrong |", "|---|---|---|---|---|"]
        for quality in self.uncertainty:
            auroc = "n/a" if quality.auroc is None else f"{quality.auroc:.3f}"
            rows.append(f"| {quality.estimator} | {auroc} | {quality.ece:.3f} | {quality.spans} | {quality.wrong} |")
        rows.append("")
        rows.append(f"{self.sentences} sentences in {self.seconds:.1f}s ({self.sentences_per_second:.0f} sentences/s, "
                    "all estimators included)")
        return "\n".join(rows)


def estimator_names(spec: str, predictor: "SpanPredictor") -> list[str]:
    """``all`` or a comma list, checked against what the model supports."""
    supported = available_estimators(predictor.model.config.objective == "evidential", predictor.detector is not None)
    if spec == "all":
        return supported
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if name not in supported:
            raise ValueError(f"estimator {name!r} is not available for this model; choose from {', '.join(supported)}")
    return names


def predict_with_progress(
    predictor: "SpanPredictor", sentences: Sequence[Sentence], estimators: Sequence[str],
    progress: bool = True, chunk: int = 256,
) -> list[list[Entity]]:
    """``predictor.predict`` in chunks, with a progress bar on stderr."""
    from tqdm.auto import tqdm

    predictions: list[list[Entity]] = []
    with tqdm(total=len(sentences), desc="predicting", unit="sent", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(sentences), chunk):
            part = sentences[start : start + chunk]
            predictions.extend(predictor.predict([s.tokens for s in part], estimators))
            bar.update(len(part))
    return predictions


def assess(
    predictor: "SpanPredictor", sentences: Sequence[Sentence], estimators: Sequence[str], progress: bool = True
) -> AssessmentReport:
    """Predict ``sentences`` and score entities and each estimator's uncertainty."""
    started = time.perf_counter()
    predictions = predict_with_progress(predictor, sentences, estimators, progress)
    seconds = time.perf_counter() - started
    return report_from_predictions(sentences, predictions, estimators, seconds)


def report_from_predictions(
    sentences: Sequence[Sentence], predictions: Sequence[Sequence[Entity]],
    estimators: Sequence[str], seconds: float,
) -> AssessmentReport:
    """Build the report from finished predictions."""
    scores = entity_scores([s.entities for s in sentences], [[p.span for p in sent] for sent in predictions])
    correct: list[bool] = []
    values: dict[str, list[float]] = {name: [] for name in estimators}
    for sentence, predicted in zip(sentences, predictions):
        gold = set(sentence.entities)
        for entity in predicted:
            correct.append(entity.span in gold)
            for name in estimators:
                values[name].append(entity.uncertainty[name])
    qualities = [uncertainty_quality(name, values[name], correct) for name in estimators]
    return AssessmentReport(
        sentences=len(sentences), scores=scores, uncertainty=qualities, seconds=seconds,
        sentences_per_second=len(sentences) / seconds if seconds > 0 else 0.0,
    )

"""The ``learned`` estimator: a small error detector fitted on dev predictions that scores each
predicted span's probability of being wrong from :mod:`linkner.uncertainty.features`.

It is stored beside the checkpoint as plain JSON (``error_detector.json``: the training lexicon,
boosted trees or logistic-regression weights, the isotonic calibration map, and the SHA-256 of the
weights it was fitted for); scoring needs numpy only. A detector whose fingerprint does not match
the checkpoint's weights is refused (:class:`DetectorError`). Fitting lives in
:mod:`linkner.uncertainty.fitting` (scikit-learn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from linkner.data.spans import Entity
from linkner.model.metadata import weights_fingerprint
from linkner.uncertainty.features import Lexicon, feature_matrix, feature_names
from linkner.uncertainty.names import LEARNED

DETECTOR_FILE = "error_detector.json"
FORMAT = "linkner-error-detector/1"
TIE_BREAK = 1e-6


class DetectorError(ValueError):
    """A missing, malformed or stale error detector."""


@dataclass
class Tree:
    """One regression tree of a boosted ensemble, as parallel node arrays (leaf: ``left == -1``)."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray

    def predict(self, rows: np.ndarray) -> np.ndarray:
        node = np.zeros(len(rows), dtype=np.int64)
        active = self.left[node] >= 0
        while active.any():
            at = node[active]
            values = rows[active, self.feature[at]]
            go_left = np.where(np.isnan(values), self.missing_left[at], values <= self.threshold[at])
            node[active] = np.where(go_left, self.left[at], self.right[at])
            active = self.left[node] >= 0
        return self.value[node]

    def to_json(self) -> dict[str, list]:
        return {"feature": self.feature.tolist(), "threshold": self.threshold.tolist(),
                "missing_left": self.missing_left.astype(int).tolist(), "left": self.left.tolist(),
                "right": self.right.tolist(), "value": self.value.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, list]) -> "Tree":
        return cls(np.asarray(data["feature"], dtype=np.int64), np.asarray(data["threshold"], dtype=np.float64),
                   np.asarray(data["missing_left"], dtype=bool), np.asarray(data["left"], dtype=np.int64),
                   np.asarray(data["right"], dtype=np.int64), np.asarray(data["value"], dtype=np.float64))


@dataclass
class Scorer:
    """Log-odds of 'wrong': boosted trees (``baseline + sum of trees``) or a logistic regression
    (``bias + weights . (x - mean) / scale``)."""

    kind: str
    baseline: float = 0.0
    trees: list[Tree] = field(default_factory=list)
    weights: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def log_odds(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "trees":
            return self.baseline + sum((tree.predict(rows) for tree in self.trees), np.zeros(len(rows)))
        assert self.weights is not None and self.mean is not None and self.scale is not None
        return self.baseline + ((rows - self.mean) / self.scale) @ self.weights

    def to_json(self) -> dict[str, Any]:
        if self.kind == "trees":
            return {"kind": "trees", "baseline": self.baseline, "trees": [tree.to_json() for tree in self.trees]}
        return {"kind": "logistic", "baseline": self.baseline, "weights": self.weights.tolist(),  # type: ignore[union-attr]
                "mean": self.mean.tolist(), "scale": self.scale.tolist()}  # type: ignore[union-attr]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Scorer":
        if data["kind"] == "trees":
            return cls("trees", float(data["baseline"]), [Tree.from_json(tree) for tree in data["trees"]])
        if data["kind"] == "logistic":
            return cls("logistic", float(data["baseline"]), weights=np.asarray(data["weights"], dtype=np.float64),
                       mean=np.asarray(data["mean"], dtype=np.float64), scale=np.asarray(data["scale"], dtype=np.float64))
        raise DetectorError(f"unknown scorer kind {data['kind']!r}")


@dataclass
class Isotonic:
    """A monotone map from a raw score to a calibrated probability (piecewise linear, clipped)."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.interp(values, self.x, self.y)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -50, 50)))


@dataclass
class ErrorDetector:
    """P(a predicted span is wrong): the mean of ``scorers`` (one per cross-validation fold) mapped
    through ``calibration``; ``checkpoint`` is the fingerprint of the weights it was fitted for."""

    checkpoint: str
    lexicon: Lexicon
    features: list[str]
    scorers: list[Scorer]
    calibration: Isotonic | None = None
    mc_samples: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """The uncalibrated P(wrong): the folds' mean probability."""
        if not len(rows):
            return np.zeros(0)
        return np.mean([sigmoid(scorer.log_odds(rows)) for scorer in self.scorers], axis=0)

    def probability_wrong(self, rows: np.ndarray) -> np.ndarray:
        """The calibrated P(wrong); ties of the step-wise calibration are broken by the raw score
        (a millionth of it), so the ranking, and hence AUROC and routing, are the raw score's."""
        return self.calibrate(self.raw(rows))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration is None:
            return np.clip(raw, 0.0, 1.0)
        return np.clip((1 - TIE_BREAK) * self.calibration(raw) + TIE_BREAK * raw, 0.0, 1.0)

    def rows(self, sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[Entity]],
             span_features: Sequence[Sequence[Sequence[float]]], documents: Sequence[int] | None = None) -> np.ndarray:
        return feature_matrix(sentences, predictions, span_features, self.lexicon, documents)

    def annotate(self, sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[Entity]],
                 span_features: Sequence[Sequence[Sequence[float]]], documents: Sequence[int] | None = None) -> None:
        """Set ``uncertainty['learned']`` of every prediction (fresh entities of one predict call)."""
        scores = self.probability_wrong(self.rows(sentences, predictions, span_features, documents)).tolist()
        flat = [entity for entities in predictions for entity in entities]
        for entity, score in zip(flat, scores):
            entity.uncertainty[LEARNED] = score

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "checkpoint": self.checkpoint, "features": self.features,
                "mc_samples": self.mc_samples, "scorers": [scorer.to_json() for scorer in self.scorers],
                "calibration": None if self.calibration is None else
                {"x": self.calibration.x.tolist(), "y": self.calibration.y.tolist()},
                "lexicon": self.lexicon.to_json(), "report": self.report}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / DETECTOR_FILE
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ErrorDetector":
        if data.get("format") != FORMAT:
            raise DetectorError(f"unsupported error detector format {data.get('format')!r}; expected {FORMAT!r}")
        lexicon = Lexicon.from_json(data["lexicon"])
        if list(data["features"]) != feature_names(lexicon.labels):
            raise DetectorError("the error detector was fitted on other features than this version computes; refit it "
                                "(python -m benchmarks.error_detector)")
        calibration = data.get("calibration")
        return cls(data["checkpoint"], lexicon, list(data["features"]),
                   [Scorer.from_json(scorer) for scorer in data["scorers"]],
                   None if calibration is None else Isotonic(np.asarray(calibration["x"]), np.asarray(calibration["y"])),
                   int(data.get("mc_samples", 0)), dict(data.get("report", {})))


def checkpoint_fingerprint(folder: str | Path) -> str:
    return "sha256:" + weights_fingerprint(folder)


def load_detector(folder: str | Path, labels: Sequence[str] | None = None) -> ErrorDetector:
    """The checkpoint's error detector; :class:`DetectorError` when there is none, it cannot be read,
    or it was fitted for other weights (stale) or labels."""
    path = Path(folder) / DETECTOR_FILE
    if not path.is_file():
        raise DetectorError(f"no error detector in {folder} (fit one with python -m benchmarks.error_detector)")
    try:
        detector = ErrorDetector.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, DetectorError):
            raise
        raise DetectorError(f"{path}: not a readable error detector ({type(error).__name__}: {error})") from None
    expected = checkpoint_fingerprint(folder)
    if detector.checkpoint != expected:
        raise DetectorError(f"{path} is stale: it was fitted for weights {detector.checkpoint[:19]}..., "
                            f"these are {expected[:19]}...; refit it on dev predictions of this checkpoint")
    if labels is not None and list(labels) != detector.lexicon.labels:
        raise DetectorError(f"{path} was fitted for labels {detector.lexicon.labels}, the model has {list(labels)}")
    return detector

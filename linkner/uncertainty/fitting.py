"""Fitting the learned error detector on dev predictions (scikit-learn; not needed for serving).

Cross-validation folds are whole documents (:class:`GroupKFold`), so document evidence never
leaks between folds; the served detector is the mean of the fold models, and its isotonic
calibration is fitted on their out-of-fold scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from linkner.data.spans import Entity, Sentence
from linkner.uncertainty.detector import Isotonic, Scorer, Tree

if TYPE_CHECKING:
    from linkner.model.predictor import SpanPredictor
    from linkner.uncertainty.detector import ErrorDetector


def document_chunks(documents: Sequence[int], size: int = 256) -> list[tuple[int, int]]:
    """``(first, end)`` ranges of whole documents (consecutive ids) of about ``size`` sentences."""
    chunks, first = [], 0
    for index in range(1, len(documents) + 1):
        boundary = index == len(documents) or documents[index] != documents[index - 1]
        if boundary and (index - first >= size or index == len(documents)):
            chunks.append((first, index))
            first = index
    return chunks


def collect(predictor: "SpanPredictor", sentences: Sequence[Sentence], documents: Sequence[int],
            estimators: Sequence[str], mc_samples: int, progress: bool = True
            ) -> tuple[list[list[Entity]], list[list[list[float]]]]:
    """Predictions (with ``estimators``) and span features, predicted a few whole documents at a time."""
    from tqdm.auto import tqdm

    predictions: list[list[Entity]] = []
    features: list[list[list[float]]] = []
    for first, end in tqdm(document_chunks(documents), desc="predicting", disable=not progress):
        part, rows = predictor.predict_with_span_features([s.tokens for s in sentences[first:end]], estimators,
                                                          mc_samples)
        predictions += part
        features += rows
    return predictions, features


def wrong_labels(sentences: Sequence[Sentence], predictions: Sequence[Sequence[Entity]]) -> np.ndarray:
    """1 for each predicted span (in order) that is not exactly a gold entity, else 0."""
    return np.asarray([int(entity.span not in set(sentence.entities))
                       for sentence, entities in zip(sentences, predictions) for entity in entities], dtype=np.int64)


def span_documents(documents: Sequence[int], predictions: Sequence[Sequence[Entity]]) -> np.ndarray:
    """The document id of each predicted span (in order): the cross-validation groups."""
    return np.asarray([documents[i] for i, entities in enumerate(predictions) for _ in entities], dtype=np.int64)


def make_model(kind: str, seed: int = 0):
    """An unfitted scikit-learn classifier of the ``kind`` the detector can store."""
    if kind == "trees":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=150, max_leaf_nodes=15, min_samples_leaf=20,
                                              l2_regularization=1.0, early_stopping=False, random_state=seed)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    raise ValueError(f"unknown detector kind {kind!r}; choose trees or logistic")


def export(model, kind: str) -> Scorer:
    """A fitted scikit-learn model as a :class:`Scorer` (checked to reproduce its log-odds)."""
    if kind == "logistic":
        scaler, regression = model[0], model[-1]
        return Scorer("logistic", float(regression.intercept_[0]), weights=regression.coef_[0].astype(np.float64),
                      mean=scaler.mean_.astype(np.float64), scale=scaler.scale_.astype(np.float64))
    trees = []
    for (predictor,) in model._predictors:  # binary: one tree per iteration
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(Tree(feature=nodes["feature_idx"].astype(np.int64),
                          threshold=nodes["num_threshold"].astype(np.float64),
                          missing_left=nodes["missing_go_to_left"].astype(bool),
                          left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
                          right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
                          value=nodes["value"].astype(np.float64)))
    return Scorer("trees", float(np.ravel(model._baseline_prediction)[0]), trees)


def cross_validate(rows: np.ndarray, wrong: np.ndarray, groups: np.ndarray, kind: str, folds: int = 5,
                   seed: int = 0) -> tuple[list[Scorer], np.ndarray]:
    """Fit one model per document fold; return them and the out-of-fold P(wrong) of every row."""
    from sklearn.model_selection import GroupKFold

    scorers, out_of_fold = [], np.zeros(len(rows))
    for train, held in GroupKFold(n_splits=folds).split(rows, wrong, groups):
        model = make_model(kind, seed).fit(rows[train], wrong[train])
        scorer = export(model, kind)
        expected = model.predict_proba(rows[held])[:, 1]
        got = 1.0 / (1.0 + np.exp(-scorer.log_odds(rows[held])))
        if not np.allclose(expected, got, atol=1e-6):
            raise AssertionError(f"exported {kind} model does not reproduce scikit-learn (max diff "
                                 f"{np.abs(expected - got).max():.2e})")
        scorers.append(scorer)
        out_of_fold[held] = expected
    return scorers, out_of_fold


def fit_isotonic(scores: np.ndarray, wrong: np.ndarray) -> Isotonic:
    """Monotone map from a P(wrong) score to the observed error rate (fitted on dev)."""
    from sklearn.isotonic import IsotonicRegression

    regression = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    regression.fit(scores, wrong.astype(np.float64))
    return Isotonic(np.asarray(regression.X_thresholds_, dtype=np.float64),
                    np.asarray(regression.y_thresholds_, dtype=np.float64))


BASE_ESTIMATORS = ("confidence", "entropy", "mc_dropout")
"""The estimators collected beside the features (compared against the learned one)."""


@dataclass
class DevFit:
    """A detector fitted on dev, with what it was fitted on (for reports)."""

    detector: "ErrorDetector"
    predictions: list[list[Entity]]
    rows: np.ndarray
    wrong: np.ndarray
    out_of_fold: np.ndarray


def fit_on_dev(predictor: "SpanPredictor", checkpoint: str | Path, train: Sequence[Sentence],
               dev: Sequence[Sentence], dev_documents: Sequence[int], kind: str = "trees", folds: int = 5,
               progress: bool = True) -> DevFit:
    """Fit the ``learned`` estimator's detector for ``checkpoint``: predict dev a few whole
    documents at a time, build the features (lexicon from ``train``), cross-validate by document
    folds and calibrate (isotonic) on the out-of-fold scores. Never give it test data.
    :class:`DetectorError` when the model's dev spans are too few to fit one."""
    from linkner.evaluation.scores import auroc
    from linkner.uncertainty.detector import DetectorError, ErrorDetector, checkpoint_fingerprint
    from linkner.uncertainty.features import Lexicon, feature_matrix, feature_names

    labels = predictor.labels
    lexicon = Lexicon.from_sentences(train, labels)
    predictions, span_rows = collect(predictor, dev, dev_documents, BASE_ESTIMATORS, mc_samples=0, progress=progress)
    rows = feature_matrix([s.tokens for s in dev], predictions, span_rows, lexicon, dev_documents)
    wrong = wrong_labels(dev, predictions)
    groups = span_documents(dev_documents, predictions)
    if len(set(groups.tolist())) < folds or len(set(wrong.tolist())) < 2:
        raise DetectorError(f"the model predicts {len(wrong)} spans on dev in {len(set(groups.tolist()))} documents, "
                            f"{int(wrong.sum())} of them wrong: too few to fit an error detector (it needs spans in "
                            f"at least {folds} documents, right and wrong ones)")
    scorers, out_of_fold = cross_validate(rows, wrong, groups, kind, folds)
    detector = ErrorDetector(checkpoint_fingerprint(checkpoint), lexicon, feature_names(labels), scorers,
                             fit_isotonic(out_of_fold, wrong), mc_samples=0)
    detector.report = {"cv_dev_auroc": auroc(out_of_fold, wrong.astype(bool)), "kind": kind, "folds": folds,
                       "dev_spans": int(len(wrong)), "dev_wrong": int(wrong.sum()), "mc_samples": 0,
                       "fitted_on": "CoNLL-2003 dev predictions (document folds)"}
    return DevFit(detector, predictions, rows, wrong, out_of_fold)

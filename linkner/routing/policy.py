"""Detection: which predicted spans go to the LLM, by threshold, budget, calibration or none; the
calibration applied here is made offline by :mod:`linkner.evaluation.calibration`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from linkner.routing.calibration_key import CalibrationKey
from linkner.routing.ranking import EntityRef, Predictions, rank_by_uncertainty, share_count
from linkner.uncertainty.names import ESTIMATOR_NAMES

PolicyKind = Literal["threshold", "budget", "calibrated", "none"]
POLICY_KINDS: tuple[str, ...] = PolicyKind.__args__  # type: ignore[attr-defined]
CALIBRATE_COMMAND = "linkner prepare --config serve_config.yaml"


class Calibration(BaseModel):
    """A threshold chosen on dev data; ``threshold`` None means the LLM did not help: route nothing.

    ``gain`` is the best candidate's linked minus local F1 on dev and ``gain_low``/``gain_high`` its
    paired-bootstrap interval; routing is on only when ``gain_low > margin``. ``key`` says what the
    calibration measured (LLM, demonstrations, estimator, checkpoint)."""

    estimator: str
    threshold: float | None
    llm_model: str
    dev_f1_local: float
    dev_f1_linked: float  # F1 of what is applied: the local F1 when routing nothing
    routed_share: float
    max_share: float
    sentences: int
    gain: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    candidate_share: float | None = None
    confidence: float = 0.95
    resamples: int = 0
    margin: float = 0.0
    key: CalibrationKey | None = None

    def summary(self) -> str:
        """One line: the threshold, dev F1s and the gain's interval."""
        threshold = "route nothing" if self.threshold is None else f"threshold {self.threshold:.4f}"
        text = (f"{threshold} (dev F1 {100 * self.dev_f1_local:.2f} local, {100 * self.dev_f1_linked:.2f} linked, "
                f"LLM share {100 * self.routed_share:.1f}%)")
        if self.gain is not None and self.gain_low is not None and self.gain_high is not None:
            low, high = 100 * self.gain_low, 100 * self.gain_high
            text += (f"; best candidate (share {100 * (self.candidate_share or 0):.1f}%) gain {100 * self.gain:+.2f} "
                     f"F1, {100 * self.confidence:g}% interval [{low:+.2f}, {high:+.2f}]"
                     f" over {self.resamples} resamples of {self.sentences} sentences, routes when the low end "
                     f"> {100 * self.margin:+.2f}")
        return text


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
            raise ValueError(f"the calibrated policy needs a calibration: run `{CALIBRATE_COMMAND}` "
                             "(or let the main job calibrate at start-up)")
        if self.kind == "calibrated" and self.calibration and self.calibration.estimator != self.estimator:
            raise ValueError(f"the calibration was made for {self.calibration.estimator!r}: its threshold does not "
                             f"apply to {self.estimator!r} values")
        return self

    def describe(self) -> str:
        """One line: what this policy routes, e.g. ``threshold: confidence > 0.5, at most 64 spans``."""
        if self.kind == "none":
            text = "none: route nothing"
        elif self.kind == "budget":
            text = f"budget: the {100 * self.budget:g}% most uncertain spans by {self.estimator}"
        elif self.kind == "threshold":
            text = f"threshold: {self.estimator} > {self.threshold:g}"
        elif self.calibration is not None and self.calibration.threshold is None:
            text = "calibrated: route nothing (the LLM did not help on dev)"
        else:
            text = f"calibrated: {self.estimator} > {self.calibration.threshold:.4f}"  # type: ignore[union-attr]
        return text if self.max_llm_spans is None else f"{text}, at most {self.max_llm_spans} spans per request"


def detect(predictions: Predictions, policy: DetectionPolicy) -> list[EntityRef]:
    """The spans to route, most uncertain first."""
    ranked = rank_by_uncertainty(predictions, policy.estimator)
    if policy.kind == "none":
        chosen: list[EntityRef] = []
    elif policy.kind == "budget":
        chosen = ranked[: share_count(policy.budget, len(ranked))]
    else:
        threshold = policy.threshold if policy.kind == "threshold" else policy.calibration.threshold  # type: ignore[union-attr]
        chosen = [] if threshold is None else [
            (i, j) for i, j in ranked if predictions[i][j].uncertainty[policy.estimator] > threshold]
    if policy.max_llm_spans is not None:
        chosen = chosen[: policy.max_llm_spans]
    return chosen

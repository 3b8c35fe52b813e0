"""The server's default policy: the checkpoint's calibration when it was made for what this server
runs (same LLM and answer mode, demonstrations, estimator and checkpoint), else the configured
policy, with a status saying which and why."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ValidationError

from linkner.llm.factory import model_id_for
from linkner.model.metadata import read_metadata
from linkner.routing.calibration_key import CalibrationKey, calibration_key, demonstrations_identity
from linkner.routing.policy import Calibration, DetectionPolicy
from linkner.service.config import AppConfig

log = logging.getLogger(__name__)


class CalibrationState(BaseModel):
    """``status``: "applied", "none", "stale: <what differs>", "disabled: ..." or "unused: ..."."""

    status: str
    policy: DetectionPolicy
    stored: Calibration | None = None

    @property
    def applied(self) -> bool:
        return self.status == "applied"


def expected_key(config: AppConfig) -> CalibrationKey:
    """The key a calibration must carry to apply to this configuration (needs no LLM engine)."""
    demos = config.router.demonstrations
    return calibration_key(model_id_for(config.llm_pool.llm), config.router.policy.estimator,
                           demonstrations_identity(demos.kind, demos.k, demos.seed, demos.train),
                           config.ner.checkpoint, config.ner.runtime)


def stored_calibration(checkpoint: str) -> Calibration | None:
    """The checkpoint's calibration; None when it has none (or an unreadable one, logged)."""
    raw = read_metadata(checkpoint).get("calibration")
    if not raw:
        return None
    try:
        return Calibration.model_validate(raw)
    except ValidationError as error:
        log.warning("the calibration stored in %s is unreadable, ignored: %s", checkpoint, error)
        return None


def staleness(stored: Calibration, expected: CalibrationKey) -> list[str]:
    """Why ``stored`` does not apply under ``expected`` (empty when it does)."""
    if stored.key is None:
        return ["no key recorded (made before calibrations were keyed)"]
    return stored.key.differences(expected)


def calibration_state(config: AppConfig) -> CalibrationState:
    """The default policy for ``config``; a stale calibration is refused with a warning naming
    what differs, and the configured policy is used instead."""
    configured = config.router.policy
    stored = stored_calibration(config.ner.checkpoint)
    if stored is None:
        return CalibrationState(status="none", policy=configured)
    if not config.router.use_calibration:
        return CalibrationState(status="disabled: router.use_calibration is false", policy=configured, stored=stored)
    if not config.llm_pool.enabled:
        return CalibrationState(status="unused: the LLM pool is disabled", policy=configured, stored=stored)
    reasons = staleness(stored, expected_key(config))
    if reasons:
        status = "stale: " + "; ".join(reasons)
        log.warning("calibration in %s not applied, %s; using the configured policy (%s). Recalibrate: run the "
                    "`linkner prepare --config CONFIG` (or `linkner link-eval --config CONFIG --data DEV --dev DEV "
                    "--save-calibration`)",
                    config.ner.checkpoint, status, configured.describe())
        return CalibrationState(status=status, policy=configured, stored=stored)
    policy = configured.model_copy(update={"kind": "calibrated", "calibration": stored,
                                           "estimator": stored.estimator})
    return CalibrationState(status="applied", policy=policy, stored=stored)

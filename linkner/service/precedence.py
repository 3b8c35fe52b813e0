"""A request's routing options over the server's default policy: request option > server config >
calibration, and every contradiction refused with a message that says why.

- ``threshold`` alone means a threshold policy with that threshold; ``budget`` alone a budget
  policy with that share. Either with another explicit ``policy`` (or both together) is refused.
- ``policy`` alone switches kind; ``threshold``/``budget`` then come from the server only when the
  server's own policy is of that kind, else the request must give them.
- A threshold is a value of one estimator: a server threshold (configured or calibrated) is not
  reused for another ``estimator``; such a request must bring its own threshold or a budget.
  Budgets are shares, so they apply to any estimator.
- ``max_llm_spans`` replaces the server's per-request cap but never exceeds the hard limit
  ``limits.max_llm_spans_per_request``.
"""

from __future__ import annotations

import math
from typing import Sequence

from linkner.routing.policy import POLICY_KINDS, DetectionPolicy
from protos.protocol import InvalidRequest, RecognizeOptions


def _check_share(name: str, value: float | None) -> None:
    if value is not None and (math.isnan(value) or not 0.0 <= value <= 1.0):
        raise InvalidRequest(f"{name} {value} is out of range: it must be within [0, 1]")


def _kind(options: RecognizeOptions, default: DetectionPolicy) -> str:
    """The policy kind the request asks for, refusing contradictory options."""
    threshold, budget = options.threshold is not None, options.budget is not None
    if threshold and budget:
        raise InvalidRequest("pass either threshold (policy 'threshold') or budget (policy 'budget'), not both")
    policy = options.policy
    if policy:
        if policy not in POLICY_KINDS:
            raise InvalidRequest(f"unknown policy {policy!r}; choose from {', '.join(POLICY_KINDS)}")
        for name, given in (("threshold", threshold), ("budget", budget)):
            if given and policy != name:
                raise InvalidRequest(f"{name} belongs to policy {name!r}, but this request asks policy {policy!r}: "
                                     f"drop one of them")
        return policy
    if threshold:
        return "threshold"
    if budget:
        return "budget"
    return default.kind


def _foreign_threshold(source: str, made_for: str, estimator: str) -> InvalidRequest:
    return InvalidRequest(f"{source} was made for {made_for!r}; pass a threshold or budget with estimator "
                          f"{estimator!r} (a threshold of one estimator means nothing for another's values)")


def resolve_policy(options: RecognizeOptions, default: DetectionPolicy, estimators: Sequence[str],
                   max_llm_spans_per_request: int | None = None) -> DetectionPolicy:
    """The request's effective policy: its options over the server ``default``, validated and capped."""
    if options.estimator and options.estimator not in estimators:
        raise InvalidRequest(f"unknown estimator {options.estimator!r}; this model offers {', '.join(estimators)}")
    _check_share("threshold", options.threshold)
    _check_share("budget", options.budget)
    if options.max_llm_spans is not None and options.max_llm_spans < 0:
        raise InvalidRequest(f"max_llm_spans {options.max_llm_spans} must not be negative")
    kind = _kind(options, default)
    estimator = options.estimator or default.estimator
    update: dict = {"kind": kind, "estimator": estimator, "calibration": None}
    if kind == "calibrated":
        calibration = default.calibration
        if calibration is None:
            raise InvalidRequest("policy 'calibrated' is not available: this server applies no calibration "
                                 "(see Describe for its calibration status)")
        if estimator != calibration.estimator:
            raise _foreign_threshold("the calibration", calibration.estimator, estimator)
        update["calibration"] = calibration
    elif kind == "threshold":
        if options.threshold is not None:
            update["threshold"] = options.threshold
        elif default.kind != "threshold":
            raise InvalidRequest(f"policy 'threshold' needs a threshold: the server's policy is {default.kind!r}")
        elif estimator != default.estimator:
            raise _foreign_threshold(f"the server's threshold {default.threshold:g}", default.estimator, estimator)
    elif kind == "budget":
        if options.budget is not None:
            update["budget"] = options.budget
        elif default.kind != "budget":
            raise InvalidRequest(f"policy 'budget' needs a budget: the server's policy is {default.kind!r}")
    caps = [options.max_llm_spans if options.max_llm_spans is not None else default.max_llm_spans,
            max_llm_spans_per_request]
    update["max_llm_spans"] = min((cap for cap in caps if cap is not None), default=None)
    return default.model_copy(update=update)

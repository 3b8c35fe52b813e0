"""Request options over the server's default policy: every combination does what it says or is
refused with a message saying why; and the spans routed follow the effective policy."""

import math

import pytest

from linkner.data.spans import Entity
from linkner.routing.policy import Calibration, DetectionPolicy, detect
from protos.protocol import InvalidRequest, RecognizeOptions
from linkner.service.precedence import resolve_policy

ESTIMATORS = ["confidence", "entropy", "mc_dropout"]
CAP = 10  # the server's hard cap in the table
CALIBRATION = Calibration(estimator="confidence", threshold=0.3, llm_model="m", dev_f1_local=0.8, dev_f1_linked=0.85,
                          routed_share=0.2, max_share=0.3, sentences=600)
SERVERS = {
    "threshold": DetectionPolicy(kind="threshold", threshold=0.5),
    "budget": DetectionPolicy(kind="budget", budget=0.5),
    "calibrated": DetectionPolicy(kind="calibrated", calibration=CALIBRATION),
    "none": DetectionPolicy(kind="none"),
}
REQUEST_ESTIMATORS = {"unset": None, "same": "confidence", "other": "entropy"}
OVERRIDES = {
    "none": {},
    "threshold": {"threshold": 0.9},
    "budget": {"budget": 0.4},
    "policy=none": {"policy": "none"},
    "policy=calibrated": {"policy": "calibrated"},
    "max_llm_spans": {"max_llm_spans": 1},
}
C, E = "confidence", "entropy"
FOREIGN_SERVER = ("the server's threshold 0.5 was made for 'confidence'; "
                  "pass a threshold or budget with estimator 'entropy'")
FOREIGN_CAL = "the calibration was made for 'confidence'; pass a threshold or budget with estimator 'entropy'"
NO_CAL = "policy 'calibrated' is not available"
# (server kind, override) -> effective (kind, estimator, threshold or budget, cap) or a refusal, for the
# request estimator (unset, same, other)
EXPECTED = {
    ("threshold", "none"): [("threshold", C, 0.5, CAP)] * 2 + [FOREIGN_SERVER],
    ("threshold", "threshold"): [("threshold", C, 0.9, CAP)] * 2 + [("threshold", E, 0.9, CAP)],
    ("threshold", "budget"): [("budget", C, 0.4, CAP)] * 2 + [("budget", E, 0.4, CAP)],
    ("threshold", "policy=none"): [("none", C, None, CAP)] * 2 + [("none", E, None, CAP)],
    ("threshold", "policy=calibrated"): [NO_CAL] * 3,
    ("threshold", "max_llm_spans"): [("threshold", C, 0.5, 1)] * 2 + [FOREIGN_SERVER],
    ("budget", "none"): [("budget", C, 0.5, CAP)] * 2 + [("budget", E, 0.5, CAP)],
    ("budget", "threshold"): [("threshold", C, 0.9, CAP)] * 2 + [("threshold", E, 0.9, CAP)],
    ("budget", "budget"): [("budget", C, 0.4, CAP)] * 2 + [("budget", E, 0.4, CAP)],
    ("budget", "policy=none"): [("none", C, None, CAP)] * 2 + [("none", E, None, CAP)],
    ("budget", "policy=calibrated"): [NO_CAL] * 3,
    ("budget", "max_llm_spans"): [("budget", C, 0.5, 1)] * 2 + [("budget", E, 0.5, 1)],
    ("calibrated", "none"): [("calibrated", C, 0.3, CAP)] * 2 + [FOREIGN_CAL],
    ("calibrated", "threshold"): [("threshold", C, 0.9, CAP)] * 2 + [("threshold", E, 0.9, CAP)],
    ("calibrated", "budget"): [("budget", C, 0.4, CAP)] * 2 + [("budget", E, 0.4, CAP)],
    ("calibrated", "policy=none"): [("none", C, None, CAP)] * 2 + [("none", E, None, CAP)],
    ("calibrated", "policy=calibrated"): [("calibrated", C, 0.3, CAP)] * 2 + [FOREIGN_CAL],
    ("calibrated", "max_llm_spans"): [("calibrated", C, 0.3, 1)] * 2 + [FOREIGN_CAL],
    ("none", "none"): [("none", C, None, CAP)] * 2 + [("none", E, None, CAP)],
    ("none", "threshold"): [("threshold", C, 0.9, CAP)] * 2 + [("threshold", E, 0.9, CAP)],
    ("none", "budget"): [("budget", C, 0.4, CAP)] * 2 + [("budget", E, 0.4, CAP)],
    ("none", "policy=none"): [("none", C, None, CAP)] * 2 + [("none", E, None, CAP)],
    ("none", "policy=calibrated"): [NO_CAL] * 3,
    ("none", "max_llm_spans"): [("none", C, None, 1)] * 2 + [("none", E, None, 1)],
}
CASES = [(server, estimator, override, EXPECTED[server, override][index])
         for server in SERVERS for index, estimator in enumerate(REQUEST_ESTIMATORS) for override in OVERRIDES]


def entity(start, confidence, entropy):
    return Entity(start=start, end=start + 1, label="PER", probability=1 - confidence,
                            uncertainty={"confidence": confidence, "entropy": entropy})


# two uncertainty views that rank the spans differently, so a wrong estimator or value shows
PREDICTIONS = [[entity(0, 0.95, 0.10), entity(2, 0.60, 0.70), entity(4, 0.40, 0.95), entity(6, 0.20, 0.35)],
               [entity(0, 0.80, 0.20), entity(2, 0.10, 0.50)]]


def expected_routing(kind, estimator, value, cap):
    """The spans the effective policy must route, computed independently of detect()."""
    spans = sorted(((-PREDICTIONS[i][j].uncertainty[estimator], i, j)
                    for i in range(len(PREDICTIONS)) for j in range(len(PREDICTIONS[i]))))
    if kind == "none":
        chosen = []
    elif kind == "budget":
        chosen = spans[: math.ceil(value * len(spans))]
    else:
        chosen = [span for span in spans if -span[0] > value]
    return [(i, j) for _, i, j in chosen][:cap]


def test_the_table_covers_every_combination():
    assert len(CASES) == 4 * 3 * 6 == 72


@pytest.mark.parametrize("server, estimator, override, expected", CASES,
                         ids=[f"{s}-{e}-{o}" for s, e, o, _ in CASES])
def test_request_options_over_server_policy(server, estimator, override, expected):
    options = RecognizeOptions(estimator=REQUEST_ESTIMATORS[estimator], **OVERRIDES[override])
    if isinstance(expected, str):
        with pytest.raises(InvalidRequest, match=expected.replace("(", r"\(").replace(")", r"\)")):
            resolve_policy(options, SERVERS[server], ESTIMATORS, CAP)
        return
    policy = resolve_policy(options, SERVERS[server], ESTIMATORS, CAP)
    kind, expected_estimator, value, cap = expected
    assert (policy.kind, policy.estimator, policy.max_llm_spans) == (kind, expected_estimator, cap)
    if kind == "threshold":
        assert policy.threshold == value
    elif kind == "budget":
        assert policy.budget == value
    elif kind == "calibrated":
        assert policy.calibration.threshold == value and policy.calibration.estimator == expected_estimator
    assert (policy.calibration is not None) == (kind == "calibrated")
    assert detect(PREDICTIONS, policy) == expected_routing(kind, expected_estimator, value, cap)


@pytest.mark.parametrize("options, message", [
    ({"threshold": 0.2, "policy": "budget"}, "threshold belongs to policy 'threshold', but this request asks "
                                             "policy 'budget'"),
    ({"threshold": 0.2, "policy": "none"}, "threshold belongs to policy 'threshold', but this request asks "
                                           "policy 'none'"),
    ({"threshold": 0.2, "policy": "calibrated"}, "threshold belongs to policy 'threshold'"),
    ({"budget": 0.2, "policy": "threshold"}, "budget belongs to policy 'budget', but this request asks "
                                             "policy 'threshold'"),
    ({"budget": 0.2, "policy": "calibrated"}, "budget belongs to policy 'budget'"),
    ({"threshold": 0.2, "budget": 0.2}, "either threshold (policy 'threshold') or budget (policy 'budget'), not both"),
    ({"policy": "threshold"}, "policy 'threshold' needs a threshold: the server's policy is 'calibrated'"),
    ({"policy": "budget"}, "policy 'budget' needs a budget: the server's policy is 'calibrated'"),
    ({"threshold": float("nan")}, "threshold nan is out of range"),
    ({"estimator": "vibes"}, "unknown estimator 'vibes'"),
])
def test_contradictions_are_refused_with_the_reason(options, message):
    with pytest.raises(InvalidRequest) as refused:
        resolve_policy(RecognizeOptions(**options), SERVERS["calibrated"], ESTIMATORS, CAP)
    assert message in str(refused.value)


def test_explicit_policy_kind_takes_the_server_value_only_from_its_own_kind():
    same = resolve_policy(RecognizeOptions(policy="threshold"), SERVERS["threshold"], ESTIMATORS, CAP)
    assert (same.kind, same.threshold) == ("threshold", 0.5)
    budget = resolve_policy(RecognizeOptions(policy="budget", estimator="entropy"), SERVERS["budget"], ESTIMATORS, CAP)
    assert (budget.kind, budget.budget, budget.estimator) == ("budget", 0.5, "entropy")
    explicit = resolve_policy(RecognizeOptions(policy="threshold", threshold=0.3, estimator="entropy"),
                              SERVERS["calibrated"], ESTIMATORS, CAP)
    assert (explicit.kind, explicit.threshold, explicit.estimator, explicit.calibration) == ("threshold", 0.3, E, None)


def test_the_server_cap_bounds_every_request():
    spans = [[entity(2 * k, 0.5 + k / 1000, 0.5) for k in range(100)]]  # 100 spans on one sentence
    everything = RecognizeOptions(budget=1.0)
    assert len(detect(spans, resolve_policy(everything, SERVERS["none"], ESTIMATORS, 5))) == 5
    lower = RecognizeOptions(budget=1.0, max_llm_spans=2)
    assert len(detect(spans, resolve_policy(lower, SERVERS["none"], ESTIMATORS, 5))) == 2
    higher = RecognizeOptions(budget=1.0, max_llm_spans=1000)  # asks for more than the cap: the cap holds
    assert len(detect(spans, resolve_policy(higher, SERVERS["none"], ESTIMATORS, 5))) == 5
    configured = DetectionPolicy(kind="budget", budget=1.0, max_llm_spans=3)  # the server's own, lower cap
    assert resolve_policy(RecognizeOptions(), configured, ESTIMATORS, 5).max_llm_spans == 3
    assert resolve_policy(RecognizeOptions(max_llm_spans=4), configured, ESTIMATORS, 5).max_llm_spans == 4
    kept = [ref for ref in detect(spans, resolve_policy(everything, SERVERS["none"], ESTIMATORS, 5))]
    assert kept == [(0, 99), (0, 98), (0, 97), (0, 96), (0, 95)]  # the most uncertain ones


def test_calibrated_policy_refuses_another_estimators_values():
    with pytest.raises(ValueError, match="the calibration was made for 'confidence'"):
        DetectionPolicy(kind="calibrated", estimator="entropy", calibration=CALIBRATION)

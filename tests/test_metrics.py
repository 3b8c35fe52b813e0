"""The ingress's metrics take every answer the service can give, unusual ones included (Ray's
metric objects validate values without a Ray instance: these run in process)."""

from __future__ import annotations

from deployments.metrics import STAGES, IngressMetrics
from linkner.data.spans import Entity
from linkner.service.api import RecognizeOutput


def test_a_stage_that_took_no_measurable_time_is_recorded_not_raised() -> None:
    """A stage of 0 s (a missing stage too) is observed in the histogram and left out of the
    counter of exact seconds, which refuses an increment of 0 (before, that failed the request)."""
    metrics = IngressMetrics()
    entities = [Entity(start=0, end=1, label="PER", probability=0.9)]
    timings = {stage: 0.0 for stage in STAGES if stage != "classify"}  # classify missing, the rest 0 ms
    metrics.answered(RecognizeOutput(entities=entities, estimator="confidence", timings_ms=timings, spans=1))
    metrics.answered(RecognizeOutput(entities=[], estimator="confidence", timings_ms={}, spans=0))
    metrics.call("Recognize", "OK")

"""What the ingress and NER replicas record, read back in process.

Ray's metric objects validate values and tags without a Ray instance, but hand each point to a
Cython recorder (``metric._metric.record(value, tags=...)``) that has no read-back API: the
values only come out of a running node's Prometheus endpoint (tests/serving/test_observability_e2e.py
scrapes them there). These tests keep the real Ray metric objects and their real recorder, and
wrap the recorder so that every point that passes Ray's own validation is also kept here, per
metric and tag set, then read back."""

from __future__ import annotations

from collections import defaultdict

import pytest

from deployments.metrics import STAGES, IngressMetrics, NERMetrics
from linkner.routing.merge import LinkStats
from protos.protocol import Entity, RecognizeResult


class Recorded:
    """Every point recorded through one Ray metric object (after Ray's validation), still handed on
    to Ray's own recorder."""

    def __init__(self, metric) -> None:
        self.real = metric._metric
        assert self.real is not None, f"{metric._name}: Ray discarded the metric (invalid name)"
        self.points: dict[tuple, list[float]] = defaultdict(list)
        metric._metric = self

    def record(self, value, tags=None) -> None:
        self.real.record(value, tags=tags)
        self.points[tuple(sorted((tags or {}).items()))].append(value)

    def total(self, **tags) -> float:
        """A counter's value for these tags."""
        return sum(self.points.get(tuple(sorted(tags.items())), []))

    def observed(self, **tags) -> list[float]:
        """A histogram's observations for these tags."""
        return self.points.get(tuple(sorted(tags.items())), [])

    def tag_sets(self) -> set[tuple]:
        return set(self.points)


def recorded(metrics) -> dict[str, Recorded]:
    """The metrics object's Ray metrics, by attribute name, each wrapped."""
    from ray.util.metrics import Metric

    return {name: Recorded(value) for name, value in vars(metrics).items() if isinstance(value, Metric)}


def entity(label: str, source: str = "local") -> Entity:
    return Entity(text="x", label=label, char_start=0, char_end=1, word_start=0, word_end=1, sentence=0,
                  source=source, uncertainty=0.1, local_label=label, local_probability=0.9)


def document(entities: list[Entity], timings: dict[str, float], spans: int, routed: int = 0,
             degraded_kind: str = "", **failures: int) -> tuple[RecognizeResult, LinkStats]:
    """An answer as the service returns it: the result and what linking did (``llm_errors``,
    ``llm_timeouts``, ``llm_overloaded`` in ``failures``); degraded when any LLM answer failed."""
    degraded = bool(failures.get("llm_errors"))
    return (RecognizeResult(entities=entities, timings_ms=timings, llm_spans=routed, degraded=degraded,
                            degraded_kind=degraded_kind),
            LinkStats(spans=spans, routed=routed, degraded=degraded, degraded_kind=degraded_kind, **failures))


def test_an_answered_document_is_recorded_in_every_series() -> None:
    metrics = IngressMetrics()
    series = recorded(metrics)
    assert {"requests", "in_flight", "documents", "entities", "spans", "routed", "share", "degraded", "llm_failures",
            "stage", "stage_total"} <= set(series)
    timings = {"recognize": 4.0, "detect": 1.0, "classify": 250.0, "merge": 0.5, "total": 256.0}
    metrics.answered(*document([entity("PER"), entity("PER"), entity("LOC", "llm"), entity("PER", "llm")],
                               timings, spans=8, routed=2))
    # degraded: 5 routed spans failed, of them 2 timed out and 1 was refused (the other 2 are errors)
    metrics.answered(*document([entity("ORG")], timings, spans=5, routed=5, degraded_kind="llm_timeout",
                               llm_errors=5, llm_timeouts=2, llm_overloaded=1))
    metrics.answered(*document([], timings, spans=1, routed=1, degraded_kind="llm_overloaded", llm_errors=1,
                               llm_overloaded=1))
    metrics.answered(*document([], timings, spans=2, routed=2, llm_errors=2))  # no kind given: counted as "other"

    assert series["documents"].total() == 4
    assert {tags: sum(values) for tags, values in series["entities"].points.items()} == {
        (("label", "PER"), ("source", "local")): 2, (("label", "LOC"), ("source", "llm")): 1,
        (("label", "PER"), ("source", "llm")): 1, (("label", "ORG"), ("source", "local")): 1}
    assert series["spans"].total() == 8 + 5 + 1 + 2
    assert series["routed"].total() == 2 + 5 + 1 + 2
    assert series["share"].observed() == [pytest.approx(0.25), 1.0, 1.0, 1.0]
    assert {tags: sum(values) for tags, values in series["degraded"].points.items()} == {
        (("reason", "llm_timeout"),): 1, (("reason", "llm_overloaded"),): 1, (("reason", "other"),): 1}
    assert {tags: sum(values) for tags, values in series["llm_failures"].points.items()} == {
        (("kind", "timeout"),): 2, (("kind", "overloaded"),): 2, (("kind", "error"),): 2 + 2}
    for stage in STAGES:
        assert series["stage"].observed(stage=stage) == [pytest.approx(timings[stage] / 1000)] * 4, stage
        assert series["stage_total"].total(stage=stage) == pytest.approx(4 * timings[stage] / 1000), stage
    assert series["requests"].points == {} and series["in_flight"].points == {}


def test_a_stage_that_took_no_measurable_time_is_recorded_not_raised() -> None:
    """A stage of 0 s (a missing stage too) is observed in the histogram and left out of the
    counter of exact seconds, which refuses an increment of 0 (before, that failed the request)."""
    metrics = IngressMetrics()
    series = recorded(metrics)
    entities = [entity("PER")]
    timings = {stage: 0.0 for stage in STAGES if stage != "classify"}  # classify missing, the rest 0 ms
    timings["total"] = 3.0
    metrics.answered(*document(entities, timings, spans=1))
    metrics.answered(*document([], {}, spans=0))
    assert series["documents"].total() == 2 and series["spans"].total() == 1
    assert series["share"].observed() == [0.0, 0.0]  # no span routed, none found: share 0, not a division by 0
    for stage in STAGES:
        assert series["stage"].observed(stage=stage) == ([0.0] if stage != "total" else [0.003]) + [0.0], stage
    assert series["stage_total"].tag_sets() == {(("stage", "total"),)}
    assert series["stage_total"].total(stage="total") == pytest.approx(0.003)
    assert series["degraded"].points == {} and series["llm_failures"].points == {} and series["routed"].points == {}


def test_calls_are_counted_by_method_and_status_code() -> None:
    metrics = IngressMetrics()
    series = recorded(metrics)
    for method, code in [("Recognize", "OK"), ("Recognize", "OK"), ("Recognize", "INVALID_ARGUMENT"),
                         ("RecognizeBatch", "OK"), ("Recognize", "RESOURCE_EXHAUSTED")]:
        metrics.call(method, code)
    assert {tags: sum(values) for tags, values in series["requests"].points.items()} == {
        (("code", "OK"), ("method", "Recognize")): 2, (("code", "INVALID_ARGUMENT"), ("method", "Recognize")): 1,
        (("code", "OK"), ("method", "RecognizeBatch")): 1, (("code", "RESOURCE_EXHAUSTED"), ("method", "Recognize")): 1}


def test_an_ner_forward_pass_records_its_size_and_waits() -> None:
    metrics = NERMetrics()
    series = recorded(metrics)
    metrics.batch(3, 7, [0.001, 0.02, 0.0])
    metrics.batch(1, 2, [0.5])
    assert series["batch_requests"].observed() == [3, 1]
    assert series["batch_sentences"].observed() == [7, 2]
    assert series["sentences"].total() == 9
    assert series["queue_wait"].observed() == [0.001, 0.02, 0.0, 0.5]

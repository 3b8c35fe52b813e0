"""The service's Prometheus metrics, defined once, recorded through Ray Serve's metrics API.

Ray exports them on its Prometheus endpoint (the node's ``metrics_export_port``) beside Ray
Serve's own ``ray_serve_*`` series; Ray's exporter prefixes every application metric with
``ray_``, so ``linkner_requests_total`` is scraped as ``ray_linkner_requests_total`` (the scrape config in
docs/operations.md strips the prefix). Ray Serve adds the ``application``, ``deployment`` and ``replica``
labels. Each replica reports its own series: sum over ``replica`` in queries.

Ray computes a histogram's ``_sum`` from bucket midpoints, so exact totals are also kept as
counters (``linkner_stage_seconds_total``, ``linkner_ner_sentences_total``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray.serve.metrics import Counter, Gauge, Histogram

from protos.convert import STAGES

if TYPE_CHECKING:
    from linkner.routing.merge import LinkStats
    from protos.protocol import RecognizeResult

# seconds: the local path takes milliseconds, the LLM path up to tens of seconds
LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
SHARE_BUCKETS = [0.001, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]  # the first catches requests that route nothing
SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


class IngressMetrics:
    """What the gRPC ingress records: calls by method and status, and per answered document its
    entities, routing, degradation, LLM failures and stage latencies."""

    def __init__(self) -> None:
        self.requests = Counter("linkner_requests_total", "gRPC calls answered, by method and gRPC status code",
                                tag_keys=("method", "code"))
        self.in_flight = Gauge("linkner_requests_in_flight", "gRPC calls being answered by this ingress replica")
        self.documents = Counter("linkner_documents_total", "documents answered (one per Recognize call, one per "
                                 "item of a batch or stream)")
        self.entities = Counter("linkner_entities_total", "entities returned, by label and by who labelled them "
                                "(source: local model or llm)", tag_keys=("label", "source"))
        self.spans = Counter("linkner_spans_total", "entity spans the local model found")
        self.routed = Counter("linkner_llm_routed_spans_total", "spans sent to the LLM")
        self.share = Histogram("linkner_llm_share", "per document: share of its spans sent to the LLM",
                               boundaries=SHARE_BUCKETS)
        self.degraded = Counter("linkner_degraded_total", "documents answered degraded (local answer kept), by "
                                "reason (llm_timeout, llm_overloaded, llm_error)", tag_keys=("reason",))
        self.llm_failures = Counter("linkner_llm_failures_total", "routed spans whose LLM answer failed, by kind "
                                    "(timeout, overloaded, error)", tag_keys=("kind",))
        self.stage = Histogram("linkner_stage_seconds", "per document: seconds in each linking stage (recognize, "
                               "detect, classify, merge) and in total", boundaries=LATENCY_BUCKETS_S,
                               tag_keys=("stage",))
        self.stage_total = Counter("linkner_stage_seconds_total", "seconds spent in each stage, summed over "
                                   "documents (exact; divide by linkner_documents_total for the mean)",
                                   tag_keys=("stage",))

    def call(self, method: str, code: str) -> None:
        """One gRPC call ended with status ``code`` (its name, e.g. ``OK``)."""
        self.requests.inc(1, tags={"method": method, "code": code})

    def answered(self, result: "RecognizeResult", stats: "LinkStats") -> None:
        """One document answered (``stats``: what linking did for it)."""
        self.documents.inc(1)
        counts: dict[tuple[str, str], int] = {}
        for entity in result.entities:
            key = (entity.label, entity.source)
            counts[key] = counts.get(key, 0) + 1
        for (label, source), count in counts.items():
            self.entities.inc(count, tags={"label": label, "source": source})
        if stats.spans:
            self.spans.inc(stats.spans)
        if stats.routed:
            self.routed.inc(stats.routed)
        self.share.observe(stats.routed / stats.spans if stats.spans else 0.0)
        if result.degraded:
            self.degraded.inc(1, tags={"reason": result.degraded_kind or "other"})
        failures = {"timeout": stats.llm_timeouts, "overloaded": stats.llm_overloaded,
                    "error": stats.llm_errors - stats.llm_timeouts - stats.llm_overloaded}
        for kind, count in failures.items():
            if count:
                self.llm_failures.inc(count, tags={"kind": kind})
        for stage in STAGES:
            seconds = result.timings_ms.get(stage, 0.0) / 1000.0
            self.stage.observe(seconds, tags={"stage": stage})
            if seconds > 0:  # Ray's Counter refuses an increment of 0 (a stage that took no measurable time)
                self.stage_total.inc(seconds, tags={"stage": stage})


class NERMetrics:
    """What an NER replica records: the size of each forward pass's batch and its queue wait."""

    def __init__(self) -> None:
        self.batch_requests = Histogram("linkner_ner_batch_requests", "requests the ingress merged into one forward pass",
                                        boundaries=SIZE_BUCKETS)
        self.batch_sentences = Histogram("linkner_ner_batch_sentences", "sentences in one NER forward pass",
                                         boundaries=SIZE_BUCKETS)
        self.sentences = Counter("linkner_ner_sentences_total", "sentences through the NER model")
        self.queue_wait = Histogram("linkner_ner_queue_seconds", "seconds an NER call waited for its batch to "
                                    "start", boundaries=LATENCY_BUCKETS_S)

    def batch(self, requests: int, sentences: int, waits_s: list[float]) -> None:
        self.batch_requests.observe(requests)
        self.batch_sentences.observe(sentences)
        self.sentences.inc(sentences)
        for wait in waits_s:
            self.queue_wait.observe(wait)

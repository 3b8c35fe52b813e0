"""Keeping a replica's log readable under overload: Ray Serve logs a warning for every call it
refuses for backpressure, which under sustained overload is a line per request."""

from __future__ import annotations

from linkner.telemetry import RepeatedLineLimiter, limit_repeated_lines

BACKPRESSURE_PREFIX = "Request dropped due to backpressure"
"""How Ray Serve's warning for a call refused beyond ``max_queued_requests`` starts."""


def limit_backpressure_warnings(interval_s: float = 10.0) -> RepeatedLineLimiter:
    """At most one of Ray Serve's backpressure warnings every ``interval_s`` seconds in this process
    (the metrics count every refusal: ``linkner_llm_failures_total{kind="overloaded"}`` for the LLM
    pool, ``linkner_requests_total{code="RESOURCE_EXHAUSTED"}`` for callers). Installed once per process."""
    return limit_repeated_lines("ray.serve", BACKPRESSURE_PREFIX, interval_s)

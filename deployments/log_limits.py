"""Keeping a replica's log readable under overload: Ray Serve logs a warning for every call it
refuses for backpressure, which under sustained overload is a line per request."""

from __future__ import annotations

import logging
import time

BACKPRESSURE_PREFIX = "Request dropped due to backpressure"
"""How Ray Serve's warning for a call refused beyond ``max_queued_requests`` starts."""


class RepeatedLineLimiter(logging.Filter):
    """Lets through at most one record starting with ``prefix`` every ``interval_s`` seconds; the
    next one that passes says how many were held back meanwhile. Other records pass untouched."""

    def __init__(self, prefix: str, interval_s: float = 10.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval_s = interval_s
        self.held = 0
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            self.held += 1
            return False
        if self.held:
            record.msg, record.args = f"{message} ({self.held} more like it since the last such line)", ()
        self._last, self.held = now, 0
        return True


def limit_backpressure_warnings(interval_s: float = 10.0) -> RepeatedLineLimiter:
    """At most one of Ray Serve's backpressure warnings every ``interval_s`` seconds in this process
    (the metrics count every refusal: ``linkner_llm_failures_total{kind="overloaded"}`` for the LLM
    pool, ``linkner_requests_total{code="RESOURCE_EXHAUSTED"}`` for callers). Installed once per process."""
    logger = logging.getLogger("ray.serve")
    for existing in logger.filters:
        if isinstance(existing, RepeatedLineLimiter) and existing.prefix == BACKPRESSURE_PREFIX:
            return existing
    limiter = RepeatedLineLimiter(BACKPRESSURE_PREFIX, interval_s)
    logger.addFilter(limiter)
    return limiter

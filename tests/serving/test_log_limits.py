"""Ray Serve's per-refusal backpressure warning is held to one line every few seconds."""

from __future__ import annotations

import logging

from deployments.log_limits import BACKPRESSURE_PREFIX, limit_backpressure_warnings
from linkner.telemetry import RepeatedLineLimiter


def warning(message: str) -> logging.LogRecord:
    return logging.LogRecord("ray.serve", logging.WARNING, __file__, 1, message, (), None)


def test_one_backpressure_line_passes_per_interval_and_the_next_counts_the_rest(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("linkner.telemetry.time.monotonic", lambda: clock[0])
    limiter = RepeatedLineLimiter(BACKPRESSURE_PREFIX, interval_s=10.0)
    refused = f"{BACKPRESSURE_PREFIX} (num_queued_requests=4, max_queued_requests=4)."
    assert limiter.filter(warning(refused))
    assert [limiter.filter(warning(refused)) for _ in range(5)] == [False] * 5
    assert limiter.filter(warning("Replica started."))  # other lines are never held
    clock[0] += 10.5
    record = warning(refused)
    assert limiter.filter(record) and record.getMessage().endswith("(5 more like it since the last such line)")
    assert not limiter.filter(warning(refused))


def test_the_limiter_is_installed_once_on_ray_serves_logger(caplog) -> None:
    logger = logging.getLogger("ray.serve")
    first = limit_backpressure_warnings()
    try:
        assert limit_backpressure_warnings() is first
        assert sum(isinstance(f, RepeatedLineLimiter) for f in logger.filters) == 1
        with caplog.at_level(logging.WARNING, logger="ray.serve"):
            for _ in range(20):
                logger.warning(f"{BACKPRESSURE_PREFIX} (num_queued_requests=1, max_queued_requests=1).")
        assert len([r for r in caplog.records if r.getMessage().startswith(BACKPRESSURE_PREFIX)]) == 1
    finally:
        logger.removeFilter(first)

"""The one load generator (benchmarks.load) against a bare server of the contract: the plain stub's
closed loop and the project client's ClosedLoad count every call, and LoadStats reads them right."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from types import SimpleNamespace

import pytest

from benchmarks.grpc_floor import bare_server
from benchmarks.load import ClosedLoad, LoadStats, closed_loop


@pytest.fixture(scope="module")
def bare_target():
    from serve.ports import free_port

    context = multiprocessing.get_context("spawn")
    port, ready = free_port(), context.Event()
    server = context.Process(target=bare_server, args=(port, ready, False), daemon=True)
    server.start()
    assert ready.wait(60), "the bare server did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()


def test_the_closed_loop_counts_answers_words_and_statuses(bare_target) -> None:
    result = asyncio.run(closed_loop(bare_target, ["a b c", "d e"], [3, 2], concurrency=4, seconds=1.0))
    assert set(result["statuses"]) == {"OK"} and result["answered"] == result["statuses"]["OK"] > 10
    assert result["words_per_s"] * result["seconds"] == pytest.approx(
        sum([3, 2][i % 2] for i in range(result["answered"])))  # the texts in turn, every answer's words
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["linked"] == 0 and result["degraded"] == {}


def test_closed_load_calls_through_the_client_until_stopped(bare_target) -> None:
    with ClosedLoad(SimpleNamespace(target=bare_target), clients=3, timeout_s=5.0) as load:
        time.sleep(1.0)
        stats = load.stop()
    summary = stats.summary()
    assert stats.ok > 10 and summary["failed"] == 0 and summary["invalid"] == 0 and stats.retried == 0
    assert stats.sent == stats.ok and len(stats.latencies_s) == len(stats.done_at) == stats.ok
    assert stats.statuses == {"OK": stats.ok}


def test_load_stats_rate_and_recovery() -> None:
    stats = LoadStats(done_at=[0.5 * t for t in range(20)] + [10.0 + 0.1 * t for t in range(100)])
    assert stats.rate(0.0, 10.0) == 2.0 and stats.rate(10.0, 20.0) == 10.0
    # the first 2 s window at 80% of 10/s starts at 9.5 (16 answers: one before the jump, 15 after), and every later one
    assert stats.recovered_after(fault_at=5.0, baseline=10.0) == pytest.approx(4.5)
    assert stats.recovered_after(fault_at=5.0, baseline=100.0) is None
    stats.failed["UNAVAILABLE"] += 2
    assert stats.statuses == {"UNAVAILABLE": 2} and stats.summary()["failed_by_status"] == {"UNAVAILABLE": 2}

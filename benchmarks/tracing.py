"""Tracing overhead: served throughput at 32 concurrent gRPC callers with tracing on (every
request sampled, OTLP/gRPC export to a local receiver in its own process) against tracing off, in
one run on one Ray instance. Two identical applications (local path: the LLM pool off, so requests
take milliseconds and tracing's share is largest) are measured in alternating rounds (off, on,
on, off, ...) so drift on a shared machine hits both. Target: traced >= 0.95 x untraced.

Then one linked request (every span sent to the embedded LLM through the transformers backend)
carrying a W3C traceparent is traced, and its spans are drawn as a waterfall PNG.

    python -m benchmarks.tracing [--quick] [--seconds 6] [--rounds 3] [--concurrency 32]

Writes ``benchmarks/results/tracing.json``, ``tracing.md`` and ``trace-waterfall.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported

from benchmarks.common import argument_parser, markdown_table, write_results  # noqa: E402
from benchmarks.load import closed_loop, warm_up  # noqa: E402
from linkner.paths import PROJECT_ROOT  # noqa: E402
from serve.ports import free_port  # noqa: E402

TRACE_ID = "7bf92f3577b34da6a3ce929d0e0e4739"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, llm=True, data_dir=True, sentences=500, out="tracing.json",
                             quick="4 s rounds, 2 per mode, 300 sentences (~2-3 min)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per measured round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, alternating")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per forward pass")
    parser.add_argument("--no-waterfall", action="store_true")
    parser.add_argument("--waterfall-only", action="store_true", help="skip the throughput rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.sentences = 4.0, 2, 300
    return args


def app_args(args: argparse.Namespace, telemetry: dict[str, Any], llm: bool = False) -> dict[str, Any]:
    """An application on a gRPC port of its own (``config["server"]["port"]``)."""
    config: dict[str, Any] = {
        "server": {"port": free_port()},
        "ner": {"checkpoint": str(args.model), "threads": args.threads},
        "llm_pool": {"enabled": False}, "telemetry": telemetry}
    if llm:
        config["llm_pool"] = {"enabled": True, "llm": {"backend": "transformers", "model": str(args.llm),
                                                       "mode": "letter", "threads": 1}}
        config["router"] = {"use_calibration": False}
    return config


def start_receiver(port: int, spans: Path) -> subprocess.Popen:
    """The OTLP receiver in its own process (as a collector would be), keeping the waterfall's trace."""
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "tests" / "otlp_receiver.py"), "--port", str(port),
                                "--out", str(spans), "--only-trace", TRACE_ID],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and "receiver on" in process.stdout.readline()
    return process


def measure(targets: dict[str, str], texts: list[str], words: list[int], args: argparse.Namespace
            ) -> list[dict[str, Any]]:
    """Alternating rounds of the ``untraced`` and ``traced`` applications at ``targets``."""
    from protos.linkner.v1 import linkner_pb2 as pb

    options = pb.Options(policy="none")
    for app in ("untraced", "traced"):
        asyncio.run(warm_up(targets[app], texts, options, calls=32))
    rows = []
    for round_ in range(args.rounds):
        for mode in (("untraced", "traced") if round_ % 2 == 0 else ("traced", "untraced")):
            result = asyncio.run(closed_loop(targets[mode], texts, words, args.concurrency, args.seconds, options))
            result.update(mode=mode, round=round_)
            print(f"round {round_} {mode:9} {result['requests_per_s']:7.1f} req/s  p50 {result['p50_ms']:6.1f} ms  "
                  f"p99 {result['p99_ms']:6.1f} ms  {result['statuses']}", file=sys.stderr)
            rows.append(result)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    modes = {}
    for mode in ("untraced", "traced"):
        mine = [row for row in rows if row["mode"] == mode]
        seconds = sum(row["seconds"] for row in mine)
        answered = sum(row["answered"] for row in mine)
        modes[mode] = {"requests_per_s": answered / seconds, "answered": answered, "seconds": seconds,
                       "p50_ms_median": sorted(row["p50_ms"] for row in mine)[len(mine) // 2],
                       "p99_ms_median": sorted(row["p99_ms"] for row in mine)[len(mine) // 2],
                       "errors": sum(v for row in mine for k, v in row["statuses"].items() if k != "OK")}
    ratio = modes["traced"]["requests_per_s"] / modes["untraced"]["requests_per_s"]
    return {"modes": modes, "traced_vs_untraced": ratio, "target": 0.95, "meets_target": ratio >= 0.95}


def waterfall(args: argparse.Namespace, receiver_endpoint: str, spans: Path) -> dict[str, Any]:
    """One linked request (budget 1.0: every span to the LLM) in the caller's trace, drawn as a PNG."""
    import grpc
    from ray import serve

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc
    from serve.app import build_app
    from scripts.trace_waterfall import draw, load_spans

    telemetry = {"exporter": "otlp", "otlp_endpoint": receiver_endpoint, "export_delay_ms": 200}
    started = time.monotonic()
    linked = app_args(args, telemetry, llm=True)
    serve.run(build_app(linked), name="linked", route_prefix="/linked")
    target = f"127.0.0.1:{linked['server']['port']}"
    print(f"linked app up in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    text = "Peter Blackburn of the European Commission spoke in Brussels about German beef."
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.LinkNERStub(channel)
        stub.Recognize(pb.RecognizeRequest(text=text, options=pb.Options(policy="none")),
                       metadata=[("application", "linked")], timeout=120)  # warm
        print(f"warm at {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        reply = stub.Recognize(pb.RecognizeRequest(text=text, options=pb.Options(policy="budget", budget=1.0)),
                               timeout=120, metadata=[("application", "linked"),
                                                      ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")])
    print(f"linked request answered at {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {span["name"] for span in load_spans(spans, TRACE_ID)} if spans.exists() else set()
        if {"linkner.v1.LinkNER/Recognize", "linkner.llm.classify", "linkner.ner.batch"} <= names:
            break
        time.sleep(0.5)
    trace = load_spans(spans, TRACE_ID)
    png = draw(trace, args.out.with_name("trace-waterfall.png"),
               f"one linked request: {len(reply.entities)} entities, {reply.llm_spans} spans to the LLM "
               f"(SmolLM2-135M, transformers, CPU); {len(trace)} spans")
    return {"png": str(png.relative_to(PROJECT_ROOT)), "spans": len(trace), "llm_spans": reply.llm_spans,
            "total_ms": reply.timings.total_ms, "trace_id": TRACE_ID}


def markdown(report: dict[str, Any]) -> str:
    modes = report["summary"]["modes"]
    lines = [f"Tracing overhead, {report['concurrency']} concurrent gRPC callers, local path, "
             f"{report['rounds']} alternating rounds of {report['seconds_per_round']:.0f} s per mode "
             f"({report['machine']})", "",
             markdown_table(["tracing", "requests/s", "p50 ms (median of rounds)", "p99 ms (median of rounds)",
                             "errors"],
                            [(label, f"{modes[mode]['requests_per_s']:.1f}", f"{modes[mode]['p50_ms_median']:.1f}",
                              f"{modes[mode]['p99_ms_median']:.1f}", modes[mode]["errors"])
                             for mode, label in (("untraced", "off"),
                                                 ("traced", "on: sampled 1.0, OTLP/gRPC to a local receiver"))],
                            "lrrrr")]
    ratio = report["summary"]["traced_vs_untraced"]
    lines += ["", f"traced / untraced throughput: **{ratio:.3f}** (target >= 0.95: "
                  f"{'met' if ratio >= 0.95 else 'NOT met'}); spans received: {report.get('spans_received', '?')}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    from ray import serve

    from linkner.data.readers import read_dataset
    from serve.app import build_app

    sentences = [s for s in read_dataset(args.data_dir / "test.txt") if len(s) > 3][: args.sentences]
    texts = [" ".join(s.tokens) for s in sentences]
    words = [len(s) for s in sentences]
    spans_file = args.out.with_name("trace-waterfall.jsonl")
    spans_file.unlink(missing_ok=True)
    receiver_port = free_port()
    receiver = start_receiver(receiver_port, spans_file)
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False, num_cpus=8,
             object_store_memory=256 * 1024 * 1024, _metrics_export_port=free_port())
    report: dict[str, Any] = {"concurrency": args.concurrency, "rounds": args.rounds,
                              "seconds_per_round": args.seconds, "sentences": len(texts), "threads": args.threads,
                              "model": str(args.model),
                              "machine": f"{os.cpu_count()} CPU cores shared with other work, CPU only"}
    try:
        serve.start(proxy_location="Disabled")
        endpoint = f"http://127.0.0.1:{receiver_port}"
        apps = {"untraced": app_args(args, {"exporter": "none"}),
                "traced": app_args(args, {"exporter": "otlp", "otlp_endpoint": endpoint, "sampler_ratio": 1.0})}
        for name, config in apps.items():
            serve.run(build_app(config), name=name, route_prefix=f"/{name}")
        targets = {name: f"127.0.0.1:{config['server']['port']}" for name, config in apps.items()}
        if not args.waterfall_only:
            report["rounds_measured"] = measure(targets, texts, words, args)
            report["summary"] = summary(report["rounds_measured"])
        if not args.no_waterfall:
            serve.delete("untraced")
            serve.delete("traced")
            report["waterfall"] = waterfall(args, endpoint, spans_file)
    finally:
        serve.shutdown()
        ray.shutdown()
        receiver.terminate()
        out, _ = receiver.communicate(timeout=30)
        report["spans_received"] = int(out.split("received ")[1].split()[0]) if "received " in out else None
    write_results(args.out, report, markdown(report) if "summary" in report else json.dumps(report.get("waterfall")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

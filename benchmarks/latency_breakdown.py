"""Where a single caller's latency goes: one gRPC caller, local path, every request traced.

For each configuration (Ray started afresh with its environment), the app is deployed (callers dial the
ingress's own gRPC server) with tracing sampled at 1.0 to an OTLP receiver in its own process; one caller sends
``--requests`` CoNLL-2003 test sentences as raw text one after another, each with its own W3C
``traceparent``. Each request's spans are cut into stages:

- ``model``: the forward pass's span (``linkner.ner.batch``: the predictor on the call's
  sentences; embedded, in a worker process of the ingress);
- ``NER: waiting for its turn``: ``linkner.ner.request`` minus the pass's span (a pool replica
  runs one pass at a time: the call waits for the one before it);
- ``Ray call ingress <-> NER``: ``linkner.recognize`` (the ingress awaiting the NER pool) minus
  ``linkner.ner.request`` (with ``ner.placement: embedded`` there is no Ray call: what is left is
  the ingress's coalescing and the task switch);
- ``ingress: our code``: the server span minus ``linkner.recognize`` (parsing, segmenting, routing,
  building the response);
- ``gRPC transport and server framework``: what the caller measured minus the server span.

The same sentences go through the in-process predictor one at a time for the reference line
(issue 8's target: p50 at 1 caller <= in-process + 5 ms). Prints a markdown table of medians,
writes JSON and a stacked-bar PNG.

    python -m benchmarks.latency_breakdown [--requests 200] [--configs pool,embedded,embedded+optimized]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported

from benchmarks import serving  # noqa: E402 (Ray started as the serving benchmark starts it, the shipped config)
from benchmarks.common import argument_parser, markdown_table, write_results  # noqa: E402
from linkner.paths import PROJECT_ROOT  # noqa: E402
from serve.ports import free_port  # noqa: E402

SERVER_SPAN = "linkner.v1.LinkNER/Recognize"
STAGES = ("model", "NER: waiting for its turn", "Ray call ingress <-> NER", "ingress: our code",
          "gRPC transport and server framework")
CONFIGS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    # name: (environment of Ray's processes, ner settings); embedded: one pass per core in worker processes
    "pool": ({}, {"placement": "pool"}),
    "pool+optimized": ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {"placement": "pool"}),
    "embedded": ({}, {"placement": "embedded"}),
    "embedded+optimized": ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {"placement": "embedded"}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, llm=True, data_dir=True, sentences=200, out="latency_breakdown.json")
    parser.add_argument("--requests", type=int, default=200, help="sequential traced requests per configuration")
    parser.add_argument("--configs", default="pool,embedded", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per forward pass (and in process)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    return args


def stages_of(spans: list[dict[str, Any]], client_ms: float) -> dict[str, float] | None:
    """One request's stages in ms (None when one of its spans is missing)."""
    by_name = {span["name"]: (span["end_ns"] - span["start_ns"]) / 1e6 for span in spans}
    needed = (SERVER_SPAN, "linkner.recognize", "linkner.ner.request", "linkner.ner.batch")
    if not all(name in by_name for name in needed):
        return None
    server, recognize, request, batch = (by_name[name] for name in needed)
    return {"model": batch, "NER: waiting for its turn": request - batch,
            "Ray call ingress <-> NER": recognize - request, "ingress: our code": server - recognize,
            "gRPC transport and server framework": client_ms - server, "total": client_ms}


def inprocess_ms(args: argparse.Namespace, sentences: list[list[str]]) -> list[float]:
    """The in-process predictor, one sentence at a time: ms per call."""
    import torch

    from linkner.model.predictor import SpanPredictor

    torch.set_num_threads(args.threads)
    predictor = SpanPredictor.from_checkpoint(args.model, "cpu")
    for sentence in sentences[:20]:
        predictor.predict([sentence])  # warm
    times = []
    for sentence in sentences:
        begin = time.perf_counter()
        predictor.predict([sentence])
        times.append(1000 * (time.perf_counter() - begin))
    return times


def measure_config(name: str, args: argparse.Namespace, texts: list[str], receiver: str, spans_file: Path
                   ) -> dict[str, Any]:
    """Start Ray with the configuration's environment, deploy, send the traced requests, stop Ray."""
    import grpc
    import ray
    from ray import serve

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc
    from serve.app import build_app

    environment, ner = CONFIGS[name]
    port = free_port()
    env = {"PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1", **environment}
    saved = {key: os.environ.get(key) for key in env}
    client_ms: dict[str, float] = {}
    try:
        serving.start_local_serve(env)
        telemetry = {"exporter": "otlp", "otlp_endpoint": receiver, "sampler_ratio": 1.0}
        serve.run(build_app({"server": {"port": port},
                             "ner": {"checkpoint": str(args.model), "threads": args.threads, **ner},
                             "llm_pool": {"enabled": False}, "telemetry": telemetry}),
                  name=serving.APP, route_prefix=f"/{serving.APP}",
                  logging_config=serving.shipped_application().get("logging_config"))
        target = f"127.0.0.1:{port}"
        options = pb.Options(policy="none")
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.LinkNERStub(channel)
            for text in texts[:20]:
                stub.Recognize(pb.RecognizeRequest(text=text, options=options), timeout=60)  # warm
            for index in range(args.requests):
                trace_id = f"{index + 1:08x}{os.urandom(12).hex()}"
                metadata = [("traceparent", f"00-{trace_id}-{os.urandom(8).hex()}-01")]
                begin = time.perf_counter()
                stub.Recognize(pb.RecognizeRequest(text=texts[index % len(texts)], options=options),
                               metadata=metadata, timeout=30)
                client_ms[trace_id] = 1000 * (time.perf_counter() - begin)
        time.sleep(3)  # the batch span processors' last export
    finally:
        # not serve.shutdown(): the traced ingress's graceful shutdown can wait for minutes here, and
        # this Ray instance is ours alone, so stopping it ends every replica
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    spans: dict[str, list[dict[str, Any]]] = {}
    for line in spans_file.read_text(encoding="utf-8").splitlines():
        span = json.loads(line)
        if span["trace_id"] in client_ms:
            spans.setdefault(span["trace_id"], []).append(span)
    rows = [row for trace_id, ms in client_ms.items() if (row := stages_of(spans.get(trace_id, []), ms))]
    return {"config": name, "environment": environment, "ner": ner, "requests": len(client_ms),
            "complete_traces": len(rows), "median_ms": {key: statistics.median(row[key] for row in rows)
                                                        for key in (*STAGES, "total")},
            "p90_total_ms": sorted(row["total"] for row in rows)[int(0.9 * len(rows))] if rows else None}


def markdown(report: dict[str, Any]) -> str:
    reference = report["inprocess_median_ms"]
    rows = [(row["config"], *(f"{row['median_ms'][s]:.1f}" for s in STAGES), f"**{row['median_ms']['total']:.1f}**",
             f"{row['median_ms']['total'] - reference:+.1f}") for row in report["configs"]]
    return "\n".join([
        f"One caller, local path, {report['requests']} sequential traced requests per configuration, "
        f"the ingress's own gRPC server, {report['threads']} torch thread(s); medians in ms. In process, the predictor "
        f"one sentence at a time: **{reference:.1f} ms**.", "",
        markdown_table(["configuration", *STAGES, "total (p50)", "total - in process"], rows,
                       "l" + "r" * (len(STAGES) + 2))])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["configs"]
    names = ["in process"] + [row["config"] for row in rows]
    figure, axis = plt.subplots(figsize=(9, 1.2 + 0.6 * len(names)))
    axis.barh(0, report["inprocess_median_ms"], color="tab:blue")
    colors = ["tab:blue", "tab:cyan", "tab:orange", "tab:green", "tab:gray"]
    for y, row in enumerate(rows, start=1):
        left = 0.0
        for stage, color in zip(STAGES, colors):
            value = max(0.0, row["median_ms"][stage])
            axis.barh(y, value, left=left, color=color, label=stage if y == 1 else None)
            left += value
    axis.axvline(report["inprocess_median_ms"] + 5, color="black", linestyle="--", linewidth=1,
                 label="target: in process + 5 ms")
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    axis.set_xlabel("median latency per request (ms), one caller")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(names) < 4 else -0.2), ncol=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from linkner.data.readers import read_dataset

    sentences = [s.tokens for s in read_dataset(args.data_dir / "test.txt") if len(s) > 3][: args.sentences]
    texts = [" ".join(tokens) for tokens in sentences]
    spans_file = args.out.with_name("latency_breakdown-spans.jsonl")
    spans_file.parent.mkdir(parents=True, exist_ok=True)
    spans_file.unlink(missing_ok=True)
    receiver_port = free_port()
    receiver = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "tests" / "otlp_receiver.py"), "--port",
                                 str(receiver_port), "--out", str(spans_file)], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None and "receiver on" in receiver.stdout.readline()
    report: dict[str, Any] = {"requests": args.requests, "threads": args.threads, "model": str(args.model),
                              "machine": f"{os.cpu_count()} CPU cores shared with other work, CPU only"}
    try:
        inprocess = inprocess_ms(args, [list(tokens) for tokens in sentences][: args.requests])
        report["inprocess_median_ms"] = statistics.median(inprocess)
        report["configs"] = []
        for name in args.configs.split(","):
            print(f"[{name}] measuring", file=sys.stderr, flush=True)
            report["configs"].append(measure_config(name, args, texts, f"http://127.0.0.1:{receiver_port}",
                                                    spans_file))
            print(json.dumps(report["configs"][-1]["median_ms"]), file=sys.stderr, flush=True)
    finally:
        receiver.terminate()
        receiver.communicate(timeout=30)
        spans_file.unlink(missing_ok=True)
    png = args.out.with_suffix(".png")
    plot(report, png)
    report["png"] = str(png.relative_to(PROJECT_ROOT)) if png.is_relative_to(PROJECT_ROOT) else str(png)
    write_results(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: the served path over real gRPC against the in-process ceiling, in one run.

Rows, on the same CoNLL-2003 test sentences (sent as raw text) and the same torch thread count:
the in-process rows of ``benchmarks.inprocess`` (bare encoder forward pass, predictor one at a
time and batched, Hugging Face token-classification pipeline), then the served path over gRPC at
each concurrency (closed loop: every caller sends its next request when the last one is
answered, after a jittered 50-150 ms back-off when it was refused with RESOURCE_EXHAUSTED, as a
well-behaved gRPC client does), local path and with LLM routing at a fixed share: requests/s, sentences/s, words/s,
p50 / p95 / p99, errors by status, and process CPU per request by part of the stack (from
``/proc`` via psutil: the ingress with its model worker processes, the NER replicas, the LLM pool,
Ray's controller and core daemons). Callers dial the ingress replica's own gRPC server (Serve runs
without its proxies, as shipped). The embedded model runs as the ingress runs it: one forward pass
per ``--threads`` cores at once, each in a worker process (``deployments.ner.embedded_passes``);
the in-process rows then also run that many calls at once in worker processes. The load generator
is a plain ``grpc.aio`` stub that sends only a gRPC deadline, as any language's client would
(``benchmarks.load.closed_loop``).

    python -m benchmarks.serving [--quick] [--seconds 15] [--concurrency 1,8,32,64,128] [--llm-share 0.1]
    python -m benchmarks.serving --compare-placement --compare-without-ray   # the other placement, no Ray
    python -m benchmarks.serving --compare-runtime   # the local path with the encoder in float32 too

Writes ``benchmarks/results/serving.json`` (keys ``served_vs_inprocess_c32`` and
``stack_cpu_ms_per_request`` among them) and ``serving.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported

from benchmarks.common import argument_parser, markdown_table, write_results  # noqa: E402
from benchmarks.load import APP, Endpoint, closed_loop, endpoint, keep_calling, percentile, warm_up  # noqa: E402
from linkner.model.runtime import DEFAULT_RUNTIME  # noqa: E402
from linkner.paths import PROJECT_ROOT  # noqa: E402
from serve.ports import free_port  # noqa: E402

INPROCESS_BATCH = 16  # sentences per predictor call in the in-process rows
WITHOUT_RAY = "ingress_without_ray"  # the benchmark module that runs the ingress class without Ray


def queue_limits(text: str) -> tuple[int, int]:
    """``--llm-queue``'s ``ONGOING,QUEUED`` (e.g. ``4,4``; ``16,-1``: an unbounded queue)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().lstrip("-").isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give ONGOING,QUEUED, e.g. 4,4 (QUEUED -1: unbounded)")
    return int(parts[0]), int(parts[1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, llm=True, data_dir=True, sentences=1000, out="serving.json",
                             quick="3 s per level, 300 sentences, levels 1,32,64 (< 3 min)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32,64,128")
    parser.add_argument("--llm-concurrency", default="1,8,32,64,128", help="levels run with LLM routing ('' skips)")
    parser.add_argument("--llm-share", type=float, default=0.1, help="budget policy share routed to the LLM")
    parser.add_argument("--llm-queue", default=None, metavar="ONGOING,QUEUED", type=queue_limits,
                        help="llm_pool.deployment's max_ongoing_requests and max_queued_requests (default: "
                             "serve_config.yaml's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per forward pass (and in process)")
    parser.add_argument("--throughput-optimized", action="store_true",
                        help="start Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    parser.add_argument("--ner-placement", choices=["pool", "embedded"], default=None,
                        help="where the local model runs on the measured path (default: serve_config.yaml's "
                             "ner.placement)")
    parser.add_argument("--compare-placement", action="store_true",
                        help="also measure the local path with the other ner.placement, side by side")
    parser.add_argument("--compare-runtime", action="store_true",
                        help="also the local path with the encoder in float32 (ner.runtime: eager)")
    parser.add_argument("--compare-security", action="store_true",
                        help="also measure the local path with a bearer token required and with TLS on the port")
    parser.add_argument("--compare-without-ray", action="store_true",
                        help="also measure the local path with the same ingress class in a plain process on a "
                             "grpc.aio server of its own, no Ray (benchmarks.ingress_without_ray)")
    parser.add_argument("--no-inprocess", action="store_true", help="skip the in-process rows")
    parser.add_argument("--long-document-words", type=int, default=5000,
                        help="short requests' latency while 2 callers send documents of this many words, with "
                             "and without chunking documents for the NER batches (0 skips)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.sentences, args.concurrency, args.llm_concurrency = 3.0, 300, "1,32,64", "8"
    if args.ner_placement is None:
        args.ner_placement = shipped_ner_settings()["placement"]
    return args


def forward_passes(args: argparse.Namespace) -> int:
    """Forward passes the measured local model runs at once: the embedded model's, derived from
    this machine's cores and ``--threads`` as the ingress derives them; one for the pool (a replica
    runs one at a time)."""
    from deployments.ner import embedded_passes
    from linkner.service.config import NERConfig

    return embedded_passes(NERConfig(threads=args.threads)) if args.ner_placement == "embedded" else 1


def shipped_application() -> dict[str, Any]:
    """The LinkNER application of the shipped serve_config.yaml (what the main job serves)."""
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text(encoding="utf-8"))
    return next(app for app in config["applications"] if app.get("import_path") == "serve.app:build_app")


def shipped_ner_settings() -> dict[str, Any]:
    """The ``ner`` settings of the shipped serve_config.yaml (NERConfig's defaults where it names none)."""
    from linkner.service.config import NERConfig

    return NERConfig(**shipped_application().get("args", {}).get("ner", {})).model_dump()


def stack_processes() -> dict[str, list[int]]:
    """PIDs of this run's serving stack by part: everything Ray started below this process (Serve
    actors carry their role in their process title, ``ray::ServeReplica:APP:DEPLOYMENT``)."""
    import psutil

    parts: dict[str, list[int]] = {}
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(process.cmdline()) or process.name()
        except psutil.Error:
            continue
        if "ServeController" in title:
            part = "serve controller"
        elif "ServeReplica:" in title:
            part = deployment_of(title)
        elif WITHOUT_RAY in title:
            part = "ingress"  # the ingress class in a plain process (--compare-without-ray)
        elif "VLLM" in title:
            part = "llm"  # the engine's own processes, started by the LLM replica
        elif title.startswith("ray::"):
            continue  # idle workers
        elif "multiprocessing" in title:
            part = owner_part(process)  # a replica's worker process (the embedded model's passes)
        else:
            part = "ray daemons"
        parts.setdefault(part, []).append(process.pid)
    return parts


def deployment_of(title: str) -> str:
    """The deployment of a replica's process title (``ray::ServeReplica:APP:DEPLOYMENT``, with
    ``.METHOD`` appended while the replica runs a method, e.g. ``ingress.check_health``)."""
    return title.split("ServeReplica:", 1)[1].split()[0].rsplit(":", 1)[-1].split(".", 1)[0]


def owner_part(process: Any) -> str:
    """The deployment whose replica started ``process`` ("ray daemons" when none did)."""
    for parent in process.parents():
        title = " ".join(parent.cmdline())
        if "ServeReplica:" in title:
            return deployment_of(title)
        if WITHOUT_RAY in title:
            return "ingress"
    return "ray daemons"


def per_part(parts: dict[str, list[int]], measure: Any) -> dict[str, float]:
    """``measure(process)`` summed over each part's processes (those gone meanwhile count 0)."""
    import psutil

    totals = {}
    for part, pids in parts.items():
        total = 0.0
        for pid in pids:
            try:
                total += measure(psutil.Process(pid))
            except psutil.Error:
                pass
        totals[part] = total
    return totals


def cpu_seconds(parts: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) each part of the stack has used."""
    return per_part(parts, lambda process: sum(process.cpu_times()[:2]))


def resident_mb(parts: dict[str, list[int]]) -> dict[str, float]:
    """Resident memory (RSS, MB) of each part of the stack (a replica's worker processes included)."""
    return per_part(parts, lambda process: process.memory_info().rss / 2**20)


def run_level(target: "str | Endpoint", texts: list[str], words: list[int], concurrency: int, seconds: float,
              options: Any) -> dict[str, Any]:
    import psutil

    parts = stack_processes()
    before, client_before, machine_before = cpu_seconds(parts), psutil.Process().cpu_times(), psutil.cpu_times()
    result = asyncio.run(closed_loop(target, texts, words, concurrency, seconds, options))
    after, client_after, machine_after = cpu_seconds(parts), psutil.Process().cpu_times(), psutil.cpu_times()
    result["resident_mb"] = resident_mb(parts)
    answered = max(1, result["answered"] + sum(v for k, v in result["statuses"].items() if k != "OK"))
    result["cpu_ms_per_request"] = {part: 1000 * (after[part] - before[part]) / answered for part in parts}
    result["cpu_ms_per_request_total"] = sum(result["cpu_ms_per_request"].values())
    # the load generator shares the machine: its CPU, and how busy all cores were, bound what the stack can reach
    client_s = (client_after.user + client_after.system) - (client_before.user + client_before.system)
    result["client_cpu_ms_per_request"] = 1000 * client_s / answered
    idle = (machine_after.idle + getattr(machine_after, "iowait", 0.0)) - (machine_before.idle
                                                                           + getattr(machine_before, "iowait", 0.0))
    result["machine_busy_cores"] = (sum(machine_after) - sum(machine_before) - idle) / result["seconds"]
    return result


async def mixed_load(target: str, texts: list[str], long_text: str, short_callers: int, long_callers: int,
                     seconds: float) -> dict[str, Any]:
    """Short requests from ``short_callers`` while ``long_callers`` keep sending one long document
    each: the short requests' latency is what chunking documents for the NER batches protects."""
    import grpc

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    options = pb.Options(policy="none")
    short: list[float] = []
    long: list[float] = []
    shorts = [pb.RecognizeRequest(text=text, options=options) for text in texts]
    # the short callers first, each its own share of the texts; then the long ones, one document each
    requests = [shorts[i::short_callers] for i in range(short_callers)]
    requests += [[pb.RecognizeRequest(text=long_text, options=options)]] * long_callers
    sent = [0] * len(requests)
    stop_at = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LinkNERStub(channel)

        async def call(number: int) -> None:
            mine = requests[number]
            begin = time.perf_counter()
            await stub.Recognize(mine[sent[number] % len(mine)], timeout=120)
            (short if number < short_callers else long).append(time.perf_counter() - begin)
            sent[number] += 1

        await keep_calling(len(requests), call, lambda: time.perf_counter() < stop_at)
    short.sort()
    long.sort()
    return {"short_requests": len(short), "short_p50_ms": 1000 * percentile(short, 0.5),
            "short_p99_ms": 1000 * percentile(short, 0.99), "long_documents": len(long),
            "long_p50_ms": 1000 * percentile(long, 0.5)}


def measured_levels(name: str, address: "str | Endpoint", texts: list[str], words: list[int], levels: str, seconds: float,
                    options: Any) -> list[dict[str, Any]]:
    """Warm ``address`` up, then one row per concurrency level of ``levels`` ("1,8,32")."""
    asyncio.run(warm_up(address, texts, options))
    print(f"{name} ({endpoint(address).address}): stack processes {stack_processes()}", flush=True)
    rows = []
    for concurrency in [int(c) for c in levels.split(",")]:
        row = {"path": name, **run_level(address, texts, words, concurrency, seconds, options)}
        print(json.dumps({k: v for k, v in row.items() if k != "cpu_ms_per_request"}), flush=True)
        rows.append(row)
    return rows


def start_local_serve(env: dict[str, str]) -> None:
    """A Ray instance of this process's own on loopback, ``env`` in every worker (its ``RAY_*`` keys
    also here, where Ray reads them at start), and Serve without its proxies (as shipped: callers
    dial the ingress replicas' own server)."""
    import ray
    from ray import serve

    os.environ.update({key: value for key, value in env.items() if key.startswith("RAY_")})
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024 * 1024, runtime_env={"env_vars": env})
    serve.start(proxy_location="Disabled")


def serve_app(args: argparse.Namespace, llm: bool, router: dict[str, Any] | None = None,
              ner: dict[str, Any] | None = None, server: dict[str, Any] | None = None) -> str:
    """Run the application (``server`` settings added to its own gRPC server's); returns the
    address of that server."""
    from ray import serve

    from serve.app import build_app

    app_args = application_args(args, llm, router, ner)
    app_args["server"].update(server or {})
    serve.run(build_app(app_args), name=APP, route_prefix=f"/{APP}",
              logging_config=shipped_application().get("logging_config"))  # as shipped: no access log
    return f"127.0.0.1:{app_args['server']['port']}"


def secured_configurations() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, server settings, what the caller sends) of ``--compare-security``: a token required, and
    TLS with a self-signed certificate made here (openssl)."""
    import secrets
    import subprocess
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="linkner-bench-"))
    token = secrets.token_hex(16)
    (folder / "token").write_text(token)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    return [("local, token required", {"auth_token_file": str(folder / "token")}, {"token": token}),
            ("local, TLS", {"tls_cert": str(folder / "cert.pem"), "tls_key": str(folder / "key.pem")},
             {"ca": (folder / "cert.pem").read_bytes()})]


def application_args(args: argparse.Namespace, llm: bool, router: dict[str, Any] | None = None,
                     ner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The LinkNER application's args for one measured configuration: ``args``' settings, with
    ``router`` and ``ner`` overriding keys of those sections."""
    app_args: dict[str, Any] = {
        "server": {"port": free_port()},
        "ner": {"checkpoint": str(args.model), "threads": args.threads, "placement": args.ner_placement,
                **(ner or {})},
        "llm_pool": {"enabled": False},
    }
    if llm:  # the shipped LLM pool (its model from --llm, its queue from --llm-queue when given)
        pool = shipped_application().get("args", {}).get("llm_pool", {})
        app_args["llm_pool"] = {**pool, "enabled": True, "llm": {**pool.get("llm", {}), "model": str(args.llm)}}
        if args.llm_queue:
            ongoing, queued = args.llm_queue
            app_args["llm_pool"]["deployment"] = {**pool.get("deployment", {}), "max_ongoing_requests": ongoing,
                                                  "max_queued_requests": queued}
        app_args["router"] = {"use_calibration": False}
    app_args.setdefault("router", {}).update(router or {})
    return app_args


@contextmanager
def ingress_without_ray(app_args: dict[str, Any], count_passes: bool = False) -> Iterator[tuple[Any, str]]:
    """``benchmarks.ingress_without_ray`` serving ``app_args`` in a process of its own: yields the
    process and the address it answers on, once its model has loaded; stops it on the way out.
    With ``count_passes``, :func:`passes_so_far` reads its passes and their sentences."""
    import subprocess

    from benchmarks import ingress_without_ray as module

    port = free_port()
    command = [sys.executable, "-m", module.__name__, "--port", str(port), "--app-args", json.dumps(app_args),
               *(["--count-passes"] if count_passes else [])]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        for line in server.stdout:  # the model loads in its worker processes first
            if line.strip() == module.READY:
                break
        else:
            raise RuntimeError(f"{WITHOUT_RAY}.py ended before it answered (exit code {server.wait()})")
        yield server, f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)


def passes_so_far(server: Any) -> tuple[int, int]:
    """Forward passes and their sentences so far, of an :func:`ingress_without_ray` server started
    with ``count_passes``."""
    import signal

    from benchmarks import ingress_without_ray as module

    server.send_signal(signal.SIGUSR1)
    for line in server.stdout:
        if line.startswith(module.PASSES):
            passes, sentences = line.split()[1:]
            return int(passes), int(sentences)
    raise RuntimeError(f"{WITHOUT_RAY}.py ended (exit code {server.wait()})")


def rows_without_ray(args: argparse.Namespace, texts: list[str], words: list[int]) -> list[dict[str, Any]]:
    """The local path's levels against the same ingress class in a plain process with a gRPC server
    of its own (``benchmarks.ingress_without_ray``), once Ray has shut down."""
    from protos.linkner.v1 import linkner_pb2 as pb

    if args.ner_placement != "embedded":
        return []
    with ingress_without_ray(application_args(args, False)) as (_, address):
        return measured_levels("local, the same ingress without Ray", address, texts, words, args.concurrency,
                               args.seconds, pb.Options(policy="none"))


def long_document(texts: list[str], words: int) -> str:
    """Test sentences run together into one document of about ``words`` words."""
    parts, count = [], 0
    for text in texts * (1 + words // max(1, sum(len(t.split()) for t in texts))):
        if count >= words:
            break
        parts.append(text)
        count += len(text.split())
    return "\n".join(parts)


def served_rows(args: argparse.Namespace, texts: list[str], words: list[int],
                report_long: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import ray
    from ray import serve

    from protos.linkner.v1 import linkner_pb2 as pb

    env = {"PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    if args.throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    # Ray Serve settings in the caller's environment (e.g. RAY_SERVE_LOG_TO_STDERR=0) reach Ray's processes
    env.update({key: value for key, value in os.environ.items() if key.startswith("RAY_SERVE_")})
    start_local_serve(env)
    rows = []
    try:
        plans = [("local", False, pb.Options(policy="none"), args.concurrency)]
        if args.llm_concurrency and args.llm.is_dir():
            plans.append((f"LLM {100 * args.llm_share:g}%", True, pb.Options(policy="budget", budget=args.llm_share),
                          args.llm_concurrency))
        for path, llm, options, levels in plans:
            rows += measured_levels(path, serve_app(args, llm), texts, words, levels, args.seconds, options)
            serve.delete(APP)
        comparisons = []  # (path, ner settings overridden) of the local path's other configurations
        if args.compare_placement:
            other = "pool" if args.ner_placement == "embedded" else "embedded"
            comparisons.append((f"local, NER {'embedded in the ingress' if other == 'embedded' else 'pool'}",
                                {"placement": other}))
        if args.compare_runtime:
            comparisons.append(("local, encoder float32 (runtime eager)", {"runtime": "eager"}))
        if args.compare_security:
            for name, server, caller in secured_configurations():
                rows += measured_levels(name, Endpoint(serve_app(args, False, server=server), **caller), texts, words,
                                        args.concurrency, args.seconds, pb.Options(policy="none"))
                serve.delete(APP)
        for name, ner in comparisons:
            rows += measured_levels(name, serve_app(args, False, ner=ner), texts, words, args.concurrency, args.seconds,
                                    pb.Options(policy="none"))
            serve.delete(APP)
        if args.long_document_words:
            long_text = long_document(texts, args.long_document_words)
            for chunk in (256, 10**7):
                target = serve_app(args, False, {"max_words_per_ner_call": chunk,
                                                 "limits": {"max_words": 10**6, "max_chars": 10**7}})
                asyncio.run(warm_up(target, texts, pb.Options(policy="none")))
                row = {"chunk_words": chunk if chunk < 10**7 else None, "long_document_words": len(long_text.split()),
                       **asyncio.run(mixed_load(target, texts, long_text, 16, 2, args.seconds))}
                print(json.dumps(row), flush=True)
                report_long.append(row)
                serve.delete(APP)
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['sentences']} CoNLL-2003 test sentences as raw text; forward passes and in-process rows with "
             f"{report['threads']} torch thread(s); {report['seconds_per_level']:.0f} s per level; "
             f"Ray Serve throughput-optimized: {report['throughput_optimized']}; callers dial the ingress's own "
             f"gRPC server; local model (`local` rows): {local_model(report)}", ""]
    if report.get("inprocess"):
        lines += [markdown_table(["in-process", "sentences/s", "ms / sentence"],
                                 [(row["description"], f"{row['sentences_per_s']:.1f}", f"{row['ms_per_sentence']:.1f}")
                                  for row in report["inprocess"]]), ""]
    parts = ("ingress", "ner", "llm", "ray daemons")
    served = []
    for row in report["served"]:
        errors = ", ".join(f"{k} {v}" for k, v in row["statuses"].items() if k != "OK") or "none"
        degraded = ", ".join(f"{k or 'other'} {v}" for k, v in row.get("degraded", {}).items()) or "none"
        cpu = row["cpu_ms_per_request"]
        served.append((row["path"], row["concurrency"], f"{row['requests_per_s']:.1f}", f"{row['words_per_s']:.0f}",
                       f"{row['p50_ms']:.0f}", f"{row['p95_ms']:.0f}", f"{row['p99_ms']:.0f}", errors, degraded,
                       f"{row.get('linked_per_s', 0.0):.2f}", ", ".join(f"{cpu.get(p, 0.0):.1f}" for p in parts),
                       f"{row.get('client_cpu_ms_per_request', float('nan')):.1f}",
                       f"{row.get('machine_busy_cores', float('nan')):.2f}"))
    lines.append(markdown_table(
        ["served over gRPC", "callers", "requests/s", "words/s", "p50 ms", "p95 ms", "p99 ms", "errors",
         "answered degraded", "linked by the LLM / s", "stack CPU ms / request (ingress, ner, llm, ray)",
         "load generator CPU ms / request", "busy cores"], served))
    last_of_path = {row["path"]: row for row in report["served"] if row.get("resident_mb")}
    if last_of_path:
        lines += ["", markdown_table(
            ["served", "resident MB: ingress (with its worker processes), ner, llm, ray daemons"],
            [(path, ", ".join(f"{row['resident_mb'].get(p, 0.0):.0f}" for p in parts))
             for path, row in last_of_path.items()])]
    if report.get("long_documents"):
        lines += ["", markdown_table(
            ["documents to NER", "short requests (16 callers) p50 ms", "p99 ms", "long documents (2 callers) answered",
             "p50 ms"],
            [(f"in chunks of {row['chunk_words']} words" if row["chunk_words"] else "whole (no chunks)",
              f"{row['short_p50_ms']:.0f}", f"{row['short_p99_ms']:.0f}", row["long_documents"],
              f"{row['long_p50_ms']:.0f}") for row in report["long_documents"]])]
    lines.append("")
    for key in ("served_vs_inprocess_c32", "served_vs_inprocess_one_pass_c32", "served_vs_hf_pipeline_c32",
                "stack_cpu_ms_per_request", "c64_vs_c32", "c128_vs_c32", "p50_c1_minus_inprocess_ms",
                "other_placement_vs_local_c32", "local_vs_without_ray_c32", "without_ray_vs_inprocess_c32",
                "token_vs_local_c32", "tls_vs_local_c32"):
        if report.get(key) is not None:
            lines.append(f"- {key}: {report[key]:.2f}")
    return "\n".join(lines)


def local_model(report: dict[str, Any]) -> str:
    """Where the ``local`` rows' model ran, and how many forward passes at once."""
    if report.get("ner_placement") == "embedded":
        return f"embedded, {report.get('passes', 1)} forward pass(es) at once in worker processes"
    return "NER pool, one forward pass at a time per replica"


def summarise(report: dict[str, Any]) -> None:
    """The ratios the targets are stated in."""
    local = {row["concurrency"]: row for row in report["served"] if row["path"] == "local"}
    inprocess = {row["name"]: row for row in report.get("inprocess", [])}
    c32 = local.get(32)
    batched = inprocess.get("batched")
    # with several passes at once the model uses that many worker processes: compare with the same in process
    same_threads = inprocess.get("batched-processes", batched)
    if c32 and batched:
        report["served_vs_inprocess_c32"] = c32["sentences_per_s"] / same_threads["sentences_per_s"]
        report["served_vs_inprocess_one_pass_c32"] = c32["sentences_per_s"] / batched["sentences_per_s"]
        model_cpu_ms = batched["ms_per_sentence"]  # one torch thread: its wall time is its CPU time
        report["stack_cpu_ms_per_request"] = c32["cpu_ms_per_request_total"] - model_cpu_ms
    if c32 and inprocess.get("hf-pipeline"):
        report["served_vs_hf_pipeline_c32"] = c32["sentences_per_s"] / inprocess["hf-pipeline"]["sentences_per_s"]
    other = {row["concurrency"]: row for row in report["served"] if row["path"].startswith("local, NER ")}
    if c32 and other.get(32):
        report["other_placement_vs_local_c32"] = other[32]["requests_per_s"] / c32["requests_per_s"]
    without_ray = {row["concurrency"]: row for row in report["served"] if row["path"].endswith("without Ray")}
    if c32 and without_ray.get(32):
        report["local_vs_without_ray_c32"] = c32["requests_per_s"] / without_ray[32]["requests_per_s"]
        if batched:
            report["without_ray_vs_inprocess_c32"] = (without_ray[32]["sentences_per_s"]
                                                      / same_threads["sentences_per_s"])
    for key, path in (("token_vs_local_c32", "local, token required"), ("tls_vs_local_c32", "local, TLS")):
        secured = {row["concurrency"]: row for row in report["served"] if row["path"] == path}
        if c32 and secured.get(32):
            report[key] = secured[32]["requests_per_s"] / c32["requests_per_s"]
    for level in (64, 128):
        if c32 and local.get(level):
            report[f"c{level}_vs_c32"] = local[level]["requests_per_s"] / c32["requests_per_s"]
    one = inprocess.get("one")
    if local.get(1) and one:
        report["p50_c1_minus_inprocess_ms"] = local[1]["p50_ms"] - one["ms_per_sentence"]


def inprocess_rows(args: argparse.Namespace, sentences: list) -> list[dict[str, Any]]:
    """The in-process rows of ``benchmarks.inprocess`` on the same sentences and thread count."""
    import torch

    from benchmarks.inprocess import hf_token_head, run_benchmark

    torch.set_num_threads(args.threads)
    hf_folder = hf_token_head(args.data_dir / "train.txt", 300 if args.quick else 2000, show=True)
    rows, _ = run_benchmark(args.model, sentences, INPROCESS_BATCH, 1 if args.quick else 3, hf_folder,
                            passes=forward_passes(args), runtime=DEFAULT_RUNTIME)  # what the local path serves
    return [row.summary() for row in rows]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from linkner.data.readers import read_dataset

    sentences = [s for s in read_dataset(args.data_dir / "test.txt") if len(s) > 3][: args.sentences]
    texts = [" ".join(s.tokens) for s in sentences]
    words = [len(s) for s in sentences]
    report: dict[str, Any] = {"sentences": len(sentences), "threads": args.threads, "seconds_per_level": args.seconds,
                              "throughput_optimized": args.throughput_optimized,
                              "ner_placement": args.ner_placement, "passes": forward_passes(args),
                              "compare_without_ray": args.compare_without_ray, "model": str(args.model)}
    if not args.no_inprocess:
        report["inprocess"] = inprocess_rows(args, [s.tokens for s in sentences])
    report["long_documents"] = []
    report["served"] = served_rows(args, texts, words, report["long_documents"])
    if args.compare_without_ray:
        report["served"] += rows_without_ray(args, texts, words)
    summarise(report)
    write_results(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

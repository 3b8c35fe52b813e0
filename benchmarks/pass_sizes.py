"""How many sentences a forward pass carries under a closed-loop load, and what the model costs a
sentence at that size.

The serving benchmark compares served throughput with the in-process predictor running 16 sentences
a pass. Served, a pass carries what arrived while the passes before it ran: with two passes at once
(one per core on 2 cores) and C callers, about a third of the callers wait in the queue, a third
run in each pass. This measures both sides in one run:
- the shipped configuration's ingress without Ray (``benchmarks.ingress_without_ray``, its
  passes counted) at each level of callers: requests/s and sentences per pass;
- in process, as many passes at once in worker processes as the ingress runs (one per ``threads``
  cores, ``deployments.ner.embedded_passes``) at fixed pass sizes, among them each level's pass
  size rounded: sentences/s, the median of interleaved repeats;
- CPU by process: the worker processes' a sentence (served and in process at the same pass size)
  and the ingress process's own a request.

    python -m benchmarks.pass_sizes [--concurrency 8,32,64] [--seconds 10] [--sizes 4,8,12,16,24] [--quick]

Prints a table, writes ``benchmarks/results/pass_sizes.json`` / ``.md`` and a plot ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmarks import serving  # the ingress without Ray, the shipped config, CPU by process
from benchmarks.common import argument_parser, markdown_table, write_results
from benchmarks.load import closed_loop, warm_up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, llm=True, data_dir=True, sentences=1000, out="pass_sizes.json",
                             quick="300 sentences, 3 s a level, sizes 8,16, 1 repeat")
    parser.add_argument("--concurrency", default="8,32,64", help="closed-loop callers per level")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--sizes", default="4,8,12,16,24", help="in process: sentences per pass measured "
                        "(each level's own pass size is added)")
    parser.add_argument("--repeats", type=int, default=3, help="in process: interleaved repeats (median)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.seconds, args.sizes, args.repeats = min(args.sentences, 300), 3.0, "8,16", 1
    return args


def ner_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The shipped ``ner`` settings with this run's model (embedded, passes in worker processes),
    and the application args the ingress without Ray is started with."""
    from serve.app import validate_config

    app_args = serving.application_args(serving.parse_args(["--model", str(args.model)]), llm=False)
    return validate_config(app_args).ner, app_args


def served_levels(app_args: dict[str, Any], texts: list[str], words: list[int], levels: list[int],
                  seconds: float) -> list[dict[str, Any]]:
    """Each level of callers against the ingress without Ray: requests/s, sentences per pass, and
    CPU: the worker processes' a sentence, the ingress process's own a request."""
    import psutil

    from protos.linkner.v1 import linkner_pb2 as pb

    options = pb.Options(policy="none")
    rows = []
    with serving.ingress_without_ray(app_args, count_passes=True) as (server, address):
        asyncio.run(warm_up(address, texts, options, calls=32))
        parts = {"ingress": [server.pid],
                 "workers": [worker.pid for worker in psutil.Process(server.pid).children(recursive=True)]}
        for callers in levels:
            passes_before, sentences_before = serving.passes_so_far(server)
            cpu_before = serving.cpu_seconds(parts)
            result = asyncio.run(closed_loop(address, texts, words, callers, seconds, options))
            cpu_after = serving.cpu_seconds(parts)
            passes_after, sentences_after = serving.passes_so_far(server)
            passes, sentences = max(1, passes_after - passes_before), max(1, sentences_after - sentences_before)
            row = {"callers": callers, "requests_per_s": result["requests_per_s"], "p50_ms": result["p50_ms"],
                   "p99_ms": result["p99_ms"], "statuses": result["statuses"], "passes": passes,
                   "sentences_per_pass": sentences / passes,
                   "worker_cpu_ms_per_sentence": 1000 * (cpu_after["workers"] - cpu_before["workers"]) / sentences,
                   "ingress_cpu_ms_per_request": (1000 * (cpu_after["ingress"] - cpu_before["ingress"])
                                                  / max(1, result["answered"]))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def inprocess_sizes(config: Any, passes: int, sentences: list[list[str]], sizes: list[int], repeats: int
                    ) -> tuple[dict[int, float], dict[int, float]]:
    """Sentences/s of ``passes`` at once in as many worker processes, ``size`` sentences a pass
    (median of ``repeats`` interleaved rounds), and the workers' CPU ms a sentence (over all rounds)."""
    import psutil
    import torch

    from benchmarks.inprocess import measure, process_passes
    from deployments.ner import predictor_options
    from linkner.model.processes import PredictorProcesses, PredictorSpec

    torch.set_num_threads(config.threads)
    spec = PredictorSpec(config.checkpoint, config.device, config.threads, predictor_options(config))
    processes = PredictorProcesses(spec, passes)
    workers = {"workers": [worker.pid for worker in psutil.Process().children(recursive=True)]}
    worker_cpu = {size: 0.0 for size in sizes}

    def run(size: int) -> None:
        before = serving.cpu_seconds(workers)["workers"]
        process_passes(processes, sentences, size, passes)
        worker_cpu[size] += serving.cpu_seconds(workers)["workers"] - before

    runs = {size: (f"{size} sentences a pass", lambda size=size: run(size)) for size in sizes}
    try:
        warm_up = {"warm-up": lambda: process_passes(processes, sentences[:64], 16, passes)}
        rows = measure(runs, sentences, repeats, warm_up)
    finally:
        processes.close()
    for row in rows:
        print(f"in process, {row.description}: {row.sentences_per_s:.1f} sentences/s", flush=True)
    cpu_ms = {size: 1000 * seconds / (repeats * len(sentences)) for size, seconds in worker_cpu.items()}
    return {row.name: row.sentences_per_s for row in rows}, cpu_ms


def markdown(report: dict[str, Any]) -> str:
    inprocess = {int(size): value for size, value in report["inprocess_sentences_per_s"].items()}
    worker_ms = {int(size): value for size, value in report["inprocess_worker_cpu_ms_per_sentence"].items()}
    served = []
    for row in report["served"]:
        size, rate = row["pass_size"], row["requests_per_s"]
        served.append((row["callers"], f"{rate:.1f}", f"{row['sentences_per_pass']:.1f}",
                       f"{inprocess[size]:.1f} ({size} a pass)", f"{rate / inprocess[size]:.2f}",
                       f"{rate / inprocess[16]:.2f}", f"{row['worker_cpu_ms_per_sentence']:.2f}, {worker_ms[size]:.2f}",
                       f"{row['ingress_cpu_ms_per_request']:.2f}"))
    return "\n".join([report["header"], "", markdown_table(
        ["callers", "requests/s (ingress without Ray)", "sentences per pass",
         "in process at that pass size, sentences/s", "served / in process at that size", "served / in process at 16",
         "workers' CPU ms a sentence: served, in process at that size", "ingress process CPU ms a request"], served),
        "", markdown_table(
        [f"in process: sentences a pass ({report.get('passes', 2)} passes at once, worker processes)",
         "sentences/s", "workers' CPU ms a sentence"],
        [(size, f"{value:.1f}", f"{worker_ms[size]:.2f}") for size, value in sorted(inprocess.items())])])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inprocess = sorted((int(size), value) for size, value in report["inprocess_sentences_per_s"].items())
    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.plot([size for size, _ in inprocess], [value for _, value in inprocess], "o-",
              label=f"in process, {report.get('passes', 2)} passes in worker processes")
    for row in report["served"]:
        axes.plot(row["sentences_per_pass"], row["requests_per_s"], "s", color="tab:red")
        axes.annotate(f"{row['callers']} callers", (row["sentences_per_pass"], row["requests_per_s"]),
                      textcoords="offset points", xytext=(6, -12))
    axes.plot([], [], "s", color="tab:red", label="served (ingress without Ray): requests/s at its pass size")
    axes.set_xlabel("sentences per forward pass")
    axes.set_ylabel("sentences/s")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("Throughput against the sentences a pass carries")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from deployments.ner import embedded_passes
    from linkner.data.readers import read_dataset

    config, app_args = ner_config(args)
    sentences = [list(s.tokens) for s in read_dataset(args.data_dir / "test.txt") if len(s) > 3][: args.sentences]
    texts = [" ".join(sentence) for sentence in sentences]
    words = [len(sentence) for sentence in sentences]
    served = served_levels(app_args, texts, words, [int(c) for c in args.concurrency.split(",")], args.seconds)
    for row in served:
        row["pass_size"] = max(1, round(row["sentences_per_pass"]))
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {16} | {row["pass_size"] for row in served})
    passes = embedded_passes(config)  # as many as the ingress runs on this machine
    inprocess, worker_cpu_ms = inprocess_sizes(config, passes, sentences, sizes, args.repeats)
    report = {"header": (f"{len(sentences)} CoNLL-2003 test sentences, raw text; the shipped ingress without Ray "
                         f"({passes} passes at once in worker processes, {config.threads} torch "
                         f"thread(s) each), {args.seconds:.0f} s a level; in process the same worker processes, "
                         f"median of {args.repeats} interleaved round(s); model `{args.model}`"),
              "passes": passes, "served": served,
              "inprocess_sentences_per_s": {str(size): value for size, value in inprocess.items()},
              "inprocess_worker_cpu_ms_per_sentence": {str(size): ms for size, ms in worker_cpu_ms.items()}}
    by_callers = {row["callers"]: row for row in served}
    if 32 in by_callers:
        row = by_callers[32]
        report["sentences_per_pass_c32"] = row["sentences_per_pass"]
        report["c32_vs_inprocess_at_its_pass_size"] = row["requests_per_s"] / inprocess[row["pass_size"]]
        report["c32_vs_inprocess_at_16"] = row["requests_per_s"] / inprocess[16]
        report["inprocess_16_vs_c32_pass_size"] = inprocess[16] / inprocess[row["pass_size"]]
        report["c32_worker_cpu_served_vs_inprocess"] = (row["worker_cpu_ms_per_sentence"]
                                                        / worker_cpu_ms[row["pass_size"]])
    write_results(args.out, report, markdown(report))
    plot(report, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":  # the worker processes are spawned: they import this module
    sys.exit(main())

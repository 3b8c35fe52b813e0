"""Encoder runtimes side by side on CPU: float32 eager PyTorch, the shipped int8 (the encoder exported to
ONNX and quantized by ONNX Runtime), PyTorch's dynamic int8 with several choices of layers kept in
float32, ONNX Runtime float32, and OpenVINO float32 where it is installed (the ``runtimes`` extra). For each: sentences/s of the in-process predictor on the same test
sentences (packed rows, one thread and two), dev and test F1, AUROC of ``confidence`` and
``learned`` on test, the worker's resident memory and its load time. Each runtime is scored in a
process of its own, so memory and load time are its alone. Speed is measured side by side: every
runtime loaded in one process (one per thread count), the test sentences in calls of 16 (as the
served path makes them), each call run by every runtime in turn, the order rotating from call to
call, twice over; so the machine's other load, which drifts over minutes on a shared host, falls on
all of them alike.

The runtime to ship is the fastest that beats float32 within 0.3 dev F1 and 0.01 ``learned`` AUROC
of it (on test: the error detector is fitted on dev); the table says whether that is the shipped
one (``ner.runtime: int8``, ONNX Runtime).

    python -m benchmarks.runtimes [--model artifacts/models/default] [--quick]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import argument_parser, markdown_table, write_results

SHIPPED = "int8, ONNX Runtime"  # ner.runtime: int8 (linkner.model.runtime)
# PyTorch's dynamic int8 (its x86 kernels), with the layers kept float32 as regular expressions
TORCH_INT8: dict[str, tuple[str, ...]] = {
    "PyTorch int8 (every layer)": (),
    "PyTorch int8 (last FFN output float)": (r"^encoder\.layer\.5\.output\.dense$",),
    "PyTorch int8 (FFN outputs float)": (r"^encoder\.layer\.\d+\.output\.dense$",),
    "PyTorch int8 (last layer float)": (r"^encoder\.layer\.5\.",),
}
EXPORTED = ("ONNX Runtime fp32", "OpenVINO fp32")  # the same exported graph, not quantized
IN_TORCH = ("float32", SHIPPED, *TORCH_INT8)  # the runtimes also timed with 2 threads
F1_TOLERANCE, AUROC_TOLERANCE = 0.003, 0.01  # what a runtime may lose against float32 on dev
CALL_SENTENCES = 16  # sentences a predictor call holds while timed, as the served path's passes do
PASSES = 2  # times over the test sentences, side by side


def parse_args():
    parser = argument_parser(__doc__, model=True, data_dir=True, sentences=1000, out="runtimes",
                             quick="300 speed sentences, only float32 and the shipped int8, no dev")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads per run")
    parser.add_argument("--variant", help=argparse_hidden())
    parser.add_argument("--side-by-side", help=argparse_hidden())
    parser.add_argument("--speed-threads", type=int, default=1, help=argparse_hidden())
    return parser.parse_args()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


# ------------------------------------------------------------------ one runtime, in its own process


def load_variant(model: Path, variant: str):
    """A predictor for ``variant`` (float32, the shipped int8, a PyTorch int8 choice, or an exported
    float32 graph)."""
    from linkner.model.predictor import SpanPredictor

    if variant in ("float32", SHIPPED):
        return SpanPredictor.from_checkpoint(model, device="cpu", runtime="eager" if variant == "float32" else "int8")
    predictor = SpanPredictor.from_checkpoint(model, device="cpu")
    if variant in TORCH_INT8:
        predictor.model.encoder = torch_int8(predictor.model.encoder, TORCH_INT8[variant])
    elif variant in EXPORTED:
        predictor.model.encoder = exported_float(predictor, variant)
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return predictor


def torch_int8(encoder, kept_float: tuple[str, ...]):
    """``encoder`` with its linear layers (but those ``kept_float`` matches) in PyTorch's dynamic int8."""
    import re
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    patterns = [re.compile(pattern) for pattern in kept_float]
    layers = {name: per_channel_dynamic_qconfig for name, module in encoder.named_modules()
              if isinstance(module, torch.nn.Linear) and not any(p.search(name) for p in patterns)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(encoder, layers, dtype=torch.qint8, inplace=False)


def exported_float(predictor, variant: str):
    """The predictor's encoder exported as the int8 runtime exports it, not quantized, run by ONNX
    Runtime or OpenVINO behind the encoder's call."""
    import torch

    from linkner.model.onnx_encoder import OnnxEncoder
    from linkner.model.runtime import export_encoder

    graph = export_encoder(predictor.model.encoder, Path(tempfile.mkdtemp(prefix="linkner-runtime-")) / "fp32.onnx")
    config, first = predictor.model.encoder.config, predictor.first_position
    if not variant.startswith("OpenVINO"):
        return OnnxEncoder(graph, config, first)
    import openvino

    compiled = openvino.Core().compile_model(str(graph), "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()

    class OpenVINOEncoder(OnnxEncoder):
        """The same graph and call, run by OpenVINO (on the threads it was compiled for)."""

        def session(self, threads: int):
            return self

        def run(self, _outputs, feeds):
            return [request.infer(feeds)[0]]

    return OpenVINOEncoder(graph, config, first)


def measure_variant(args) -> dict[str, Any]:
    """Load ``args.variant`` and score it on one thread; what the parent reads."""
    import torch

    from linkner.data.readers import conll_documents, read_dataset
    from linkner.evaluation.scores import entity_scores, uncertainty_quality
    from linkner.uncertainty.fitting import wrong_labels

    torch.set_num_threads(1)
    started = time.perf_counter()
    predictor = load_variant(args.model, args.variant)
    load_s = time.perf_counter() - started
    test_path = args.data_dir / "test.txt"
    test, test_documents = read_dataset(test_path), conll_documents(test_path)
    result: dict[str, Any] = {"variant": args.variant, "load_s": load_s}
    estimators = [name for name in ("confidence", "learned") if name in predictor.estimators]
    sets = {"test": (test, test_documents)}
    if not args.quick:
        dev_path = args.data_dir / "dev.txt"
        sets["dev"] = (read_dataset(dev_path), conll_documents(dev_path))
    for name, (data, documents) in sets.items():
        predictions = predictor.predict([s.tokens for s in data], estimators, documents)
        scores = entity_scores([s.entities for s in data], [[e.span for e in p] for p in predictions])
        wrong = wrong_labels(data, predictions)
        result[f"{name}_f1"] = scores.micro.f1
        for estimator in estimators:
            values = [e.uncertainty[estimator] for p in predictions for e in p]
            result[f"{name}_auroc_{estimator}"] = uncertainty_quality(estimator, values, (wrong == 0).tolist()).auroc
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def measure_side_by_side(args) -> dict[str, float]:
    """Sentences/s of each of ``args.side_by_side``'s variants (a JSON list), all loaded here, on
    ``args.speed_threads`` threads: each call of ``CALL_SENTENCES`` test sentences run by every
    variant in turn, the order rotating from call to call, ``PASSES`` times over."""
    import torch

    from linkner.data.readers import read_dataset

    torch.set_num_threads(args.speed_threads)
    variants = json.loads(args.side_by_side)
    predictors = {variant: load_variant(args.model, variant) for variant in variants}
    tokens = [sentence.tokens for sentence in read_dataset(args.data_dir / "test.txt")[: args.sentences]]
    calls = [tokens[start : start + CALL_SENTENCES] for start in range(0, len(tokens), CALL_SENTENCES)]
    for predictor in predictors.values():  # warm
        predictor.predict(calls[0])
    seconds = dict.fromkeys(variants, 0.0)
    for _ in range(PASSES):
        for index, call in enumerate(calls):
            turn = index % len(variants)
            for variant in variants[turn:] + variants[:turn]:
                started = time.perf_counter()
                predictors[variant].predict(call)
                seconds[variant] += time.perf_counter() - started
    return {variant: PASSES * len(tokens) / spent for variant, spent in seconds.items()}


# ------------------------------------------------------------------ the comparison


def available_variants(quick: bool) -> list[str]:
    if quick:
        return ["float32", SHIPPED]
    variants = [*IN_TORCH, EXPORTED[0]]
    try:
        __import__("openvino")
        variants.append(EXPORTED[1])
    except ImportError:
        print(f"{EXPORTED[1]}: openvino is not installed (the runtimes extra); skipped", file=sys.stderr)
    return variants


def run_child(args, task: list[str], threads: int, label: str) -> Any:
    """Run this module in a child process for ``task`` (its hidden options) on ``threads``; what it prints."""
    command = [sys.executable, "-m", "benchmarks.runtimes", *task, "--speed-threads", str(threads),
               "--model", str(args.model), "--data-dir", str(args.data_dir), "--sentences", str(args.sentences)]
    command += ["--quick"] if args.quick else []
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} ({threads} threads) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def choose_runtime(rows: dict[str, dict[str, Any]], threads: int) -> str | None:
    """The fastest runtime (at ``threads``) that beats float32 there, with dev F1 within
    ``F1_TOLERANCE`` and ``learned`` AUROC within ``AUROC_TOLERANCE`` of float32's. The AUROC is
    test's: the error detector was fitted on dev, so dev's is in-sample. None without scores, or
    when no runtime qualifies."""
    base = rows["float32"]
    if "dev_f1" not in base:
        return None
    fine = [name for name, row in rows.items() if name != "float32"
            and row["speed"][str(threads)] > base["speed"][str(threads)]
            and row["dev_f1"] >= base["dev_f1"] - F1_TOLERANCE
            and row.get("test_auroc_learned", 1.0) >= base.get("test_auroc_learned", 0.0) - AUROC_TOLERANCE]
    return max(fine, key=lambda name: rows[name]["speed"][str(threads)], default=None)


def markdown(report: dict[str, Any]) -> str:
    rows = report["variants"]
    threads = report["threads"]
    base = rows["float32"]["speed"]
    headers = ["runtime", *[f"sentences/s, {t} thread{'s' * (t > 1)}" for t in threads],
               *[f"x float32, {t}" for t in threads], "dev F1", "test F1", "test AUROC confidence",
               "test AUROC learned", "RSS MB", "load s"]

    def percent(value):
        return f"{100 * value:.2f}" if value is not None else ""

    def plain(value):
        return f"{value:.3f}" if value is not None else ""

    lines = []
    for name, row in rows.items():
        speeds = [row["speed"].get(str(t)) for t in threads]
        marker = " **(shipped)**" if name == report["shipped"] else ""
        lines.append([name + marker, *[f"{s:.0f}" if s else "" for s in speeds],
                      *[f"{s / base[str(t)]:.2f}" if s else "" for s, t in zip(speeds, threads)],
                      percent(row.get("dev_f1")), percent(row.get("test_f1")), plain(row.get("test_auroc_confidence")),
                      plain(row.get("test_auroc_learned")), f"{row['rss_mb']:.0f}", f"{row['load_s']:.1f}"])
    table = markdown_table(headers, lines, "l" + "r" * (len(headers) - 1))
    note = (f"\n\nModel `{report['model']}`, {report['sentences']} CoNLL-2003 test sentences (packed rows), "
            f"in calls of {CALL_SENTENCES}, every runtime in one process taking each call in turn ({PASSES} passes). Chosen (the fastest faster than float32 within {100 * F1_TOLERANCE:.1f} "
            f"dev F1 and {AUROC_TOLERANCE} test learned AUROC of it; the detector is fitted on dev): "
            f"{report['chosen_on_dev'] or 'none'}; shipped "
            f"(`ner.runtime: int8`): {report['shipped']}.")
    return table + note + "\n"


def main() -> int:
    args = parse_args()
    if args.variant:
        print(json.dumps(measure_variant(args)))
        return 0
    if args.side_by_side:
        print(json.dumps(measure_side_by_side(args)))
        return 0
    variants = available_variants(args.quick)
    rows: dict[str, dict[str, Any]] = {}
    for variant in variants:
        print(f"scoring {variant}", file=sys.stderr, flush=True)
        result = run_child(args, ["--variant", variant], 1, variant)
        rows[variant] = {"speed": {}, **{key: value for key, value in result.items() if key != "variant"}}
    for threads in args.threads:
        timed = [variant for variant in variants if threads == 1 or variant in IN_TORCH]
        print(f"timing {len(timed)} runtimes side by side, {threads} thread(s)", file=sys.stderr, flush=True)
        for variant, speed in run_child(args, ["--side-by-side", json.dumps(timed)], threads, "timing").items():
            rows[variant]["speed"][str(threads)] = speed
    report = {"model": args.model.name, "sentences": args.sentences, "threads": args.threads,
              "chosen_on_dev": choose_runtime(rows, args.threads[0]), "shipped": SHIPPED, "variants": rows}
    write_results(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

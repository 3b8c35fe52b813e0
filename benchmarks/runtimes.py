"""Encoder runtimes side by side on CPU: float32 eager PyTorch, PyTorch's dynamic int8 with several
choices of layers kept in float32, and, where installed, ONNX Runtime (float32 and dynamic int8)
and OpenVINO (float32). For each: sentences/s of the in-process predictor on the same test
sentences (packed rows, one thread and two), dev and test F1, AUROC of ``confidence`` and
``learned`` on test, the worker's resident memory and its load time. Each runtime runs in a process
of its own, twice in turn (the faster run counts), so memory and load time are its alone and the
machine's other load falls on all of them alike.

The int8 layers kept in float32 are chosen on dev: the fastest choice within 0.3 dev F1 and 0.01
``learned`` dev AUROC of float32. ``linkner.model.runtime.KEPT_FLOAT`` should name that choice;
the table says whether it does.

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

# name -> (runtime, layers kept float32 as regular expressions); the ONNX Runtime and OpenVINO ones
# swap the encoder for an exported graph (``--variant`` below)
INT8_CHOICES: dict[str, tuple[str, ...]] = {
    "int8 (every layer)": (),
    "int8 (last FFN output float)": (r"^encoder\.layer\.5\.output\.dense$",),
    "int8 (FFN outputs float)": (r"^encoder\.layer\.\d+\.output\.dense$",),
    "int8 (last layer float)": (r"^encoder\.layer\.5\.",),
}
EXPORTED = ("onnxruntime fp32", "onnxruntime int8", "openvino fp32")
F1_TOLERANCE, AUROC_TOLERANCE = 0.003, 0.01  # what the chosen int8 may lose against float32 on dev


def parse_args():
    parser = argument_parser(__doc__, model=True, data_dir=True, sentences=1000, out="runtimes",
                             quick="300 speed sentences, only float32 and the shipped int8, no dev")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads per run")
    parser.add_argument("--variant", help=argparse_hidden())
    parser.add_argument("--speed-threads", type=int, default=1, help=argparse_hidden())
    parser.add_argument("--skip-quality", action="store_true", help=argparse_hidden())
    return parser.parse_args()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


# ------------------------------------------------------------------ one runtime, in its own process


def load_variant(model: Path, variant: str):
    """A predictor for ``variant`` (float32, an int8 choice, or an exported runtime)."""
    from linkner.model.predictor import SpanPredictor
    from linkner.model.runtime import quantized_encoder

    if variant == "float32":
        return SpanPredictor.from_checkpoint(model, device="cpu")
    predictor = SpanPredictor.from_checkpoint(model, device="cpu")
    if variant in INT8_CHOICES:
        predictor.model.encoder = quantized_encoder(predictor.model.encoder, INT8_CHOICES[variant])
    elif variant in EXPORTED:
        predictor.model.encoder = exported_encoder(predictor, variant)
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return predictor


def exported_encoder(predictor, variant: str):
    """The predictor's encoder exported to ONNX (packed-row inputs: ids, positions, a 4-D boolean
    mask) and run by ONNX Runtime or OpenVINO, behind the encoder's call signature."""
    import numpy as np
    import torch

    encoder, first_position = predictor.model.encoder, predictor.first_position
    folder = Path(tempfile.mkdtemp(prefix="linkner-runtime-"))
    path = folder / "encoder.onnx"

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, position_ids, attention_mask):
            return self.encoder(input_ids=input_ids, position_ids=position_ids,
                                attention_mask=attention_mask).last_hidden_state

    ids = torch.full((1, 8), 1000)
    axes = {"input_ids": {0: "rows", 1: "width"}, "position_ids": {0: "rows", 1: "width"},
            "attention_mask": {0: "rows", 2: "width", 3: "width"}, "states": {0: "rows", 1: "width"}}
    torch.onnx.export(Graph().eval(), (ids, torch.arange(8).unsqueeze(0), torch.ones(1, 1, 8, 8, dtype=torch.bool)),
                      str(path), input_names=["input_ids", "position_ids", "attention_mask"],
                      output_names=["states"], dynamic_axes=axes, opset_version=17, dynamo=False)
    threads = torch.get_num_threads()
    if variant.startswith("openvino"):
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        run = lambda feeds: request.infer(feeds)[0]  # noqa: E731
    else:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic

        if variant.endswith("int8"):
            quantized = folder / "encoder-int8.onnx"
            quantize_dynamic(str(path), str(quantized), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
            path = quantized
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        run = lambda feeds: session.run(None, feeds)[0]  # noqa: E731

    class Exported(torch.nn.Module):
        config = encoder.config

        def forward(self, input_ids, attention_mask, position_ids=None):
            if attention_mask.dim() == 2:  # a padded batch: each sentence attends to its own sub-words
                position_ids = first_position + torch.arange(input_ids.size(1)).expand_as(input_ids)
                attention_mask = attention_mask.bool()[:, None, None, :].expand(-1, 1, input_ids.size(1), -1)
            feeds = {"input_ids": input_ids.numpy(), "position_ids": position_ids.numpy(),
                     "attention_mask": np.ascontiguousarray(attention_mask.numpy())}
            return type("Output", (), {"last_hidden_state": torch.from_numpy(np.asarray(run(feeds)))})

    return Exported()


def measure_variant(args) -> dict[str, Any]:
    """Load ``args.variant``, time it on the test sentences and score it; what the parent reads."""
    import torch

    from linkner.data.readers import conll_documents, read_dataset
    from linkner.evaluation.scores import entity_scores, uncertainty_quality
    from linkner.uncertainty.fitting import wrong_labels

    torch.set_num_threads(args.speed_threads)
    started = time.perf_counter()
    predictor = load_variant(args.model, args.variant)
    load_s = time.perf_counter() - started
    test_path = args.data_dir / "test.txt"
    test, test_documents = read_dataset(test_path), conll_documents(test_path)
    tokens = [sentence.tokens for sentence in test[: args.sentences]]
    predictor.predict(tokens[:64])
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        predictor.predict(tokens)
        best = min(best, time.perf_counter() - started)
    result: dict[str, Any] = {"variant": args.variant, "threads": args.speed_threads, "load_s": load_s,
                              "sentences_per_s": len(tokens) / best}
    if not args.skip_quality:
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


# ------------------------------------------------------------------ the comparison


def available_variants(quick: bool) -> list[str]:
    from linkner.model.runtime import KEPT_FLOAT

    shipped = next(name for name, kept in INT8_CHOICES.items() if kept == KEPT_FLOAT)
    if quick:
        return ["float32", shipped]
    variants = ["float32", *INT8_CHOICES]
    for variant, module in zip(EXPORTED, ("onnxruntime", "onnxruntime", "openvino")):
        try:
            __import__(module)
            variants.append(variant)
        except ImportError:
            print(f"{variant}: {module} is not installed; skipped", file=sys.stderr)
    return variants


def run_variant(args, variant: str, threads: int, quality: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.runtimes", "--variant", variant, "--speed-threads", str(threads),
               "--model", str(args.model), "--data-dir", str(args.data_dir), "--sentences", str(args.sentences)]
    command += [] if quality else ["--skip-quality"]
    command += ["--quick"] if args.quick else []
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} ({threads} threads) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def choose_int8(rows: dict[str, dict[str, Any]], threads: int) -> str | None:
    """The fastest int8 choice (at ``threads``) within the tolerances of float32 on dev (None
    without dev scores)."""
    base = rows["float32"]
    if "dev_f1" not in base:
        return None
    fine = [name for name in INT8_CHOICES if name in rows
            and rows[name]["dev_f1"] >= base["dev_f1"] - F1_TOLERANCE
            and rows[name].get("dev_auroc_learned", 1.0) >= base.get("dev_auroc_learned", 0.0) - AUROC_TOLERANCE]
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
            f"best of 2 runs in turn per runtime. int8 chosen on dev: {report['chosen_on_dev'] or 'n/a'}; "
            f"shipped (`KEPT_FLOAT`): {report['shipped']}.")
    return table + note + "\n"


def main() -> int:
    args = parse_args()
    if args.variant:
        print(json.dumps(measure_variant(args)))
        return 0
    from linkner.model.runtime import KEPT_FLOAT

    variants = available_variants(args.quick)
    rows: dict[str, dict[str, Any]] = {}
    for round_ in range(2):  # in turn, twice: the faster of the two counts
        for variant in variants:
            for threads in args.threads:
                if threads > 1 and variant not in ("float32", *INT8_CHOICES):
                    continue
                quality = round_ == 0 and threads == args.threads[0]
                print(f"round {round_ + 1}/2: {variant}, {threads} thread(s)", file=sys.stderr, flush=True)
                result = run_variant(args, variant, threads, quality)
                row = rows.setdefault(variant, {"speed": {}})
                row["speed"][str(threads)] = max(row["speed"].get(str(threads), 0.0), result["sentences_per_s"])
                for key, value in result.items():
                    if key not in ("sentences_per_s", "threads", "variant") and (quality or key not in row):
                        row[key] = value
    shipped = next(name for name, kept in INT8_CHOICES.items() if kept == KEPT_FLOAT)
    report = {"model": args.model.name, "sentences": args.sentences, "threads": args.threads,
              "chosen_on_dev": choose_int8(rows, args.threads[0]), "shipped": shipped, "variants": rows}
    write_results(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

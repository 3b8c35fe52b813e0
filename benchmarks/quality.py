"""Quality benchmark of local span models on CoNLL-2003: F1 (dev, test, per type), uncertainty
AUROC / ECE per estimator, training time and inference speed. Trains a model first when its
checkpoint is missing. Prints a markdown table; writes JSON, markdown and reliability PNGs.

    python -m benchmarks.quality --model artifacts/models/default [--model other ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.common import DEFAULT_MODEL, argument_parser, markdown_table, write_results
from linkner.data.readers import read_dataset
from linkner.evaluation.assessment import assess
from linkner.evaluation.scores import reliability_plot
from linkner.model.checkpoint import is_checkpoint, read_metadata
from linkner.model.predictor import SpanPredictor
from linkner.paths import PROJECT_ROOT
from linkner.uncertainty.names import available_estimators


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, data_dir=True, out_dir=True)
    parser.add_argument("--model", type=Path, action="append", help="checkpoint folder (repeatable)")
    parser.add_argument("--objective", default="cross_entropy", help="objective when a model must be trained")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--speed-sentences", type=int, default=1000, help="test sentences timed for speed")
    return parser.parse_args()


def ensure(model: Path, data_dir: Path, objective: str, threads: int | None) -> None:
    from linkner.model.training import TrainConfig, ensure_trained

    if not is_checkpoint(model):
        print(f"training {model} ({objective})", file=sys.stderr)
    ensure_trained(model, data_dir, TrainConfig(objective=objective, threads=threads))


def speed(predictor: SpanPredictor, sentences: list, estimators: list[str]) -> float:
    """Sentences per second for a batched pass (after one warm-up batch)."""
    tokens = [s.tokens for s in sentences]
    predictor.predict(tokens[:64], estimators)
    started = time.perf_counter()
    predictor.predict(tokens, estimators)
    return len(tokens) / (time.perf_counter() - started)


def benchmark(model: Path, args: argparse.Namespace) -> dict:
    import torch

    ensure(model, args.data_dir, args.objective, args.threads)
    predictor = SpanPredictor.from_checkpoint(model)
    estimators = available_estimators(predictor.model.config.objective == "evidential")
    dev = read_dataset(args.data_dir / "dev.txt")
    test = read_dataset(args.data_dir / "test.txt")
    reports = {name: assess(predictor, data, estimators) for name, data in (("dev", dev), ("test", test))}
    training = read_metadata(model).get("training", {})
    history = training.get("history", [])
    plot = reliability_plot(reports["test"].uncertainty, args.out_dir / f"reliability-{model.name}.png",
                            f"{model.name}: reliability on CoNLL-2003 test")
    return {
        "model": model.name,
        "objective": predictor.model.config.objective,
        "encoder": predictor.model.config.encoder,
        "threads": torch.get_num_threads(),
        "dev": reports["dev"].model_dump(),
        "test": reports["test"].model_dump(),
        "training_seconds": history[-1]["seconds"] if history else None,
        "best_epoch": training.get("epoch"),
        "epochs_run": len(history),
        "sentences_per_second": {
            "confidence": speed(predictor, test[: args.speed_sentences], ["confidence"]),
            "all_estimators": speed(predictor, test[: args.speed_sentences], estimators),
        },
        "reliability_plot": str(plot.relative_to(PROJECT_ROOT)) if plot.is_relative_to(PROJECT_ROOT) else str(plot),
    }


def markdown(results: list[dict]) -> str:
    models, estimators = [], []
    for r in results:
        per_type = r["test"]["scores"]["per_type"]
        minutes = f"{r['training_seconds'] / 60:.0f} min to epoch {r['epochs_run']}" if r['training_seconds'] else "n/a"
        models.append((f"{r['model']} ({r['objective']})", f"{100 * r['dev']['scores']['micro']['f1']:.2f}",
                       f"{100 * r['test']['scores']['micro']['f1']:.2f}",
                       *(f"{100 * per_type[t]['f1']:.1f}" for t in ("PER", "LOC", "ORG", "MISC")), minutes,
                       f"{r['sentences_per_second']['confidence']:.0f}"))
        dev_auroc = {q["estimator"]: q["auroc"] for q in r["dev"]["uncertainty"]}
        estimators += [(r["model"], q["estimator"], f"{q['auroc']:.3f}", f"{q['ece']:.3f}",
                        f"{dev_auroc[q['estimator']]:.3f}") for q in r["test"]["uncertainty"]]
    return "\n".join([
        markdown_table(["model", "dev F1", "test F1", "PER", "LOC", "ORG", "MISC", "training to the best epoch",
                        "sent/s"], models), "",
        markdown_table(["model", "estimator", "test AUROC (wrong vs right)", "test ECE", "dev AUROC"], estimators)])


def main() -> int:
    args = parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    models = args.model or [DEFAULT_MODEL]
    results = [benchmark(model, args) for model in models]
    write_results(args.out_dir / "quality.json", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

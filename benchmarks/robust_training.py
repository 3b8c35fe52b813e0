"""Robust training, measured: a baseline (no augmentation) and a robust model (mention replacement +
typo noise, see linkner/model/augment.py) trained with the same settings and seed for a fixed
number of epochs (no time budget, no early stopping; the best epoch by clean dev F1 is kept), then
both scored on dev, clean test, and test perturbed with typos and with unseen (invented) names,
built exactly as ``benchmarks.linking`` and ``benchmarks.error_detector`` build them: ``perturb(test, kind, 0,
train)``. Training augments with ``random.Random("train-augment:{seed}:{epoch}")`` streams, never
evaluation's ``"{kind}:{seed}"`` ones. Prints a markdown table; writes JSON and markdown (--out).

    python -m benchmarks.robust_training --epochs 6 --device cuda
    python -m benchmarks.robust_training --max-train-sentences 300 --epochs 1   # a quick local check

Needs only torch, transformers, numpy, tqdm and pydantic (no Ray, gRPC, scikit-learn, seqeval).
``--only baseline|robust`` trains one model and merges it into an existing --out JSON of the same
settings; ``--parallel`` trains both at once in two processes (one GPU has room for both);
``--score baseline=PATH --score robust=PATH`` trains nothing and scores two existing checkpoints
(for example the ones the main job trained on CPU) on the same sets.

``test-oov-real`` replaces every test entity with a real name of its type that test contains and
train lacks (``perturb(test, "oov-real", 0, train)``): no name generator is involved, so it checks
that the gain on ``test-oov`` is not the robust model learning the invented names' style.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, argument_parser, default_data_dir, markdown_table, result_paths, write_results
from linkner.data.readers import read_dataset
from linkner.evaluation.assessment import assess
from linkner.evaluation.perturb import perturb
from linkner.model.metadata import STATE_FILE
from linkner.model.predictor import SpanPredictor
from linkner.model.training import TrainConfig, Trainer
from linkner.paths import PROJECT_ROOT

MODELS = ("baseline", "robust")
EVAL_SEED = 0  # the perturbation seed of benchmarks.linking and benchmarks.error_detector
SETS = ("dev", "test", "test-typo", "test-oov", "test-oov-real")
TARGETS = {"test-oov": 5.0, "test-typo": 3.0, "test": -0.3}  # robust minus baseline, F1 points
DEFAULT_DATA = default_data_dir()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--train", type=Path, default=DEFAULT_DATA / "train.txt", help="CoNLL training file")
    parser.add_argument("--dev", type=Path, default=DEFAULT_DATA / "dev.txt", help="CoNLL dev file (model selection)")
    parser.add_argument("--test", type=Path, default=DEFAULT_DATA / "test.txt", help="CoNLL test file")
    parser.add_argument("--encoder", default="default", help="'default' (MiniLM-L6) or a local BERT folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-train-sentences", type=int, default=None, help="first N training sentences only")
    parser.add_argument("--mention-replacement", type=float, default=TrainConfig.model_fields["mention_replacement"].default,
                        help="robust model: probability per mention of replacement (half invented, half swapped)")
    parser.add_argument("--typo-rate", type=float, default=TrainConfig.model_fields["typo_rate"].default, help="robust model: probability per mention of a typo")
    parser.add_argument("--invented-share", type=float, default=0.5, help="robust model: share of invented names")
    parser.add_argument("--seed", type=int, default=13, help="training seed (both models)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--save-robust", type=Path, default=None, help="keep the robust checkpoint in this folder")
    parser.add_argument("--save-baseline", type=Path, default=None, help="keep the baseline checkpoint in this folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "robust_training",
                        help="output stem: writes STEM.json and STEM.md")
    parser.add_argument("--only", choices=MODELS, default=None,
                        help="train one model; merge into STEM.json when it holds the other with the same settings")
    parser.add_argument("--parallel", action="store_true", help="train both models at once in two processes")
    parser.add_argument("--score", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="train nothing: score this existing checkpoint as NAME (baseline or robust); repeatable")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def train_config(args: argparse.Namespace, robust: bool) -> TrainConfig:
    """The same settings for both models; only the augmentation differs."""
    return TrainConfig(
        encoder=args.encoder, epochs=args.epochs, patience=args.epochs + 1, time_budget_s=None, seed=args.seed,
        device=args.device, threads=args.threads, max_train_sentences=args.max_train_sentences,
        progress=not args.no_progress,
        mention_replacement=args.mention_replacement if robust else 0.0,
        typo_rate=args.typo_rate if robust else 0.0,
        augment_invented_share=args.invented_share,
    )


def settings(args: argparse.Namespace) -> dict:
    """What must match for two runs to share one table."""
    return {"train": str(args.train), "dev": str(args.dev), "test": str(args.test), "encoder": args.encoder,
            "epochs": args.epochs, "max_train_sentences": args.max_train_sentences, "seed": args.seed,
            "eval_seed": EVAL_SEED, "mention_replacement": args.mention_replacement, "typo_rate": args.typo_rate,
            "invented_share": args.invented_share}


def evaluation_sets(args: argparse.Namespace) -> tuple[list, list, dict[str, list]]:
    train = read_dataset(args.train)
    dev = read_dataset(args.dev)
    test = read_dataset(args.test)
    # exactly as benchmarks.linking: the full training file is the reference vocabulary
    sets = {"dev": dev, "test": test, "test-typo": perturb(test, "typo", EVAL_SEED, train),
            "test-oov": perturb(test, "oov", EVAL_SEED, train),
            "test-oov-real": perturb(test, "oov-real", EVAL_SEED, train)}
    return train, dev, sets


def run_model(name: str, args: argparse.Namespace, train: list, dev: list, sets: dict[str, list]) -> dict:
    """Train one model, score it on every set, and say how long it took."""
    import torch

    config = train_config(args, robust=name == "robust")
    keep = args.save_robust if name == "robust" else args.save_baseline
    scratch = None if keep else tempfile.mkdtemp(prefix=f"robust-training-{name}-")
    output = Path(keep or scratch)
    if output.exists() and keep:
        shutil.rmtree(output)  # a fresh run: never resume an older one
    print(f"[{name}] training {args.epochs} epoch(s) on {len(train[: args.max_train_sentences])} sentences "
          f"(mention_replacement {config.mention_replacement}, typo_rate {config.typo_rate}) -> {output}",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    result = Trainer(config, train, dev, output).fit()
    train_seconds = time.monotonic() - started
    (output / STATE_FILE).unlink(missing_ok=True)  # resumption state: not part of the checkpoint
    predictor = SpanPredictor.from_checkpoint(output, args.device)
    scores = score(name, predictor, sets, progress=not args.no_progress)
    seconds = [record["seconds"] for record in result.history]
    epoch_seconds = [b - a for a, b in zip([0.0, *seconds], seconds)]  # training + dev scoring per epoch
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "config": config.model_dump(), "best_epoch": result.best_epoch, "best_dev_f1": 100 * result.best_dev_f1,
        "epochs_run": result.epochs_run, "history": result.history, "train_seconds": train_seconds,
        "epoch_seconds": epoch_seconds, "scores": scores, "checkpoint": str(keep) if keep else None,
        "device": torch.cuda.get_device_name(predictor.device) if predictor.device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def scored_model(name: str, checkpoint: Path, args: argparse.Namespace, sets: dict[str, list]) -> dict:
    """An existing checkpoint, scored on every set (its training settings read from its metadata)."""
    import torch

    training = json.loads((checkpoint / "metadata.json").read_text(encoding="utf-8"))["training"]
    predictor = SpanPredictor.from_checkpoint(checkpoint, args.device)
    seconds = [record["seconds"] for record in training["history"]]
    best = max(training["history"], key=lambda record: record["dev_f1"])
    return {
        "config": training["config"], "best_epoch": int(best["epoch"]), "best_dev_f1": 100 * training["dev_f1"],
        "epochs_run": len(seconds), "history": training["history"], "train_seconds": seconds[-1] if seconds else None,
        "epoch_seconds": [b - a for a, b in zip([0.0, *seconds], seconds)],
        "scores": score(name, predictor, sets, progress=not args.no_progress), "checkpoint": str(checkpoint),
        "device": f"trained with device={training['config'].get('device', '?')}; scored on "
                  f"{'cuda' if predictor.device.type == 'cuda' else 'cpu'})",
        "torch_threads": torch.get_num_threads(), "scored_only": True,
    }


def score(name: str, predictor: SpanPredictor, sets: dict[str, list], progress: bool = True) -> dict:
    """F1 (points), precision, recall, per-type F1 and the confidence AUROC on each set."""
    scores = {}
    for set_name, data in sets.items():
        print(f"[{name}] scoring {set_name} ({len(data)} sentences)", file=sys.stderr, flush=True)
        report = assess(predictor, data, ["confidence"], progress=progress)
        micro = report.scores.micro
        scores[set_name] = {
            "f1": 100 * micro.f1, "precision": 100 * micro.precision, "recall": 100 * micro.recall,
            "per_type_f1": {t: 100 * s.f1 for t, s in report.scores.per_type.items()},
            "confidence_auroc": report.uncertainty[0].auroc, "sentences_per_second": report.sentences_per_second,
        }
    return scores


def deltas(models: dict) -> dict:
    if not all(name in models for name in MODELS):
        return {}
    both = [s for s in SETS if all(s in models[name]["scores"] for name in MODELS)]
    return {s: models["robust"]["scores"][s]["f1"] - models["baseline"]["scores"][s]["f1"] for s in both}


def markdown(results: dict) -> str:
    models, s = results["models"], results["settings"]
    if any(m.get("scored_only") for m in models.values()):
        described = "; ".join(
            f"{name}: `{m['checkpoint']}` (seed {m['config'].get('seed')}, {m['epochs_run']} epoch(s) run, "
            f"mention_replacement {m['config'].get('mention_replacement', 0.0)}, typo_rate "
            f"{m['config'].get('typo_rate', 0.0)}, {m['config'].get('threads') or 'default'} torch thread(s))"
            for name, m in models.items())
        header = (f"Existing checkpoints, scored (not trained by this run): {described}. Perturbed test sets: "
                  f"`perturb(test, kind, {s['eval_seed']}, train)`. F1 in points; s/epoch from the checkpoint's history.")
    else:
        header = (f"Training: {s['epochs']} epoch(s), seed {s['seed']}, encoder `{s['encoder']}`, "
                  f"{results.get('train_sentences', '?')} training sentences; robust model: mention_replacement "
                  f"{s['mention_replacement']} ({100 * s['invented_share']:.0f}% invented names), typo_rate "
                  f"{s['typo_rate']}. Perturbed test sets: `perturb(test, kind, {s['eval_seed']}, train)`. F1 in points.")
    rows = []
    for name in MODELS:
        if name not in models:
            continue
        m = models[name]
        per_epoch = sum(m["epoch_seconds"]) / max(1, len(m["epoch_seconds"]))
        rows.append((name, m["best_epoch"], *(f"{m['scores'][x]['f1']:.2f}" if x in m["scores"] else "-" for x in SETS),
                     f"{per_epoch:.0f}", m["device"]))
    delta = deltas(models)
    if delta:
        rows.append(("robust - baseline", "", *(f"{delta[x]:+.2f}" if x in delta else "-" for x in SETS), "", ""))
    lines = [header, "", markdown_table(["model", "best epoch", *(f"{x} F1" for x in SETS), "s/epoch", "device"], rows)]
    if delta:
        met = [f"{x} {delta[x]:+.2f} (target {'>=' if goal > 0 else 'not below'} {goal:+.1f}): "
               f"{'met' if delta[x] >= goal else 'NOT met'}" for x, goal in TARGETS.items() if x in delta]
        lines += ["", "Targets: " + "; ".join(met) + "."]
    return "\n".join(lines)


def load_existing(path: Path, wanted: dict) -> dict:
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    if previous.get("settings") != wanted:
        print(f"{path}: written with other settings, not merged", file=sys.stderr)
        return {}
    return previous.get("models", {})


def write(args: argparse.Namespace, models: dict, train_sentences: int, show: bool = False) -> dict:
    import torch
    import transformers

    results = {"settings": settings(args), "train_sentences": train_sentences, "models": models,
               "robust_minus_baseline": deltas(models), "targets": TARGETS,
               "versions": {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__}}
    write_results(args.out, results, markdown(results), show)
    return results


def parallel(args: argparse.Namespace, argv: list[str]) -> dict:
    """Both models in two child processes (``--only``), merged into one result."""
    models, children = {}, []
    with tempfile.TemporaryDirectory(prefix="robust-training-") as folder:
        for name in MODELS:
            child_argv = [a for a in argv if a != "--parallel"] + ["--only", name, "--out", f"{folder}/{name}"]
            # this module again, wherever the caller stands (the project root first on its path)
            path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
            children.append((name, subprocess.Popen([sys.executable, "-m", __spec__.name, *child_argv], env=env)))
        for name, child in children:
            if child.wait() != 0:
                raise SystemExit(f"the {name} run failed (exit {child.returncode})")
            child_json, _ = result_paths(Path(folder) / name)
            models.update(json.loads(child_json.read_text(encoding="utf-8"))["models"])
    return models


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train, dev, sets = evaluation_sets(args)
    train_sentences = len(train[: args.max_train_sentences])
    if args.score:
        models = {}
        for item in args.score:
            name, _, path = item.partition("=")
            if name not in MODELS or not path:
                raise SystemExit(f"--score {item!r}: expected baseline=CHECKPOINT or robust=CHECKPOINT")
            models[name] = scored_model(name, Path(path), args, sets)
    elif args.parallel and not args.only:
        models = parallel(args, argv)
    else:
        models = load_existing(result_paths(args.out)[0], settings(args)) if args.only else {}
        for name in [args.only] if args.only else MODELS:
            models[name] = run_model(name, args, train, dev, sets)
            write(args, models, train_sentences)  # partial results survive a later failure
    write(args, models, train_sentences, show=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

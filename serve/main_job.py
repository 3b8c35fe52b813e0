"""The README's main job. Today: make sure the default model exists (training it on first run),
evaluate it on the test split and tag a sample sentence. It grows into starting the service."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path(os.environ.get("LINKNER_MODEL", ROOT / "artifacts" / "models" / "default"))
DEFAULT_DATA = Path(os.environ.get("LINKNER_CONLL_DIR", ROOT.parent / "shared" / "data" / "conll2003"))
SAMPLE = "Peter Blackburn of the European Commission spoke in Brussels about German beef ."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint folder (trained if absent)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with train/dev/test.txt")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=None, help="epochs when training the default model")
    return parser


def ensure_model(model: Path, data_dir: Path, threads: int | None, epochs: int | None) -> Path:
    """Return ``model``, training the default configuration into it first if it is missing."""
    from linkner.model.checkpoint import is_checkpoint
    from linkner.readers import read_dataset
    from linkner.training import TrainConfig, Trainer

    if is_checkpoint(model):
        print(f"using the trained model in {model}", file=sys.stderr)
        return model
    for split in ("train", "dev"):
        if not (data_dir / f"{split}.txt").is_file():
            raise SystemExit(f"no checkpoint at {model} and no training data at {data_dir / split}.txt: "
                             "pass --data-dir, or --model pointing at a trained checkpoint")
    overrides = {key: value for key, value in {"threads": threads, "epochs": epochs}.items() if value}
    config = TrainConfig(**overrides)
    print(f"no checkpoint at {model}: training the default model ({config.encoder} encoder, "
          f"{config.epochs} epochs; cached for later runs)", file=sys.stderr)
    Trainer(config, read_dataset(data_dir / "train.txt"), read_dataset(data_dir / "dev.txt"), model).fit(resume=True)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from linkner.assessment import assess
    from linkner.evaluation import reliability_plot
    from linkner.predictor import SpanPredictor
    from linkner.readers import read_dataset
    from linkner.uncertainty import available_estimators

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = ensure_model(args.model, args.data_dir, args.threads, args.epochs)
    predictor = SpanPredictor.from_checkpoint(model)
    estimators = available_estimators(predictor.model.config.objective == "evidential")
    test = args.data_dir / "test.txt"
    if test.is_file():
        report = assess(predictor, read_dataset(test), estimators)
        print(f"\n## {model.name} on {test}\n\n{report.markdown()}\n")
        plot = reliability_plot(report.uncertainty, model / "reliability-test.png", "Reliability on CoNLL-2003 test")
        print(f"reliability plot: {plot}")
    words = SAMPLE.split()
    print(f"\nsample: {SAMPLE}")
    for entity in predictor.predict([words], estimators)[0]:
        scores = ", ".join(f"{name} {value:.3f}" for name, value in entity.uncertainty.items())
        print(f"  {' '.join(words[entity.start:entity.end])!r:32} {entity.label:5} p={entity.probability:.3f}  "
              f"uncertainty: {scores}")
    return 0

"""``linkner`` command line: train, evaluate, predict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from linkner.readers import DataFormatError
from linkner.uncertainty import ESTIMATORS


def _add_train(commands: argparse._SubParsersAction) -> None:
    from linkner.training import TrainConfig

    parser = commands.add_parser("train", help="train a span NER model; keeps the best checkpoint by dev F1")
    parser.add_argument("--train", required=True, type=Path, help="training data (CoNLL columns or .jsonl)")
    parser.add_argument("--dev", required=True, type=Path, help="development data for model selection")
    parser.add_argument("--output", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--resume", action="store_true", help="continue after the last finished epoch in --output")
    parser.add_argument("--scheme", choices=["iob2", "iob1"], default="iob2", help="tag scheme of column files")
    defaults = TrainConfig()
    for name, field in TrainConfig.model_fields.items():
        if name == "progress":
            continue
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        kind = _field_type(field.annotation, default)
        parser.add_argument(flag, dest=f"cfg_{name}", type=kind, default=default,
                            help=f"{field.description or name} (default: {default})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _field_type(annotation: object, default: object) -> type:
    if isinstance(default, bool):
        return lambda text: text.lower() in ("1", "true", "yes")  # type: ignore[return-value]
    if isinstance(default, (int, float, str)):
        return type(default)
    text = str(annotation)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="entity P/R/F1 and uncertainty quality of a checkpoint")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint folder")
    parser.add_argument("--data", required=True, type=Path, help="gold data (CoNLL columns or .jsonl)")
    parser.add_argument("--estimators", default="all", help=f"comma list of {', '.join(ESTIMATORS)} or 'all'")
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--plot", type=Path, help="write a reliability diagram (PNG) here")
    parser.add_argument("--scheme", choices=["iob2", "iob1"], default="iob2")


def _add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="tag a file of sentences, writing JSON lines")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="CoNLL columns or .jsonl (labels ignored)")
    parser.add_argument("--output", required=True, type=Path, help="JSON lines with entities and uncertainties")
    parser.add_argument("--estimators", default="confidence")
    parser.add_argument("--device", default="auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkner", description="LinkNER core: local span NER with uncertainty")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linkner`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "predict":
            return _predict(args)
    except (DataFormatError, FileNotFoundError, ValueError) as error:
        print(f"linkner {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 1


def _train(args: argparse.Namespace) -> int:
    from linkner.readers import read_dataset
    from linkner.training import TrainConfig, Trainer

    values = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg_")}
    config = TrainConfig(**values, progress=not args.no_progress)
    train = read_dataset(args.train, scheme=args.scheme)
    dev = read_dataset(args.dev, scheme=args.scheme)
    print(f"training on {len(train)} sentences, selecting on {len(dev)}; writing {args.output}", file=sys.stderr)
    result = Trainer(config, train, dev, args.output).fit(resume=args.resume)
    print(result.model_dump_json(indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from linkner.assessment import assess, estimator_names
    from linkner.predictor import SpanPredictor
    from linkner.readers import read_dataset

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sentences = read_dataset(args.data, scheme=args.scheme)
    predictor = SpanPredictor.from_checkpoint(args.model, args.device, batch_size=args.batch_size,
                                              mc_samples=args.mc_samples)
    report = assess(predictor, sentences, estimator_names(args.estimators, predictor), progress=True)
    print(report.markdown())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if args.plot:
        from linkner.evaluation import reliability_plot

        reliability_plot(report.uncertainty, args.plot, title=f"Reliability on {args.data.name}")
        print(f"reliability plot: {args.plot}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from linkner.predictor import SpanPredictor
    from linkner.readers import read_dataset

    sentences = read_dataset(args.data)
    predictor = SpanPredictor.from_checkpoint(args.model, args.device)
    estimators = [name.strip() for name in args.estimators.split(",") if name.strip()]
    predictions = predictor.predict([s.tokens for s in sentences], estimators)
    with args.output.open("w", encoding="utf-8") as handle:
        for sentence, entities in zip(sentences, predictions):
            record = {
                "tokens": list(sentence.tokens),
                "entities": [
                    {"start": e.start, "end": e.end, "label": e.label, "probability": e.probability,
                     "uncertainty": e.uncertainty}
                    for e in entities
                ],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(sentences)} sentences to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

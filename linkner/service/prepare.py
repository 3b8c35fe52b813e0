"""Everything a Serve config needs, made before serving and without Ray (``linkner prepare``, the
main job): the checkpoint (trained when missing), its error detector, the embedded LLM folder, and a
calibration for exactly the LLM form, demonstrations and estimator the config serves. Every step
is idempotent: a second run does nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from linkner.paths import PROJECT_ROOT
from linkner.service.config import AppConfig

DEFAULT_DATA = Path(os.environ.get("LINKNER_CONLL_DIR", PROJECT_ROOT.parent / "shared" / "data" / "conll2003"))
LINKNER_IMPORT_PATH = "serve.app:build_app"


class ServeConfigError(ValueError):
    """The Serve config file gives no valid LinkNER application; the message names the file."""


# ---------------------------------------------------------------- the Serve config file


def absolute_paths(config: AppConfig) -> AppConfig:
    """Relative paths in the config are relative to the project root, wherever replicas start."""

    def resolve(value: str) -> str:
        return value if Path(value).is_absolute() else str(PROJECT_ROOT / value)

    config = config.model_copy(deep=True)
    config.ner.checkpoint = resolve(config.ner.checkpoint)
    if config.llm_pool.llm.backend != "openai":
        config.llm_pool.llm.model = resolve(config.llm_pool.llm.model)
    if config.router.demonstrations.train:
        config.router.demonstrations.train = resolve(config.router.demonstrations.train)
    if config.telemetry.jsonl_path:
        config.telemetry.jsonl_path = resolve(config.telemetry.jsonl_path)
    for key in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
        if getattr(config.server, key):
            setattr(config.server, key, resolve(getattr(config.server, key)))
    return config


def read_serve_config(path: Path) -> dict[str, Any]:
    """The Serve config file (proxy options and applications) as a mapping."""
    import yaml

    if not path.is_file():
        raise ServeConfigError(f"{path}: no such config file")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ServeConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise ServeConfigError(f"{path}: not a Serve config (a mapping with `applications`)")
    return content


def _is_linkner(application: Any) -> bool:
    target = application.get("import_path", "") if isinstance(application, dict) else ""
    return str(target).replace(":", ".") == LINKNER_IMPORT_PATH.replace(":", ".")


def linkner_application(serve_config: dict[str, Any], path: Path, app: str | None = None) -> dict[str, Any]:
    """The config's LinkNER application (import_path ``serve.app:build_app``): the one named ``app``,
    or the only one."""
    applications = serve_config.get("applications")
    if not isinstance(applications, list):
        raise ServeConfigError(f"{path}: no `applications` list")
    found = [application for application in applications if _is_linkner(application)]
    names = ", ".join(repr(application.get("name")) for application in found)
    if app is not None:
        found = [application for application in found if application.get("name") == app]
        if not found:
            raise ServeConfigError(f"{path}: no LinkNER application named {app!r} (LinkNER applications: "
                                   f"{names or 'none'})")
    if not found:
        raise ServeConfigError(f"{path}: no application with import_path {LINKNER_IMPORT_PATH}")
    if len(found) > 1:
        raise ServeConfigError(f"{path}: {len(found)} LinkNER applications ({names}): choose one with --app NAME")
    return found[0]


def load_app_config(path: str | Path, app: str | None = None) -> AppConfig:
    """The LinkNER application's ``args`` in the Serve config at ``path``, validated, with relative
    paths resolved as the server resolves them."""
    path = Path(path)
    application = linkner_application(read_serve_config(path), path, app)
    try:
        return absolute_paths(AppConfig.model_validate(application.get("args") or {}))
    except ValidationError as error:
        raise ServeConfigError(f"{path}: invalid args of application {application.get('name')!r}:\n{error}") from None


# ---------------------------------------------------------------- the steps


def ensure_model(model: Path, data_dir: Path, threads: int | None, epochs: int | None,
                 on_saved: Callable[[int], None] | None = None) -> Path:
    """Return ``model``, training the default configuration into it first if it is missing, or
    finishing its training run if that was interrupted (``on_saved``: the trainer's hook after each
    epoch's checkpoint is written)."""
    from linkner.model.metadata import is_checkpoint, is_finished_checkpoint
    from linkner.model.training import TrainConfig, ensure_trained

    if is_finished_checkpoint(model):
        print(f"model: {model}", file=sys.stderr)
        return model
    overrides = {key: value for key, value in {"threads": threads, "epochs": epochs}.items() if value}
    config = TrainConfig(**overrides)
    if not is_checkpoint(model):
        print(f"no checkpoint at {model}: training the default model ({config.encoder} encoder, up to "
              f"{config.epochs} epochs, a few minutes each on 2 CPU cores; cached for later runs)",
              file=sys.stderr)
    try:
        return ensure_trained(model, data_dir, config, on_saved=on_saved)
    except FileNotFoundError as error:
        raise SystemExit(f"{error}: pass --data-dir, or set ner.checkpoint in the config to a trained model") from None


def ensure_error_detector(model: Path, data_dir: Path) -> None:
    """Fit the ``learned`` estimator's error detector on dev (about a minute on 2 cores) when the
    checkpoint has none, or one fitted for other weights; stored beside the checkpoint."""
    from linkner.data.readers import conll_documents, read_dataset
    from linkner.model.predictor import SpanPredictor
    from linkner.uncertainty.detector import DetectorError, load_detector
    from linkner.uncertainty.fitting import fit_on_dev

    try:
        load_detector(model)
        return
    except DetectorError as problem:
        print(f"error detector: {problem}; fitting it on dev (estimator 'learned')", file=sys.stderr)
    dev = data_dir / "dev.txt"
    if not (data_dir / "train.txt").is_file() or not dev.is_file():
        print(f"error detector: no train/dev data in {data_dir}: the 'learned' estimator is not offered",
              file=sys.stderr)
        return
    predictor = SpanPredictor.from_checkpoint(model, device="auto")
    try:
        fit = fit_on_dev(predictor, model, read_dataset(data_dir / "train.txt"), read_dataset(dev),
                         conll_documents(dev))
    except DetectorError as problem:
        print(f"error detector: {problem}: the 'learned' estimator is not offered", file=sys.stderr)
        return
    fit.detector.save(model)
    print(f"error detector: cross-validated dev AUROC {fit.detector.report['cv_dev_auroc']:.3f}", file=sys.stderr)


def ensure_runtime(config: AppConfig) -> None:
    """Make the checkpoint's int8 encoder graph (``ner.runtime: int8``; under a minute) when it has
    none, or one made from other weights, so replicas load it instead of each making it."""
    from linkner.model.runtime import ensure_int8_graph, int8_graph_problem

    checkpoint = Path(config.ner.checkpoint)
    if config.ner.runtime != "int8" or config.ner.device.startswith("cuda"):
        return
    problem = int8_graph_problem(checkpoint)
    if problem is not None:
        print(f"int8 encoder: {problem}; exporting and quantizing it (ONNX Runtime)", file=sys.stderr)
        print(f"int8 encoder: {ensure_int8_graph(checkpoint)}", file=sys.stderr)


def ensure_llm(config: AppConfig) -> AppConfig:
    """Convert the embedded LLM into the configured model folder when a local backend needs it (a
    no-op when done); with vLLM missing the ``vllm`` backend falls back to ``transformers``: the
    returned config says which backend serves (and is calibrated)."""
    llm = config.llm_pool.llm
    if not config.llm_pool.enabled or llm.backend == "openai":
        return config
    from linkner.llm.factory import vllm_available
    from linkner.llm.prepare import prepare_llm

    print(f"LLM: {prepare_llm(llm.model)}", file=sys.stderr)
    if llm.backend != "vllm" or vllm_available():
        return config
    print("vLLM is not installed: the LLM pool uses the transformers backend", file=sys.stderr)
    config = config.model_copy(deep=True)
    config.llm_pool.llm.backend = "transformers"
    return config


def served_args(app_args: dict[str, Any], config: AppConfig) -> dict[str, Any]:
    """``app_args`` (the application's YAML args, changed in place and returned) with the LLM backend
    that :func:`prepare` chose, so Ray serves what was calibrated."""
    if config.llm_pool.enabled:
        app_args.setdefault("llm_pool", {}).setdefault("llm", {})["backend"] = config.llm_pool.llm.backend
    return app_args


def demonstration_selector(config: AppConfig, predictor: Any) -> Any:
    """The selector of ``config.router.demonstrations`` (retrieved: span embeddings cached beside the
    checkpoint)."""
    from linkner.data.readers import read_dataset
    from linkner.llm.demonstrations import build_selector, embeddings_cache_path, training_demonstrations

    demos = config.router.demonstrations
    pool = training_demonstrations(read_dataset(demos.train)) if demos.kind != "none" and demos.train else []
    return build_selector(demos.kind, predictor, pool, demos.k, demos.seed,
                          cache=embeddings_cache_path(Path(config.ner.checkpoint), pool))


def ensure_calibration(config: AppConfig, data_dir: Path, sentences: int, margin: float = 0.0) -> None:
    """Calibrate the routing threshold on dev (stored in the checkpoint's metadata with its key),
    asking the configured LLM with the router's demonstrations setting, so the served router only
    asks the LLM where that helped on dev. Runs when there is no calibration or when the stored one
    was made for something else (another LLM, answer mode, demonstrations, estimator or checkpoint)."""
    import asyncio

    from linkner.evaluation.calibration import calibrate_on
    from linkner.llm.factory import build_backend
    from linkner.model.metadata import read_metadata, write_metadata
    from linkner.model.predictor import SpanPredictor
    from linkner.data.readers import read_dataset
    from linkner.service.calibration_state import expected_key, staleness, stored_calibration

    checkpoint = Path(config.ner.checkpoint)
    if not sentences or not config.llm_pool.enabled or not config.router.use_calibration:
        return
    key = expected_key(config)
    stored = stored_calibration(str(checkpoint))
    if stored is not None and not staleness(stored, key):
        return
    if not (data_dir / "dev.txt").is_file():
        print(f"no dev data at {data_dir}: the router uses its configured policy", file=sys.stderr)
        return
    why = "once" if stored is None else "the stored one is stale: " + "; ".join(staleness(stored, key))
    predictor = SpanPredictor.from_checkpoint(checkpoint, runtime=config.ner.runtime)  # the uncertainties served
    selector = demonstration_selector(config, predictor)
    estimator = config.router.policy.estimator
    print(f"calibrating when to ask the LLM, on {sentences} dev sentences ({why}; stored in {checkpoint})",
          file=sys.stderr)

    llm = config.llm_pool.llm
    if llm.cpu_threads is None:  # nothing else runs while calibrating: the engine may take every core
        llm = llm.model_copy(update={"cpu_threads": len(os.sched_getaffinity(0))})

    async def run() -> Any:
        backend = build_backend(llm)
        try:
            return await calibrate_on(predictor, backend, read_dataset(data_dir / "dev.txt")[:sentences], estimator,
                                      selector=selector, margin=margin, key=key)
        finally:
            await backend.close()

    calibration = asyncio.run(run())
    metadata = read_metadata(checkpoint)
    metadata["calibration"] = calibration.model_dump()
    write_metadata(checkpoint, metadata)
    print(f"calibration: {calibration.summary()}", file=sys.stderr)


# ---------------------------------------------------------------- all of it


def prepare(config_path: str | Path, data_dir: Path = DEFAULT_DATA, *, app: str | None = None,
            threads: int | None = None, epochs: int | None = None, calibration_sentences: int = 600,
            calibration_margin: float = 0.0, checkpoint: Path | None = None) -> AppConfig:
    """Make what the Serve config at ``config_path`` needs (idempotent; progress on stderr) and
    return its validated LinkNER args as they are served (see :func:`ensure_llm` for the backend).
    ``checkpoint``: prepare that trained checkpoint instead of the config's ``ner.checkpoint``."""
    from linkner.service.calibration_state import calibration_state

    config = load_app_config(config_path, app)
    if checkpoint is not None:
        config = config.model_copy(update={"ner": config.ner.model_copy(update={"checkpoint": str(checkpoint)})})
    else:
        ensure_model(Path(config.ner.checkpoint), data_dir, threads, epochs)
    ensure_runtime(config)
    config = ensure_llm(config)
    ensure_error_detector(Path(config.ner.checkpoint), data_dir)
    ensure_calibration(config, data_dir, calibration_sentences, calibration_margin)
    print(f"calibration status: {calibration_state(config).status}", file=sys.stderr)
    return config

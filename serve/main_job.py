"""The README's main job: make sure the default model exists (training it on first run) and the
embedded LLM is prepared, start Ray on this machine, deploy ``serve_config.yaml`` with its gRPC
gateway, and answer a sample request through the Python client."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from serve.direct_ingress import DRAIN_S

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("LINKNER_CONLL_DIR", ROOT.parent / "shared" / "data" / "conll2003"))
SAMPLE = "Peter Blackburn of the European Commission spoke in Brussels about German beef."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml", help="Ray Serve config file")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with train/dev txt (training)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs when training the default model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while training")
    parser.add_argument("--once", action="store_true", help="answer the sample request, then shut down")
    parser.add_argument("--calibration-sentences", type=int, default=600,
                        help="dev sentences used to calibrate a model that has no calibration, or a stale one "
                             "(0: skip)")
    parser.add_argument("--calibration-margin", type=float, default=0.0,
                        help="route only when the low end of the 95%% bootstrap interval of the dev F1 gain is "
                             "above this (F1 as a fraction)")
    parser.add_argument("--text", default=SAMPLE, help="the sample request's text")
    parser.add_argument("--proxy-only", action="store_true",
                        help="serve gRPC through Ray's proxy only (default: the ingress replica answers on the "
                             "configured port itself, Ray's direct ingress, one process hop less)")
    parser.add_argument("--drain-s", type=float, default=DRAIN_S,
                        help="seconds a stopping ingress replica keeps answering before it closes (Ray's "
                             "default, 30, suits a load balancer's deregistration; %(default)s: a quick stop)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="port of Ray's Prometheus endpoint (default: telemetry.metrics_export_port, 8080)")
    return parser


def ensure_model(model: Path, data_dir: Path, threads: int | None, epochs: int | None) -> Path:
    """Return ``model``, training the default configuration into it first if it is missing, or
    finishing its training run if that was interrupted."""
    from linkner.model.metadata import is_checkpoint, is_finished_checkpoint
    from linkner.model.training import TrainConfig, ensure_trained

    if is_finished_checkpoint(model):
        print(f"model: {model}", file=sys.stderr)
        return model
    overrides = {key: value for key, value in {"threads": threads, "epochs": epochs}.items() if value}
    config = TrainConfig(**overrides)
    if not is_checkpoint(model):
        print(f"no checkpoint at {model}: training the default model ({config.encoder} encoder, up to "
              f"{config.epochs} epochs, about 5-8 minutes each on 2 CPU cores; cached for later runs)",
              file=sys.stderr)
    try:
        return ensure_trained(model, data_dir, config)
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
    fit = fit_on_dev(predictor, model, read_dataset(data_dir / "train.txt"), read_dataset(dev), conll_documents(dev))
    fit.detector.save(model)
    print(f"error detector: cross-validated dev AUROC {fit.detector.report['cv_dev_auroc']:.3f}", file=sys.stderr)


def ensure_calibration(config: Any, data_dir: Path, sentences: int, margin: float = 0.0) -> None:
    """Calibrate the routing threshold on dev (stored in the checkpoint's metadata with its key),
    asking the configured LLM with the router's demonstrations setting, so the served router only
    asks the LLM where that helped on dev. Runs when there is no calibration or when the stored one
    was made for something else (another LLM, answer mode, demonstrations, estimator or checkpoint)."""
    import asyncio

    from linkner.routing.calibration import calibrate_on
    from linkner.llm.demonstrations import build_selector, embeddings_cache_path, training_demonstrations
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
    predictor = SpanPredictor.from_checkpoint(checkpoint)
    demos = config.router.demonstrations
    pool = training_demonstrations(read_dataset(demos.train)) if demos.kind != "none" else []
    selector = build_selector(demos.kind, predictor, pool, demos.k, demos.seed,
                              cache=embeddings_cache_path(checkpoint, pool))
    estimator = config.router.policy.estimator
    print(f"calibrating when to ask the LLM, on {sentences} dev sentences ({why}; stored in {checkpoint})",
          file=sys.stderr)

    async def run() -> Any:
        backend = build_backend(config.llm_pool.llm)
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


def describe_tracing(telemetry: Any) -> str:
    """Where spans go, in words."""
    if telemetry.exporter == "none":
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT or telemetry.exporter)"
    where = {"otlp": f"OTLP {telemetry.otlp_protocol} to {telemetry.otlp_endpoint}", "console": "console",
             "jsonl": f"{telemetry.jsonl_path}"}[telemetry.exporter]
    return f"{where}, sampler {telemetry.sampler} {telemetry.sampler_ratio}, service {telemetry.service_name}"


def load_config(path: Path) -> dict[str, Any]:
    """The Serve config file (proxy options and the LinkNER application's args)."""
    import yaml

    if not path.is_file():
        raise SystemExit(f"{path}: no such config file")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def start_ray(object_store_mb: int = 512, env: dict[str, str] | None = None, metrics_port: int | None = None) -> None:
    """A single-node Ray on loopback (no dashboard); ``env`` is set for every Ray process, its
    Prometheus endpoint on ``metrics_port``."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.update(env or {})  # read by Ray's own processes (controller, proxy, replicas) at start
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             object_store_memory=object_store_mb * 1024 * 1024, log_to_driver=False,
             _metrics_export_port=metrics_port,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}})


def deploy(serve_config: dict[str, Any], direct: bool = True) -> tuple[str, str]:
    """Start Serve with the config's proxy options and run its LinkNER application; returns the
    application's name and the gRPC address to dial (the ingress replica itself when ``direct``:
    Ray must have been started with :func:`serve.direct_ingress.direct_ingress_env`)."""
    from ray import serve
    from ray.serve.config import gRPCOptions

    from serve.app import build_app
    from serve.direct_ingress import grpc_targets, proxy_port

    grpc = serve_config.get("grpc_options", {})
    http = serve_config.get("http_options", {})
    port = int(grpc.get("port", 9000))
    serve.start(http_options={"host": http.get("host", "127.0.0.1"), "port": int(http.get("port", 8000))},
                grpc_options=gRPCOptions(port=proxy_port(port) if direct else port,
                                         grpc_servicer_functions=grpc.get("grpc_servicer_functions", [])))
    application = serve_config["applications"][0]
    serve.run(build_app(application.get("args", {})), name=application["name"],
              route_prefix=application.get("route_prefix", "/linkner"), logging_config=application.get("logging_config"))
    if direct:
        targets = grpc_targets(application["name"])
        if not targets:
            raise SystemExit("direct ingress: the ingress replica opened no gRPC port (try --proxy-only)")
        return application["name"], targets[0]
    return application["name"], f"127.0.0.1:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    serve_config = load_config(args.config)
    app_args = serve_config["applications"][0].setdefault("args", {})
    from linkner.service.config import AppConfig
    from linkner.telemetry import with_environment
    from serve.app import absolute_paths

    config = absolute_paths(AppConfig.model_validate(app_args))
    ensure_model(Path(config.ner.checkpoint), args.data_dir, args.threads, args.epochs)
    if config.llm_pool.enabled and config.llm_pool.llm.backend != "openai":
        from linkner.llm.factory import vllm_available
        from linkner.llm.prepare import prepare_llm

        print(f"LLM: {prepare_llm(config.llm_pool.llm.model)}", file=sys.stderr)
        if config.llm_pool.llm.backend == "vllm" and not vllm_available():
            print("vLLM is not installed: the LLM pool uses the transformers backend", file=sys.stderr)
            app_args.setdefault("llm_pool", {}).setdefault("llm", {})["backend"] = "transformers"
            config.llm_pool.llm.backend = "transformers"
    ensure_error_detector(Path(config.ner.checkpoint), args.data_dir)
    ensure_calibration(config, args.data_dir, args.calibration_sentences, args.calibration_margin)
    started = time.monotonic()
    from serve.direct_ingress import direct_ingress_env, proxy_port

    grpc_port = int(serve_config.get("grpc_options", {}).get("port", 9000))
    metrics_port = args.metrics_port or config.telemetry.metrics_export_port
    start_ray(env=None if args.proxy_only else direct_ingress_env(grpc_port, drain_s=args.drain_s),
              metrics_port=metrics_port)
    name, target = deploy(serve_config, direct=not args.proxy_only)
    via = "Ray's gRPC proxy" if args.proxy_only else (
        f"the ingress replica itself; Ray's proxy on 127.0.0.1:{proxy_port(grpc_port)}")
    print(f"LinkNER is up in {time.monotonic() - started:.0f}s: gRPC on {target} ({via}), application {name!r} "
          f"(service linkner.v1.LinkNER)", file=sys.stderr)
    print(f"metrics: http://127.0.0.1:{metrics_port}/metrics (Prometheus; linkner_* as ray_linkner_*); "
          f"traces: {describe_tracing(with_environment(config.telemetry, os.environ))}", file=sys.stderr)

    from clients.client import LinkNERClient

    with LinkNERClient(target, name, timeout_s=60) as client:
        print(f"\nrequest: {args.text}")
        _show(client.recognize(args.text))
        print("the same, every span sent to the LLM (policy budget 1.0), to show the LLM path:")
        _show(client.recognize(args.text, policy="budget", budget=1.0))
    if args.once:
        _shutdown()
        return 0
    print(f"try: .venv/bin/linkner-client --target {target} recognize \"Angela Merkel visited Paris.\"\n"
          "stop: Ctrl-C", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: (_shutdown(), sys.exit(0)))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _shutdown()
    return 0


def _show(result: Any) -> None:
    for entity in result.entities:
        llm = f", LLM score {entity.llm_score:.2f} (local said {entity.local_label})" if entity.llm_score is not None else ""
        print(f"  {entity.text!r:30} {entity.label:5} [{entity.char_start}:{entity.char_end}] from {entity.source}, "
              f"uncertainty {entity.uncertainty:.3f}{llm}")
    reason = f" ({result.degraded_reason})" if result.degraded else ""
    print(f"  LLM spans {result.llm_spans}, degraded {result.degraded}{reason}, model {result.model}, "
          f"LLM {result.llm_backend or '-'}, {result.timings_ms.get('total', 0):.0f} ms in the service\n")


def _shutdown() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()

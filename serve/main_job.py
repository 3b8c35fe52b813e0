"""The README's main job: prepare what ``serve_config.yaml`` needs (``linkner prepare``: training
the default model on first run), start Ray on this machine, deploy the whole config as ``serve run``
does, and answer a sample request through the Python client.

On a first run the default model trains in the background: the service starts on a snapshot of its
first epoch (``<model>-early``) and rolls over to the finished model when training ends, answering
the sample with each."""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from linkner.service.background_training import describe_snapshot
from linkner.service.prepare import DEFAULT_DATA, served_args

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "Peter Blackburn of the European Commission spoke in Brussels about German beef."
SERVER_FLAGS = ("host", "port", "tls_cert", "tls_key", "tls_client_ca")  # --flags that set the app's `server`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml", help="Ray Serve config file")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with train/dev txt (training)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs when training the default model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while training")
    parser.add_argument("--once", action="store_true", help="answer the sample request, then shut down (when the "
                                                            "model trains: once the finished model answered it)")
    parser.add_argument("--no-early", action="store_true", help="when the model trains, start the service only "
                                                                "once training has finished")
    parser.add_argument("--calibration-sentences", type=int, default=600,
                        help="dev sentences used to calibrate a model that has no calibration, or a stale one "
                             "(0: skip)")
    parser.add_argument("--calibration-margin", type=float, default=0.0,
                        help="route only when the low end of the 95%% bootstrap interval of the dev F1 gain is "
                             "above this (F1 as a fraction)")
    parser.add_argument("--text", default=SAMPLE, help="the sample request's text")
    parser.add_argument("--app", default=None, help="the LinkNER application of the config (when it has several)")
    parser.add_argument("--host", help="address the gRPC server listens on (server.host; default 127.0.0.1: this "
                                       "machine only)")
    parser.add_argument("--port", type=int, help="gRPC port (server.port)")
    parser.add_argument("--tls-cert", help="PEM server certificate: the port speaks TLS (server.tls_cert)")
    parser.add_argument("--tls-key", help="PEM key of --tls-cert (server.tls_key)")
    parser.add_argument("--tls-client-ca", help="PEM CA that must have signed callers' certificates: mutual TLS "
                                                "(server.tls_client_ca)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="port of Ray's Prometheus endpoint (default: telemetry.metrics_export_port, 8080)")
    return parser


def describe_tracing(telemetry: Any) -> str:
    """Where spans go, in words."""
    if telemetry.exporter == "none":
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT or telemetry.exporter)"
    where = {"otlp": f"OTLP {telemetry.otlp_protocol} to {telemetry.otlp_endpoint}", "console": "console",
             "jsonl": f"{telemetry.jsonl_path}"}[telemetry.exporter]
    return f"{where}, sampler {telemetry.sampler} {telemetry.sampler_ratio}, service {telemetry.service_name}"


def start_ray(object_store_mb: int = 512, metrics_port: int | None = None) -> None:
    """A single-node Ray on loopback (no dashboard), its Prometheus endpoint on ``metrics_port``.
    Ray's processes inherit this environment (``LINKNER_AUTH_TOKEN`` reaches the replicas). It
    counts twice this machine's cores as logical CPUs, so that a roll-over's new replicas are
    scheduled beside the old ones (replicas size their work by the cores they see, not by Ray's
    count)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             num_cpus=2 * len(os.sched_getaffinity(0)),
             object_store_memory=object_store_mb * 1024 * 1024, log_to_driver=False,
             _metrics_export_port=metrics_port,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}})


def deploy(serve_config: dict[str, Any], name: str, timeout_s: float = 900) -> None:
    """Deploy the whole Serve config as ``serve run`` / ``serve deploy`` do (proxy location and
    options, every application with its settings) and wait until application ``name`` runs this
    config: every deployment healthy, no replica starting or stopping."""
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location,
                                   grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
                                   controller_options=schema.controller_options)
    before = time.time()
    client.deploy_apps(schema, _blocking=False)
    stop_at = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        state = getattr(status, "status", None)
        if state == "RUNNING" and status.last_deployed_time_s >= before and _settled(status):
            return
        if state in ("DEPLOY_FAILED", "UNHEALTHY") or time.monotonic() > stop_at:
            raise SystemExit(f"application {name!r} did not start ({state}): {getattr(status, 'message', '')}")
        time.sleep(1)


def _settled(status: Any) -> bool:
    """Every deployment of an application's status healthy, its replicas all running."""
    return all(deployment.status == "HEALTHY" and set(deployment.replica_states) <= {"RUNNING"}
               for deployment in status.deployments.values())


def with_checkpoint(serve_config: dict[str, Any], name: str, checkpoint: Path) -> dict[str, Any]:
    """A copy of ``serve_config`` whose application ``name`` serves ``checkpoint``."""
    config = copy.deepcopy(serve_config)
    application = next(app for app in config["applications"] if app.get("name") == name)
    application.setdefault("args", {}).setdefault("ner", {})["checkpoint"] = str(checkpoint)
    return config


def with_surge(serve_config: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``serve_config`` where every running deployment of application ``name`` starts its
    new replicas before stopping the old ones (``max_surge_percent: 100``): a roll-over that keeps a
    one-replica deployment answering."""
    from ray import serve

    config = copy.deepcopy(serve_config)
    application = next(app for app in config["applications"] if app.get("name") == name)
    listed = {deployment["name"]: deployment for deployment in application.setdefault("deployments", [])}
    for deployment in serve.status().applications[name].deployments:
        listed.setdefault(deployment, {"name": deployment}).setdefault("max_surge_percent", 100)
    application["deployments"] = list(listed.values())
    return config


def apply_server_flags(app_args: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The application's ``server`` section with the command line's --host, --port and --tls-* set."""
    server = app_args.setdefault("server", {})
    server.update({key: getattr(args, key) for key in SERVER_FLAGS if getattr(args, key) is not None})
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from linkner.service.prepare import ServeConfigError, linkner_application, read_serve_config
    from linkner.telemetry import with_environment

    try:
        serve_config = read_serve_config(args.config)
        application = linkner_application(serve_config, args.config, args.app)
        training = _train_in_background(args, application)
        early = training.wait_for_snapshot() if training else None
        if training and early is None:
            training.wait()  # it ended before a snapshot: the model is finished (or training failed)
        if early:
            training.pause()  # the snapshot's preparation and start-up have the cores
        config = _prepare(args, application, checkpoint=early)  # no Ray: model, detector, LLM, calibration
    except ServeConfigError as error:
        raise SystemExit(str(error)) from None
    name = application["name"]
    app_args = application.setdefault("args", {})
    served_args(app_args, config)  # vLLM missing: Ray serves the transformers backend prepare calibrated
    server = config.server.model_copy(update=apply_server_flags(app_args, args))
    started = time.monotonic()
    metrics_port = args.metrics_port or config.telemetry.metrics_export_port
    start_ray(metrics_port=metrics_port)
    deploy(with_checkpoint(serve_config, name, early) if early else serve_config, name)
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "[::]") else server.host
    target = f"{host}:{server.port}"
    tls = "TLS" + (" (mutual)" if server.tls_client_ca else "") if server.tls_cert else "plaintext"
    print(f"LinkNER is up in {time.monotonic() - started:.0f}s: gRPC on {server.host}:{server.port} ({tls}; token "
          f"{'required' if os.environ.get('LINKNER_AUTH_TOKEN') or server.auth_token_file else 'not required'}), "
          f"application {name!r} (service linkner.v1.LinkNER)", file=sys.stderr)
    print(f"metrics: http://127.0.0.1:{metrics_port}/metrics (Prometheus; linkner_* as ray_linkner_*); "
          f"traces: {describe_tracing(with_environment(config.telemetry, os.environ))}", file=sys.stderr)
    if early:
        print(f"serving the early model {describe_snapshot(early)} while {training.model} finishes "
              "training in the background", file=sys.stderr)
    _sample_if_possible(target, args.text, server)
    if not args.once:
        print(f"try: .venv/bin/linkner-client --target {target} recognize \"Angela Merkel visited Paris.\"\n"
              "stop: Ctrl-C", file=sys.stderr)
    if training and early:
        signal.signal(signal.SIGTERM, lambda *_: (training.stop(), _shutdown(), sys.exit(0)))
        training.resume()  # at a lower priority than the service
        try:
            _roll_over(args, serve_config, application, training)
        except BaseException:
            training.stop()
            raise
        _sample_if_possible(target, args.text, server)
    if args.once:
        _shutdown()
        return 0
    signal.signal(signal.SIGTERM, lambda *_: (_shutdown(), sys.exit(0)))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _shutdown()
    return 0


def _prepare(args: argparse.Namespace, application: dict[str, Any], checkpoint: Path | None = None) -> Any:
    from linkner.service.prepare import prepare

    return prepare(args.config, args.data_dir, app=application.get("name"), threads=args.threads,
                   epochs=args.epochs, calibration_sentences=args.calibration_sentences,
                   calibration_margin=args.calibration_margin, checkpoint=checkpoint)


def _train_in_background(args: argparse.Namespace, application: dict[str, Any]) -> Any:
    """The model's training started in a child process when it has to train (and the early model is
    wanted), else None."""
    from linkner.model.metadata import is_finished_checkpoint
    from linkner.service.background_training import BackgroundTraining
    from linkner.service.prepare import load_app_config

    model = Path(load_app_config(args.config, application.get("name")).ner.checkpoint)
    if args.no_early or args.epochs == 1 or is_finished_checkpoint(model):
        return None
    print(f"{model} is not trained yet: training it in the background; the service starts on a snapshot of its "
          f"first epoch ({model.name}-early) and rolls over to the finished model when training ends",
          file=sys.stderr)
    training = BackgroundTraining(model, args.data_dir, args.threads, args.epochs).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # exit hooks stop training (paused or not)
    return training


def _roll_over(args: argparse.Namespace, serve_config: dict[str, Any], application: dict[str, Any],
               training: Any) -> None:
    """Wait for training to finish, prepare the finished model and roll the application over to it
    (new replicas up before the old ones stop), then delete the early snapshot."""
    training.wait()
    config = _prepare(args, application)
    served_args(application.setdefault("args", {}), config)
    name = application["name"]
    started = time.monotonic()
    deploy(with_surge(serve_config, name), name)
    print(f"rolled over to the finished model {config.ner.checkpoint} in {time.monotonic() - started:.0f}s",
          file=sys.stderr)
    training.remove_snapshot()


def _sample_if_possible(target: str, text: str, server: Any) -> None:
    if server.tls_client_ca:
        print("mutual TLS: no sample request (it needs a client certificate); call with linkner-client --tls-ca "
              "CA --tls-cert CERT --tls-key KEY", file=sys.stderr)
    else:
        _sample(target, text, tls_ca=server.tls_cert)


def _sample(target: str, text: str, tls_ca: str | None) -> None:
    """The sample request, as configured and with every span sent to the LLM (the token, if any,
    from LINKNER_AUTH_TOKEN; under TLS the server's certificate is trusted)."""
    from clients.client import LinkNERClient

    with LinkNERClient(target, timeout_s=60, **({"tls_ca": tls_ca} if tls_ca else {})) as client:
        print(f"\nrequest: {text}")
        _show(client.recognize(text))
        print("the same, every span sent to the LLM (policy budget 1.0), to show the LLM path:")
        _show(client.recognize(text, policy="budget", budget=1.0))


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

"""The README's main job: prepare what ``serve_config.yaml`` needs (``linkner prepare``: training
the default model on first run), start Ray on this machine, deploy the whole config as ``serve run``
does, and answer a sample request through the Python client."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from linkner.service.prepare import DEFAULT_DATA

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "Peter Blackburn of the European Commission spoke in Brussels about German beef."
SERVER_FLAGS = ("host", "port", "tls_cert", "tls_key", "tls_client_ca")  # --flags that set the app's `server`


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
    Ray's processes inherit this environment (``LINKNER_AUTH_TOKEN`` reaches the replicas)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             object_store_memory=object_store_mb * 1024 * 1024, log_to_driver=False,
             _metrics_export_port=metrics_port,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}})


def deploy(serve_config: dict[str, Any], name: str, timeout_s: float = 900) -> None:
    """Deploy the whole Serve config as ``serve run`` / ``serve deploy`` do (proxy location and
    options, every application with its settings) and wait until application ``name`` runs."""
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location,
                                   grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
                                   controller_options=schema.controller_options)
    client.deploy_apps(schema, _blocking=False)
    stop_at = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        state = getattr(status, "status", None)
        if state == "RUNNING":
            return
        if state in ("DEPLOY_FAILED", "UNHEALTHY") or time.monotonic() > stop_at:
            raise SystemExit(f"application {name!r} did not start ({state}): {getattr(status, 'message', '')}")
        time.sleep(1)


def apply_server_flags(app_args: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The application's ``server`` section with the command line's --host, --port and --tls-* set."""
    server = app_args.setdefault("server", {})
    server.update({key: getattr(args, key) for key in SERVER_FLAGS if getattr(args, key) is not None})
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from linkner.service.prepare import ServeConfigError, linkner_application, prepare, read_serve_config, served_args
    from linkner.telemetry import with_environment

    try:  # the model, error detector, LLM folder and calibration this config serves (no Ray)
        serve_config = read_serve_config(args.config)
        application = linkner_application(serve_config, args.config, args.app)
        config = prepare(args.config, args.data_dir, app=application.get("name"), threads=args.threads,
                         epochs=args.epochs, calibration_sentences=args.calibration_sentences,
                         calibration_margin=args.calibration_margin)
    except ServeConfigError as error:
        raise SystemExit(str(error)) from None
    app_args = application.setdefault("args", {})
    served_args(app_args, config)  # vLLM missing: Ray serves the transformers backend prepare calibrated
    server = config.server.model_copy(update=apply_server_flags(app_args, args))
    started = time.monotonic()
    metrics_port = args.metrics_port or config.telemetry.metrics_export_port
    start_ray(metrics_port=metrics_port)
    name = application["name"]
    deploy(serve_config, name)
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "[::]") else server.host
    target = f"{host}:{server.port}"
    tls = "TLS" + (" (mutual)" if server.tls_client_ca else "") if server.tls_cert else "plaintext"
    print(f"LinkNER is up in {time.monotonic() - started:.0f}s: gRPC on {server.host}:{server.port} ({tls}; token "
          f"{'required' if os.environ.get('LINKNER_AUTH_TOKEN') or server.auth_token_file else 'not required'}), "
          f"application {name!r} (service linkner.v1.LinkNER)", file=sys.stderr)
    print(f"metrics: http://127.0.0.1:{metrics_port}/metrics (Prometheus; linkner_* as ray_linkner_*); "
          f"traces: {describe_tracing(with_environment(config.telemetry, os.environ))}", file=sys.stderr)
    if server.tls_client_ca:
        print("mutual TLS: no sample request (it needs a client certificate); call with linkner-client --tls-ca "
              "CA --tls-cert CERT --tls-key KEY", file=sys.stderr)
    else:
        _sample(target, args.text, tls_ca=server.tls_cert)
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

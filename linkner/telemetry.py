"""OpenTelemetry helpers shared by every process of the service: tracer set-up from config, and
W3C trace-context carriers passed explicitly across deployment calls (Ray's own tracing hooks
are alpha, so the context travels in the call's arguments)."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

Sampler = Literal["always_on", "always_off", "traceidratio", "parentbased_always_on",
                  "parentbased_always_off", "parentbased_traceidratio"]
EXPORTERS = {"otlp": "otlp", "console": "console", "none": "none"}  # OTEL_TRACES_EXPORTER values we accept


class TelemetryConfig(BaseModel):
    """OpenTelemetry traces of every linking stage. The standard ``OTEL_*`` environment variables,
    where set, override these fields (:func:`with_environment`)."""

    model_config = ConfigDict(extra="forbid")
    exporter: Literal["none", "console", "otlp", "jsonl"] = "none"
    otlp_endpoint: str = Field("http://127.0.0.1:4317", description="grpc: host:port URL; http/protobuf: the full "
                               "traces URL, e.g. http://127.0.0.1:4318/v1/traces")
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    jsonl_path: str | None = Field(None, description="file the jsonl exporter appends finished spans to")
    service_name: str = "linkner-serve"
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    sampler: Sampler = Field("parentbased_traceidratio", description="parent-based: a caller's sampling decision "
                             "is followed; a trace this service starts is sampled at sampler_ratio")
    sampler_ratio: float = Field(1.0, ge=0.0, le=1.0)
    max_queue_size: int = Field(2048, ge=1, description="spans waiting for export; beyond it new spans are dropped")
    export_delay_ms: int = Field(1000, ge=1, description="how often the batch processor exports")
    metrics_export_port: int = Field(8080, ge=1, le=65535, description="the port of Ray's Prometheus endpoint "
                                     "(application metrics linkner_* and Ray's own): the main job starts Ray with "
                                     "it; a cluster started by `ray start` takes --metrics-export-port")


def _resource_attributes(text: str) -> dict[str, str]:
    """``key=value,key2=value2`` (values percent-decoded), as ``OTEL_RESOURCE_ATTRIBUTES`` holds."""
    from urllib.parse import unquote

    pairs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = unquote(value.strip())
    return pairs


def with_environment(config: TelemetryConfig, environ: Mapping[str, str]) -> TelemetryConfig:
    """``config`` with the standard OpenTelemetry environment variables applied: each one that is
    set (non-empty) wins over the config file's field. An OTLP endpoint in the environment turns
    OTLP export on, unless ``OTEL_TRACES_EXPORTER`` names another exporter; ``OTEL_SDK_DISABLED=true``
    turns tracing off."""
    env = {key: value.strip() for key, value in environ.items() if key.startswith("OTEL_") and value.strip()}
    update: dict[str, Any] = {}
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol:
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
        update["otlp_protocol"] = protocol
    protocol = update.get("otlp_protocol", config.otlp_protocol)
    if "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in env:
        update["otlp_endpoint"] = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    elif "OTEL_EXPORTER_OTLP_ENDPOINT" in env:  # the base URL: the signal's path is added for http
        base = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        update["otlp_endpoint"] = base.rstrip("/") + "/v1/traces" if protocol == "http/protobuf" else base
    if "otlp_endpoint" in update:
        update["exporter"] = "otlp"
    if "OTEL_TRACES_EXPORTER" in env:
        name = env["OTEL_TRACES_EXPORTER"].split(",")[0].strip()
        if name not in EXPORTERS:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: use one of {sorted(EXPORTERS)}")
        update["exporter"] = EXPORTERS[name]
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        update["exporter"] = "none"
    if "OTEL_TRACES_SAMPLER" in env:
        update["sampler"] = env["OTEL_TRACES_SAMPLER"]
    if "OTEL_TRACES_SAMPLER_ARG" in env:
        try:
            update["sampler_ratio"] = float(env["OTEL_TRACES_SAMPLER_ARG"])
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={env['OTEL_TRACES_SAMPLER_ARG']!r}: expected a number "
                             "from 0 to 1") from None
    attributes = dict(config.resource_attributes)
    attributes.update(_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    update["resource_attributes"] = attributes
    if "OTEL_SERVICE_NAME" in env:
        update["service_name"] = env["OTEL_SERVICE_NAME"]
    elif "service.name" in attributes:
        update["service_name"] = attributes["service.name"]
    return TelemetryConfig.model_validate({**config.model_dump(), **update})


def build_sampler(config: TelemetryConfig) -> Any:
    """The configured sampler (``parentbased_*``: a caller's decision is always followed)."""
    from opentelemetry.sdk.trace import sampling

    root = config.sampler.removeprefix("parentbased_")
    base = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF,
            "traceidratio": sampling.TraceIdRatioBased(config.sampler_ratio)}[root]
    return sampling.ParentBased(root=base) if config.sampler.startswith("parentbased_") else base


def build_exporter(config: TelemetryConfig) -> Any:
    """The span exporter the config names (None for ``none``)."""
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if config.exporter == "jsonl":
        if not config.jsonl_path:
            raise ValueError("telemetry exporter 'jsonl' needs jsonl_path")
        return JsonLinesSpanExporter(config.jsonl_path)
    if config.otlp_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter

        return HTTPExporter(endpoint=config.otlp_endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=not config.otlp_endpoint.startswith("https://"))


class RepeatedLineLimiter(logging.Filter):
    """Lets through at most one record starting with ``prefix`` every ``interval_s`` seconds; the
    next one that passes says how many were held back meanwhile. Other records pass untouched."""

    def __init__(self, prefix: str, interval_s: float = 10.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval_s = interval_s
        self.held = 0
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            self.held += 1
            return False
        if self.held:
            record.msg, record.args = f"{message} ({self.held} more like it since the last such line)", ()
        self._last, self.held = now, 0
        return True


def limit_repeated_lines(logger_name: str, prefix: str, interval_s: float) -> RepeatedLineLimiter:
    """Install (once per process and prefix) a :class:`RepeatedLineLimiter` on a logger."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RepeatedLineLimiter) and existing.prefix == prefix:
            return existing
    limiter = RepeatedLineLimiter(prefix, interval_s)
    logger.addFilter(limiter)
    return limiter


def build_provider(config: TelemetryConfig, component: str) -> Any:
    """A tracer provider exporting through a batch span processor (a bounded queue, exported off
    the request path: a slow or unreachable collector drops spans, it never delays a request)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {**config.resource_attributes, "service.name": config.service_name,
                  "linkner.component": component}
    provider = TracerProvider(resource=Resource.create(attributes), sampler=build_sampler(config))
    # the SDK logs "Queue full, dropping Span" once per dropped span: a collector outage would cost every request
    limit_repeated_lines("opentelemetry.sdk._shared_internal", "Queue full", 60.0)
    exporter = build_exporter(config)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=config.max_queue_size, schedule_delay_millis=config.export_delay_ms,
            max_export_batch_size=min(512, config.max_queue_size)))
    return provider


_configured = False
_lock = threading.Lock()
TRACER_NAME = "linkner"


class JsonLinesSpanExporter:
    """Appends each finished span as one JSON line to a file (simple, inspectable, testable)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = []
        for span in spans:
            context = span.get_span_context()
            lines.append(json.dumps({
                "name": span.name,
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                "start_ns": span.start_time, "end_ns": span.end_time,
                "attributes": dict(span.attributes or {}),
                "status": span.status.status_code.name,
            }))
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_recording_provider = False
_provider_checked_at = -float("inf")
PROVIDER_RECHECK_S = 1.0
"""How long "no recording tracer provider" is believed before it is looked up again (a lookup reads
the environment; this runs several times a request)."""


def tracing_on() -> bool:
    """Whether this process has a tracer provider that records spans (the one :func:`setup_tracing`
    installs at once; one set by whoever embeds the library within :data:`PROVIDER_RECHECK_S`), not
    OpenTelemetry's default no-op."""
    global _recording_provider, _provider_checked_at
    if _recording_provider:
        return True
    now = time.monotonic()
    if now - _provider_checked_at < PROVIDER_RECHECK_S:
        return False
    _provider_checked_at = now
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    # a provider is set once per process: once found, it stays
    _recording_provider = not isinstance(trace.get_tracer_provider(),
                                         (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    return _recording_provider


def setup_tracing(config: TelemetryConfig, component: str) -> None:
    """Install this process's tracer provider once (nothing for exporter ``none``)."""
    global _configured, _recording_provider
    with _lock:
        if _configured or config.exporter == "none":
            return
        from opentelemetry import trace

        trace.set_tracer_provider(build_provider(config, component))
        _configured = True
        _recording_provider = True


@contextmanager
def traced(name: str, carrier: dict[str, str] | None = None, kind: str = "internal", **attributes: Any
           ) -> Iterator[Any]:
    """A span named ``name`` (``kind``: internal, client, server), child of the context in
    ``carrier`` (W3C headers) when given; ``attributes`` are recorded as ``linkner.<key>``.

    With no tracer set up and no caller's context to continue, it yields None at once: a no-op
    span would record nothing and carry no context (and costs tens of microseconds a request)."""
    if not carrier and not tracing_on():
        yield None
        return
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.propagate import extract
    except ImportError:  # telemetry is optional for the core library
        yield None
        return
    # the caller's context is made current whole (its baggage too, not only its span), so what runs
    # inside, and current_carrier() for the next process, carries it on
    token = otel_context.attach(extract(carrier)) if carrier else None
    try:
        with trace.get_tracer(TRACER_NAME).start_as_current_span(name, kind=_span_kind(kind)) as span:
            for key, value in attributes.items():
                if value is not None:
                    span.set_attribute(f"linkner.{key}", value)
            yield span
    finally:
        if token is not None:
            otel_context.detach(token)


def current_carrier() -> dict[str, str]:
    """W3C trace-context headers of the current span, to pass to another process."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def _span_kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER}[kind]


@contextmanager
def server_span(name: str, carrier: dict[str, str] | None, attributes: Mapping[str, Any]
                ) -> Iterator[tuple[Any, dict[str, str]]]:
    """A SERVER span for one incoming call, child of the caller's context in ``carrier``, with
    ``attributes`` as given (semantic-convention names). It is not made the current span (it may
    stay open across an async generator's yields): it yields the span and the W3C headers its
    children are started from (None and no headers when there is neither a tracer nor a caller's
    context)."""
    if not carrier and not tracing_on():
        yield None, {}
        return
    try:
        from opentelemetry import trace
        from opentelemetry.propagate import extract, inject
    except ImportError:
        yield None, dict(carrier or {})
        return
    tracer = trace.get_tracer(TRACER_NAME)
    parent = extract(carrier or {})  # baggage included: it travels on to the children
    span = tracer.start_span(name, context=parent, kind=_span_kind("server"), attributes=dict(attributes))
    child: dict[str, str] = {}
    inject(child, context=trace.set_span_in_context(span, parent))
    try:
        yield span, child
    finally:
        span.end()

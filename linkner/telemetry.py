"""OpenTelemetry helpers shared by every process of the service: tracer set-up from config, and
W3C trace-context carriers passed explicitly across deployment calls (Ray's own tracing hooks
are alpha, so the context travels in the call's arguments)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

class TelemetryConfig(BaseModel):
    """OpenTelemetry traces of every linking stage."""

    model_config = ConfigDict(extra="forbid")
    exporter: Literal["none", "console", "otlp", "jsonl"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    jsonl_path: str | None = Field(None, description="file the jsonl exporter appends finished spans to")
    service_name: str = "linkner-serve"


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


def setup_tracing(config: TelemetryConfig, component: str) -> None:
    """Install a tracer provider for this process once (no-op exporter 'none')."""
    global _configured
    with _lock:
        if _configured or config.exporter == "none":
            return
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": config.service_name,
                                                            "linkner.component": component}))
        if config.exporter == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif config.exporter == "jsonl":
            if not config.jsonl_path:
                raise ValueError("telemetry exporter 'jsonl' needs jsonl_path")
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(config.jsonl_path)))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint,
                                                                            insecure=True)))
        trace.set_tracer_provider(provider)
        _configured = True


@contextmanager
def traced(name: str, carrier: dict[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span named ``name``, child of the context in ``carrier`` (W3C headers) when given."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.propagate import extract
    except ImportError:  # telemetry is optional for the core library
        yield None
        return
    parent = extract(carrier) if carrier else otel_context.get_current()
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=parent) as span:
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(f"linkner.{key}", value)
        yield span


def current_carrier() -> dict[str, str]:
    """W3C trace-context headers of the current span, to pass to another process."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier

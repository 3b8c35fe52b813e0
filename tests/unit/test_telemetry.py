"""Tracing set-up without Ray: the standard OTEL_* variables against the config file, parent-based
sampling, OTLP export over gRPC and HTTP to real receivers, and an unreachable collector that
must not slow the request path."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from otlp_receiver import OTLPReceiver, span_records
from linkner.telemetry import TelemetryConfig, build_provider, with_environment


def test_environment_wins_over_the_config_file():
    file = TelemetryConfig(exporter="jsonl", jsonl_path="x.jsonl", service_name="from-file",
                           resource_attributes={"deployment.environment": "file", "team": "nlp"}, sampler_ratio=0.5)
    config = with_environment(file, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_SERVICE_NAME": "from-env", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,region=eu%2Dwest",
        "PATH": "/bin"})
    assert config.exporter == "otlp" and config.otlp_protocol == "http/protobuf"
    assert config.otlp_endpoint == "http://collector:4318/v1/traces"  # the base URL gets the signal's path
    assert (config.sampler, config.sampler_ratio, config.service_name) == ("parentbased_traceidratio", 0.25, "from-env")
    assert config.resource_attributes == {"deployment.environment": "prod", "team": "nlp", "region": "eu-west"}


def test_environment_specific_variables_and_switches():
    grpc_env = with_environment(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317",
                                                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317"})
    assert (grpc_env.exporter, grpc_env.otlp_endpoint, grpc_env.otlp_protocol) == ("otlp", "http://b:4317", "grpc")
    assert with_environment(TelemetryConfig(), {}) == TelemetryConfig()  # nothing set: the file stands
    assert with_environment(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}).exporter == "none"
    off = with_environment(TelemetryConfig(exporter="otlp"), {"OTEL_TRACES_EXPORTER": "none"})
    assert off.exporter == "none"
    assert with_environment(TelemetryConfig(exporter="otlp"), {"OTEL_SDK_DISABLED": "true"}).exporter == "none"
    named = with_environment(TelemetryConfig(), {"OTEL_RESOURCE_ATTRIBUTES": "service.name=svc"})
    assert named.service_name == "svc"
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        with_environment(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        with_environment(TelemetryConfig(), {"OTEL_TRACES_SAMPLER_ARG": "half"})


def test_parent_based_sampling_always_continues_a_sampled_caller():
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    provider = build_provider(TelemetryConfig(sampler_ratio=0.0), "test")
    tracer = provider.get_tracer("t")
    caller = extract({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    unsampled = extract({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"})
    with tracer.start_as_current_span("continued", context=caller) as span:
        assert span.is_recording() and span.get_span_context().trace_flags.sampled
        assert f"{span.get_span_context().trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    with tracer.start_as_current_span("unsampled caller", context=unsampled) as span:
        assert not span.is_recording()
    with tracer.start_as_current_span("root", context=trace.set_span_in_context(trace.INVALID_SPAN)) as span:
        assert not span.is_recording()  # ratio 0: a trace started here is dropped
    provider.shutdown()


def test_otlp_grpc_export_reaches_a_receiver():
    with OTLPReceiver() as receiver:
        provider = build_provider(TelemetryConfig(exporter="otlp", otlp_endpoint=receiver.endpoint,
                                                  service_name="svc", resource_attributes={"a": "b"}), "test")
        with provider.get_tracer("t").start_as_current_span("hello") as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
        provider.force_flush()
        [record] = receiver.wait_for(trace_id, {"hello"}, 5)
        assert record["resource"]["service.name"] == "svc" and record["resource"]["a"] == "b"
        provider.shutdown()


def test_otlp_http_protobuf_export_reaches_a_receiver():
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            return None

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            received.extend(dict(record, path=self.path) for record in span_records(request))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = with_environment(TelemetryConfig(), {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        provider = build_provider(config, "test")
        with provider.get_tracer("t").start_as_current_span("over http"):
            pass
        provider.force_flush()
        provider.shutdown()
    finally:
        server.shutdown()
    assert [(r["name"], r["path"]) for r in received] == [("over http", "/v1/traces")]


def test_an_unreachable_collector_adds_no_latency(monkeypatch):
    """A collector that accepts connections and never answers (the worst case: a closed port fails
    fast): ending spans only queues them, and a full queue drops spans instead of waiting. The
    export to it blocks for its timeout (set to a minute here); the 3000 spans, far more than the
    queue holds, must all end long before that (bounds sized for a loaded machine, not for speed).
    Nothing of it outlives the test: an export thread still retrying when the interpreter exits
    calls into gRPC while it is torn down (the likely cause of a crash of the test process at exit)."""
    from linkner import telemetry

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "60")  # read by the OTLP exporter when built
    exporters = []
    real_exporter = telemetry.build_exporter

    def keep_exporter(config: TelemetryConfig):
        exporters.append(real_exporter(config))
        return exporters[-1]

    monkeypatch.setattr(telemetry, "build_exporter", keep_exporter)
    threads_before = set(threading.enumerate())
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # connections complete in the kernel; nobody ever reads them
    provider = None
    try:
        config = TelemetryConfig(exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{hole.getsockname()[1]}",
                                 max_queue_size=256, export_delay_ms=10)
        provider = build_provider(config, "test")
        tracer = provider.get_tracer("t")
        each: list[float] = []

        def requests() -> None:
            for count in range(3200):
                begin = time.perf_counter()
                with tracer.start_as_current_span("request"):
                    pass
                each.append(time.perf_counter() - begin)
                if count == 200:
                    time.sleep(0.2)  # the exporter thread is now stuck on the black hole

        worker = threading.Thread(target=requests, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), f"ending spans waited for the collector: {len(each)} of 3200 ended in 30 s"
        assert len(each) == 3200 and max(each) < 5.0, max(each)  # none waited for the export's minute
        hole.settimeout(10)
        connection, _ = hole.accept()  # the exporter did try the collector: it is waiting on it
        connection.close()
    finally:
        hole.close()
        for exporter in exporters:
            exporter.shutdown()  # cancels the export waiting on the hole and ends its retries
        if provider is not None:
            provider.shutdown()  # then the export thread ends: the provider joins it
    left = [thread.name for thread in set(threading.enumerate()) - threads_before if thread.is_alive()]
    assert not left, f"threads outlive the provider's shutdown: {left}"


TRACER_LESS_PROCESS = """
import time
from linkner.telemetry import (PROVIDER_RECHECK_S, TelemetryConfig, build_provider, current_carrier, server_span,
                               traced, tracing_on)
from opentelemetry import trace

assert not tracing_on()
with server_span("call", {}, {}) as (span, carrier):
    assert span is None and carrier == {}
with traced("linkner.link") as span:
    assert span is None and current_carrier() == {}
caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
caller = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "baggage": "tenant=acme"}
with server_span("call", caller, {}) as (span, carrier):  # no tracer, but a caller's trace: it travels on
    assert f"{span.get_span_context().trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    with traced("linkner.request", carrier) as child:
        assert f"{child.get_span_context().trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
        onward = current_carrier()  # what the next process gets
        assert onward["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736", onward
        assert onward["baggage"] == "tenant=acme", onward
with server_span("call", {"baggage": "tenant=acme"}, {}) as (span, carrier):  # baggage alone travels too
    with traced("linkner.request", carrier):
        assert current_carrier().get("baggage") == "tenant=acme"
trace.set_tracer_provider(build_provider(TelemetryConfig(exporter="console"), "test"))
time.sleep(PROVIDER_RECHECK_S)  # a provider set by whoever embeds the library is found within this
assert tracing_on()
with server_span("call", {}, {}) as (span, carrier):
    assert span.is_recording() and carrier["traceparent"]
    with traced("linkner.request", carrier) as child:
        assert child.is_recording() and child.get_span_context().trace_id == span.get_span_context().trace_id
# with a tracer too, the caller's baggage reaches the next process (the NER and LLM replicas get
# current_carrier()) and is current there, hop after hop
from opentelemetry import baggage
with server_span("call", caller, {}) as (span, carrier):
    assert carrier["baggage"] == "tenant=acme", carrier
    with traced("linkner.request", carrier):
        onward = current_carrier()
        assert onward["baggage"] == "tenant=acme" and onward["traceparent"].split("-")[1] == caller_trace, onward
    with traced("linkner.llm.classify", onward) as replica:  # as in the LLM replica
        assert baggage.get_baggage("tenant") == "acme" and replica.is_recording()
        assert current_carrier()["baggage"] == "tenant=acme"
print("ok", file=__import__("sys").stderr)  # stdout carries the exporter's spans, written from its own thread
"""


def test_without_a_tracer_spans_cost_nothing_but_a_callers_trace_still_travels():
    """No tracer set up (exporter none): no span objects at all unless a caller's trace context
    must be carried on; once a tracer provider is set, every span records (own process: the
    tracer provider is global and set once)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TRACER_LESS_PROCESS], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0 and "ok" in done.stderr.splitlines(), done.stderr[-2000:]

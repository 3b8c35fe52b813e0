"""A small OTLP/gRPC trace receiver (opentelemetry-proto's TraceService) on 127.0.0.1: it keeps
every exported span as a plain dict and can append them to a JSON-lines file. Used by the tests,
the tracing benchmark and the waterfall script in place of a collector.

    python tests/otlp_receiver.py --port 4317 --out spans.jsonl   # stand-alone, until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def span_records(request: Any) -> list[dict[str, Any]]:
    """The spans of one ``ExportTraceServiceRequest`` as dicts (ids in hex, times in ns)."""
    records = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append({
                    "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                    "parent_id": span.parent_span_id.hex() or None, "kind": int(span.kind),
                    "start_ns": span.start_time_unix_nano, "end_ns": span.end_time_unix_nano,
                    "attributes": {item.key: _value(item.value) for item in span.attributes},
                    "status": int(span.status.code), "resource": resource,
                })
    return records


class OTLPReceiver:
    """``with OTLPReceiver() as receiver:`` serves on ``receiver.endpoint`` (a free port unless given)."""

    def __init__(self, port: int = 0, out: Path | None = None, keep: bool = True,
                 only_trace: str | None = None) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.received = 0  # spans, kept or not
        self.out = out
        self._lock = threading.Lock()
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC naming)
                records = span_records(request)
                with receiver._lock:
                    receiver.requests += 1
                    receiver.received += len(records)
                    if only_trace is not None:
                        records = [record for record in records if record["trace_id"] == only_trace]
                    if keep:
                        receiver.spans.extend(records)
                    if receiver.out is not None:
                        with receiver.out.open("a", encoding="utf-8") as handle:
                            handle.writelines(json.dumps(record) + "\n" for record in records)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OTLPReceiver":
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop(grace=None)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]

    def wait_for(self, trace_id: str, names: set[str], timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` once every name in ``names`` arrived (or the timeout passed)."""
        return self.wait_until(trace_id, lambda spans: names <= {span["name"] for span in spans}, timeout_s)

    def wait_until(self, trace_id: str, complete: Callable[[list[dict[str, Any]]], bool],
                   timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` once ``complete(spans)`` holds (or the timeout passed): spans of
        one trace come from several processes, each exporting on its own schedule."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.trace(trace_id)
            if complete(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--out", type=Path, default=None, help="append spans here as JSON lines")
    parser.add_argument("--only-trace", default=None, help="keep only this trace id's spans (32 hex digits)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    with OTLPReceiver(args.port, args.out, keep=False, only_trace=args.only_trace) as receiver:
        print(f"OTLP/gRPC receiver on {receiver.endpoint}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"received {receiver.received} spans in {receiver.requests} exports", flush=True)


if __name__ == "__main__":
    main()

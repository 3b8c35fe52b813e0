"""Servicer registration for Ray Serve's gRPC proxy that hands the caller's standard gRPC deadline
to the ingress deployment.

Ray's proxy copies a call's metadata into the context the deployment receives, but not its
deadline (``time_remaining()``). Registering the LinkNER servicer through
:func:`add_LinkNERServicer_to_server` (named in ``grpc_servicer_functions``) wraps the proxy's own
method handlers so that, when a caller set a deadline, the remaining time travels as one more
``linkner-deadline-ms`` metadata entry. The ingress takes the earliest of all such entries, so a
client that also sends the entry itself keeps working.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from protos.linkner.v1 import linkner_pb2_grpc

DEADLINE_METADATA = "linkner-deadline-ms"


class _DeadlineContext:
    """The proxy's servicer context, with the remaining deadline added to its metadata."""

    def __init__(self, context: Any) -> None:
        self._context = context
        remaining = context.time_remaining()
        extra = [] if remaining is None else [(DEADLINE_METADATA, f"{1000.0 * remaining:.0f}")]
        self._metadata = tuple(context.invocation_metadata() or ()) + tuple(extra)

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _unary(handler: Callable) -> Callable:
    async def call(request: Any, context: Any) -> Any:
        return await handler(request, _DeadlineContext(context))

    return call


def _server_streaming(handler: Callable) -> Callable:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        async for message in handler(request, _DeadlineContext(context)):
            yield message

    return call


def add_LinkNERServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 (gRPC's naming)
    """Register ``linkner.v1.LinkNER`` on Ray's proxy server, deadlines forwarded. On any other
    server (no Ray override hook) this is the generated registration, unchanged."""
    override = getattr(server, "_override_method_handler", None)
    if override is None:
        linkner_pb2_grpc.add_LinkNERServicer_to_server(servicer, server)
        return

    def with_deadlines(service_method: str, method_handler: Any) -> Any:
        handler = override(service_method, method_handler)
        return handler._replace(unary_unary=_unary(handler.unary_unary),
                                unary_stream=_server_streaming(handler.unary_stream))

    server._override_method_handler = with_deadlines
    try:
        linkner_pb2_grpc.add_LinkNERServicer_to_server(servicer, server)
    finally:
        del server._override_method_handler

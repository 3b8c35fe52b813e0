"""Servicer registration for Ray Serve's gRPC proxy that hands the caller's standard gRPC deadline
to the ingress deployment.

Ray's proxy copies a call's metadata into the context the deployment receives, but not its
deadline (``time_remaining()``). Registering the LinkNER servicer through
:func:`add_LinkNERServicer_to_server` (named in ``grpc_servicer_functions``) wraps the proxy's own
method handlers so that, when a caller set a deadline, the remaining time travels as one more
``linkner-deadline-ms`` metadata entry. The ingress takes the earliest of all such entries, so a
client that also sends the entry itself keeps working.

The wrapped handlers also decode requests safely: a message protobuf cannot parse (a string field
holding invalid UTF-8, such as a lone UTF-16 surrogate some clients encode) is refused with
INVALID_ARGUMENT naming the problem, where gRPC would answer UNKNOWN.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import grpc

from protos.linkner.v1 import linkner_pb2_grpc

DEADLINE_METADATA = "linkner-deadline-ms"


class DeadlineContext:
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


class _Undecodable:
    """A request that did not parse, and why (the handler refuses it with INVALID_ARGUMENT)."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.details = (f"the request is not a valid {message_type}: {error} (a string field must be valid UTF-8: "
                        "a lone UTF-16 surrogate is not)")


def safe_deserializer(deserializer: Callable | None) -> Callable | None:
    """``deserializer`` returning an :class:`_Undecodable` instead of raising on a bad message."""
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as error:  # noqa: BLE001 (protobuf's DecodeError, and anything else a parser raises)
            owner = getattr(deserializer, "__self__", None)
            name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request message")
            return _Undecodable(name, error)

    return parse


def unary_handler(handler: Callable) -> Callable:
    """``handler`` with the caller's deadline in its metadata; an undecodable request is refused."""

    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
        return await handler(request, DeadlineContext(context))

    return call


def server_streaming_handler(handler: Callable) -> Callable:
    """The same for a server-streaming ``handler``."""

    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
        async for message in handler(request, DeadlineContext(context)):
            yield message

    return call


def _wrapped(override: Callable) -> Callable:
    """Ray's handler override, plus deadlines forwarded and requests decoded safely."""

    def with_deadlines(service_method: str, method_handler: Any) -> Any:
        handler = override(service_method, method_handler)
        return handler._replace(unary_unary=unary_handler(handler.unary_unary),
                                unary_stream=server_streaming_handler(handler.unary_stream),
                                request_deserializer=safe_deserializer(handler.request_deserializer))

    return with_deadlines


def _register(server: Any, add: Callable[[Any, Any], None], servicer: Any) -> None:
    override = getattr(server, "_override_method_handler", None)
    if override is None:
        add(servicer, server)
        return
    server._override_method_handler = _wrapped(override)
    try:
        add(servicer, server)
    finally:
        del server._override_method_handler


def add_LinkNERServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 (gRPC's naming)
    """Register ``linkner.v1.LinkNER`` on Ray's proxy server, deadlines forwarded and requests decoded
    safely. On any other server (no Ray override hook) this is the generated registration, unchanged."""
    _register(server, linkner_pb2_grpc.add_LinkNERServicer_to_server, servicer)


def add_HealthServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 (gRPC's naming)
    """Register ``grpc.health.v1.Health`` the same way (deadlines forwarded, requests decoded safely)."""
    from grpc_health.v1 import health_pb2_grpc

    _register(server, health_pb2_grpc.add_HealthServicer_to_server, servicer)

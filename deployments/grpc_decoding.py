"""Requests decoded safely: a message protobuf cannot parse (a string field holding invalid UTF-8,
such as a lone UTF-16 surrogate some clients encode) is refused with ``INVALID_ARGUMENT`` naming
the problem, where gRPC would answer ``UNKNOWN``. The ingress's server wraps each method with it."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import grpc


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
    """``handler``, refusing an undecodable request."""

    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
        return await handler(request, context)

    return call


def server_streaming_handler(handler: Callable) -> Callable:
    """The same for a server-streaming ``handler``."""

    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
        async for message in handler(request, context):
            yield message

    return call

"""The gRPC server each ingress replica runs itself, on the port callers dial.

Ray Serve's gRPC proxy cannot speak TLS and reads messages of up to 2 GiB, so the ingress answers
on a ``grpc.aio`` server of its own, on the replica's event loop, and Ray's proxies stay off
(``proxy_location: Disabled``):

- TLS, or mutual TLS, with the certificates named in ``server`` (``ServerConfig``);
- a bearer token in the ``authorization`` metadata (``UNAUTHENTICATED`` without it; the health
  service stays open for probes);
- a receive limit that follows the request limits: a larger message is refused with
  ``RESOURCE_EXHAUSTED`` before it is buffered;
- the ingress's own admission limits: ``router.max_ongoing_requests`` calls at once and
  ``router.max_queued_requests`` waiting, more refused at once with ``RESOURCE_EXHAUSTED``;
- ``grpc.health.v1`` and server reflection;
- ``SO_REUSEPORT``: every ingress replica of the application on a node listens on the same port
  and the kernel spreads connections, so the port outlives any one replica.

Requests are decoded safely (:mod:`deployments.grpc_decoding`); the ingress reads each call's gRPC
deadline from its context.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from pathlib import Path
from typing import Any, Callable

import grpc

from deployments.grpc_decoding import server_streaming_handler, safe_deserializer, unary_handler
from linkner.service.limits import max_request_bytes
from linkner.service.config import AUTH_TOKEN_ENV, RouterConfig, ServerConfig
from protos.linkner.v1 import linkner_pb2_grpc

SERVICE = "linkner.v1.LinkNER"
HEALTH_SERVICE = "grpc.health.v1.Health"
OPEN_METHODS_PREFIX = f"/{HEALTH_SERVICE}/"  # probes need no token
UNAUTHENTICATED_DETAILS = "missing or wrong bearer token: send the metadata `authorization: Bearer <token>`"


class ServerSetupError(ValueError):
    """The ``server`` settings cannot be served (a missing certificate, an empty token file)."""


def auth_token(settings: ServerConfig, environ: dict[str, str] | None = None) -> str | None:
    """The token callers must send: the ``LINKNER_AUTH_TOKEN`` environment variable, else the
    content of ``server.auth_token_file``; None when neither is set."""
    environ = os.environ if environ is None else environ
    token = environ.get(AUTH_TOKEN_ENV, "").strip()
    if not token and settings.auth_token_file:
        token = _read(settings.auth_token_file, "server.auth_token_file").decode("utf-8").strip()
        if not token:
            raise ServerSetupError(f"server.auth_token_file={settings.auth_token_file} is empty")
    return token or None


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ServerSetupError(f"{key}={path}: {error.strerror or error}") from None


def server_credentials(settings: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials (mutual when ``tls_client_ca`` is set), or None for a plaintext port."""
    if not settings.tls_cert:
        return None
    ca = _read(settings.tls_client_ca, "server.tls_client_ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(_read(settings.tls_key, "server.tls_key"),
                                         _read(settings.tls_cert, "server.tls_cert"))],
                                       root_certificates=ca, require_client_auth=ca is not None)


class BearerToken(grpc.aio.ServerInterceptor):
    """Refuse every call but health checks whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode("utf-8")

    def authorized(self, metadata: Any) -> bool:
        """Whether the call's metadata carries the token (compared in constant time)."""
        for key, value in metadata or ():
            if key == "authorization":
                sent = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(sent, self._expected)
        return False

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS_PREFIX) or self.authorized(
                details.invocation_metadata):
            return handler
        return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS)


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends every call with ``code``."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, details)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class Admission:
    """At most ``ongoing`` calls at once and ``queued`` waiting for a slot (-1: unbounded); a call
    beyond both is refused at once, as Ray Serve refuses calls beyond a replica's limits."""

    def __init__(self, ongoing: int, queued: int) -> None:
        self._slots = asyncio.Semaphore(ongoing)
        self._queued = queued
        self._waiting = 0

    def full(self) -> bool:
        """Whether a call arriving now must be refused."""
        return self._slots.locked() and 0 <= self._queued <= self._waiting

    async def __aenter__(self) -> None:
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1

    async def __aexit__(self, *exc: Any) -> None:
        self._slots.release()


OVERLOADED_DETAILS = "overloaded, try again later: the ingress replica's calls and queue are full"


def _admitted(method: str, call: Callable, admission: Admission, refused: Callable[[str], None],
              streaming: bool) -> Callable:
    """``call`` behind ``admission``; a refused call ends with RESOURCE_EXHAUSTED and is counted."""

    async def refuse_if_full(context: Any) -> None:
        if admission.full():
            refused(method)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVERLOADED_DETAILS)

    async def stream(request: Any, context: Any) -> Any:
        await refuse_if_full(context)
        async with admission:
            async for message in call(request, context):
                yield message

    async def unary(request: Any, context: Any) -> Any:
        await refuse_if_full(context)
        async with admission:
            return await call(request, context)

    return stream if streaming else unary


class _Collector:
    """Stands in for a server to collect what a generated ``add_*Servicer_to_server`` registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:  # the generated code also calls this
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.services[service] = handlers


def linkner_handlers(ingress: Any, admission: Admission, refused: Callable[[str], None]
                     ) -> dict[str, grpc.RpcMethodHandler]:
    """``linkner.v1.LinkNER``'s method handlers over the ingress: requests decoded safely, the
    caller's deadline forwarded, every call behind ``admission``."""
    collector = _Collector()
    linkner_pb2_grpc.add_LinkNERServicer_to_server(ingress, collector)
    handlers = {}
    for method, handler in collector.services[SERVICE].items():
        streaming = handler.response_streaming
        kind, wrap = ("unary_stream", server_streaming_handler) if streaming else ("unary_unary", unary_handler)
        behaviour = _admitted(method, wrap(getattr(handler, kind)), admission, refused, streaming)
        handlers[method] = handler._replace(**{kind: behaviour},
                                            request_deserializer=safe_deserializer(handler.request_deserializer))
    return handlers


def health_handlers(ingress: Any) -> dict[str, grpc.RpcMethodHandler]:
    """``grpc.health.v1.Health/Check`` answered by the ingress (``Watch`` is not offered)."""
    from grpc_health.v1 import health_pb2

    check = unary_handler(ingress.Check)
    return {"Check": grpc.unary_unary_rpc_method_handler(
        check, request_deserializer=safe_deserializer(health_pb2.HealthCheckRequest.FromString),
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString)}


def build_server(ingress: Any, settings: ServerConfig, router: RouterConfig,
                 refused: Callable[[str], None] = lambda method: None) -> tuple[grpc.aio.Server, int]:
    """A ``grpc.aio`` server answering ``linkner.v1.LinkNER`` and health over ``ingress``, bound
    to ``settings.host:settings.port`` (not started yet). Returns the server and the bound port.
    ``refused(method)`` is told of every call refused for overload."""
    token = auth_token(settings)
    limit = settings.max_receive_message_bytes or max_request_bytes(router.limits)
    server = grpc.aio.server(
        interceptors=[BearerToken(token)] if token else [],
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", limit)])
    admission = Admission(router.max_ongoing_requests, router.max_queued_requests)
    for service, handlers in ((SERVICE, linkner_handlers(ingress, admission, refused)),
                              (HEALTH_SERVICE, health_handlers(ingress))):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
    if settings.reflection:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection((SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as error:
        raise ServerSetupError(f"cannot listen on {address}: {error}") from None
    return server, port

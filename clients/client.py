"""Python clients of the LinkNER gRPC service (sync and asyncio). They need only ``protos/``
(installable alone as the ``linkner-client`` distribution, see ``clients/README.md``).

Both send the call's deadline as a gRPC deadline and retry what did not run (``UNAVAILABLE``,
``RESOURCE_EXHAUSTED``, ``CANCELLED``) with jittered exponential backoff, within gRPC's retry
throttling budget and never past the call's deadline.

Where the server asks for them, they authenticate with a bearer token (``authorization: Bearer
<token>`` on every call; by default the ``LINKNER_AUTH_TOKEN`` environment variable) and speak TLS
(``tls_ca``), or mutual TLS with a client certificate (``tls_cert`` and ``tls_key``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import grpc

from protos.linkner.v1 import linkner_pb2 as pb
from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc
from protos.convert import description_from_proto, options_to_proto, request_to_proto, result_from_proto
from protos.protocol import Description, RecognizeOptions, RecognizeRequest, RecognizeResult

DEFAULT_TARGET = "127.0.0.1:9000"
# The request did not run: a replica was unavailable, or a queue was full (refused before any work).
# CANCELLED from the server: a stopping replica (a rollout, a scale-down) drops calls it had received but
# not started (the client never cancels a call itself, and every method only reads), so they are retried too.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
# gRPC's own client-side balancing: a target naming several ingress replicas
# ("ipv4:127.0.0.1:9000,127.0.0.1:9001", or a DNS name with several addresses) spreads calls over
# all of them and skips one that is down; with one address it is a plain connection
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin"),
                   # reconnect within the retries' backoff when a replica's connection is reset (gRPC waits 1 s)
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 2000)]
TOKEN_ENV = "LINKNER_AUTH_TOKEN"  # the bearer token every client sends when none is given
PathLike = str | os.PathLike[str]


HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = 1  # grpc.health.v1.HealthCheckResponse.SERVING


def health_request(service: str) -> bytes:
    """A serialized ``grpc.health.v1.HealthCheckRequest`` (field 1: the service name), so the client
    needs no health-checking package."""
    name = service.encode("utf-8")
    return b"" if not name else b"\x0a" + varint(len(name)) + name


def health_status(raw: bytes) -> int:
    """The ``status`` (field 1, a varint) of a serialized ``grpc.health.v1.HealthCheckResponse``."""
    if len(raw) >= 2 and raw[0] == 0x08:
        return raw[1] & 0x7F
    return 0  # UNKNOWN: the field is absent


def varint(value: int) -> bytes:
    """``value`` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class RetryBudget:
    """gRPC's retry throttling: a failure costs a token, a success earns ``ratio`` of one, and
    retries stop while half the tokens or fewer are left, so a failing server is not flooded."""

    def __init__(self, max_tokens: float = 10.0, ratio: float = 0.1) -> None:
        self.max_tokens, self.ratio, self.tokens = max_tokens, ratio, max_tokens

    def failed(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)

    def succeeded(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def allows_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2


class LinkNERError(RuntimeError):
    """The service refused or failed a call; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class LinkNERConfigError(ValueError):
    """A client argument cannot be used (the token, the TLS files); the message never quotes the token."""


def build_request(text: str | None = None, words: Sequence[str] | None = None, request_id: str = "",
                  **options: Any) -> pb.RecognizeRequest:
    """A ``linkner.v1.RecognizeRequest``; ``options`` are :class:`RecognizeOptions` fields (None keeps
    the server's choice)."""
    return request_to_proto(RecognizeRequest(text=text or "", words=list(words or []),
                                             options=RecognizeOptions(**options), request_id=request_id))


def build_options(**options: Any) -> pb.Options:
    """A batch's ``linkner.v1.Options`` from :class:`RecognizeOptions` fields."""
    return options_to_proto(RecognizeOptions(**options))


def resolve_token(token: str | None) -> str | None:
    """The bearer token to send: ``token``, or ``$LINKNER_AUTH_TOKEN`` when it is None; "" sends none.
    Errors never quote the token."""
    token = os.environ.get(TOKEN_ENV) if token is None else token
    token = (token or "").strip()
    if token and not (token.isascii() and token.isprintable()):
        raise LinkNERConfigError("the auth token must be printable ASCII (gRPC metadata)")
    return token or None


def channel_credentials(tls_ca: PathLike | None = None, tls_cert: PathLike | None = None,
                        tls_key: PathLike | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files, or None (plaintext) when none is given. ``tls_ca`` verifies
    the server (the system's roots without it); ``tls_cert`` with ``tls_key`` is the client's
    certificate for mutual TLS."""
    if (tls_cert is None) != (tls_key is None):
        raise LinkNERConfigError("a client certificate needs both tls_cert and tls_key")
    if tls_ca is None and tls_cert is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read_pem(tls_ca), private_key=_read_pem(tls_key),
                                        certificate_chain=_read_pem(tls_cert))


def _read_pem(path: PathLike | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise LinkNERConfigError(f"{path}: cannot read ({error.strerror or error})") from None


class BaseClient:
    """What both clients share: the channel (TLS or not), the metadata (token included) and the retry policy."""

    channel_api: Any = grpc  # grpc or grpc.aio: where the channel comes from

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout_s: float = 30.0, retries: int = 3,
                 backoff_s: float = 0.2, token: str | None = None,
                 tls_ca: PathLike | None = None, tls_cert: PathLike | None = None, tls_key: PathLike | None = None,
                 tls_server_name: str | None = None) -> None:
        """Connect to ``target`` (host:port, or ``ipv4:HOST:PORT,HOST:PORT`` for several replicas).

        ``token``: bearer token sent on every call (default ``$LINKNER_AUTH_TOKEN``; "" sends none).
        ``tls_ca``, ``tls_cert``, ``tls_key``: PEM files; any of them makes the channel TLS, the last
        two together give the client certificate of mutual TLS. ``tls_server_name``: the name the
        server's certificate must carry when it is not the target's host."""
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.budget = RetryBudget()
        self._token = resolve_token(token)
        credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        self.secure = credentials is not None
        self.channel = self._open_channel(credentials, tls_server_name)
        self.stub = pb_grpc.LinkNERStub(self.channel)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(target={self.target!r}, "
                f"tls={self.secure}, token={'set' if self._token else 'none'})")

    def _open_channel(self, credentials: grpc.ChannelCredentials | None, server_name: str | None) -> Any:
        if server_name and credentials is None:
            raise LinkNERConfigError("tls_server_name needs TLS: give tls_ca (or tls_cert and tls_key) too")
        options = CHANNEL_OPTIONS + ([("grpc.ssl_target_name_override", server_name)] if server_name else [])
        if credentials is None:
            return self.channel_api.insecure_channel(self.target, options=options)
        return self.channel_api.secure_channel(self.target, credentials, options=options)

    def _metadata(self) -> list[tuple[str, str]]:
        """The token, when there is one (the deadline travels as the call's gRPC deadline)."""
        return [("authorization", f"Bearer {self._token}")] if self._token else []

    def _retry_delay(self, code: grpc.StatusCode, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt (exponential, jittered, never past the deadline),
        or None to give up: not retryable, retries used up, the retry budget spent, or no time left."""
        if code in RETRYABLE:
            self.budget.failed()
        if (code not in RETRYABLE or attempt >= self.retries or not self.budget.allows_retry()
                or time.monotonic() >= deadline):
            return None
        delay = self.backoff_s * 2**attempt * random.uniform(0.5, 1.0)
        left = deadline - time.monotonic()
        return delay if delay < left else None


class LinkNERClient(BaseClient):
    """Blocking client. Use as a context manager or call :meth:`close`; arguments as :class:`BaseClient`."""

    def __enter__(self) -> "LinkNERClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def recognize(self, text: str | None = None, *, words: Sequence[str] | None = None,
                  timeout_s: float | None = None, request_id: str = "", **options: Any) -> RecognizeResult:
        """Entities of one text (or pre-tokenized words)."""
        request = build_request(text, words, request_id, **options)
        return result_from_proto(self._call(self.stub.Recognize, request, timeout_s))

    def recognize_batch(self, texts: Iterable[str], *, timeout_s: float | None = None, **options: Any) -> list[RecognizeResult]:
        """Entities of many texts in one call."""
        request = pb.RecognizeBatchRequest(items=[pb.RecognizeRequest(text=t) for t in texts],
                                           options=build_options(**options))
        return [result_from_proto(r) for r in self._call(self.stub.RecognizeBatch, request, timeout_s).results]

    def recognize_stream(self, texts: Iterable[str], *, timeout_s: float | None = None,
                         **options: Any) -> Iterator[RecognizeResult]:
        """Results of many texts, streamed one by one as the server finishes them (no retries)."""
        request = pb.RecognizeBatchRequest(items=[pb.RecognizeRequest(text=t) for t in texts],
                                           options=build_options(**options))
        timeout = timeout_s or self.timeout_s
        try:
            for response in self.stub.RecognizeStream(request, timeout=timeout, metadata=self._metadata()):
                yield result_from_proto(response)
        except grpc.RpcError as error:
            raise LinkNERError(error.code(), error.details() or "") from None

    def describe(self, *, timeout_s: float | None = None) -> Description:
        """The server's model, labels, estimators, LLM, default policy and calibration status."""
        return description_from_proto(self._call(self.stub.Describe, pb.DescribeRequest(), timeout_s))

    def health(self, timeout_s: float = 5.0, service: str = "") -> bool:
        """Whether the standard ``grpc.health.v1`` check answers SERVING for ``service`` ("": the
        service; ``linkner.v1.LinkNER/llm``: the LLM pool)."""
        method = self.channel.unary_unary(HEALTH_CHECK, request_serializer=health_request,
                                          response_deserializer=lambda raw: raw)
        try:
            return health_status(method(service, timeout=timeout_s, metadata=self._metadata())) == SERVING
        except grpc.RpcError:
            return False

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        timeout = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = method(request, timeout=max(0.001, remaining), metadata=self._metadata())
                self.budget.succeeded()
                return response
            except grpc.RpcError as error:
                delay = self._retry_delay(error.code(), attempt, deadline)
                if delay is None:
                    raise LinkNERError(error.code(), error.details() or "") from None
            time.sleep(delay)
            attempt += 1


class AsyncLinkNERClient(BaseClient):
    """asyncio client (``grpc.aio``); arguments as :class:`BaseClient`."""

    channel_api = grpc.aio

    async def __aenter__(self) -> "AsyncLinkNERClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def recognize(self, text: str | None = None, *, words: Sequence[str] | None = None,
                        timeout_s: float | None = None, request_id: str = "", **options: Any) -> RecognizeResult:
        request = build_request(text, words, request_id, **options)
        return result_from_proto(await self._call(self.stub.Recognize, request, timeout_s))

    async def recognize_batch(self, texts: Iterable[str], *, timeout_s: float | None = None,
                              **options: Any) -> list[RecognizeResult]:
        request = pb.RecognizeBatchRequest(items=[pb.RecognizeRequest(text=t) for t in texts],
                                           options=build_options(**options))
        return [result_from_proto(r) for r in (await self._call(self.stub.RecognizeBatch, request, timeout_s)).results]

    async def describe(self, *, timeout_s: float | None = None) -> Description:
        """The server's model, labels, estimators, LLM, default policy and calibration status."""
        return description_from_proto(await self._call(self.stub.Describe, pb.DescribeRequest(), timeout_s))

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        timeout = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = await method(request, timeout=max(0.001, remaining), metadata=self._metadata())
                self.budget.succeeded()
                return response
            except grpc.aio.AioRpcError as error:
                delay = self._retry_delay(error.code(), attempt, deadline)
                if delay is None:
                    raise LinkNERError(error.code(), error.details() or "") from None
            await asyncio.sleep(delay)
            attempt += 1

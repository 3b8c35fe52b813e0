"""Python clients of the LinkNER gRPC service (sync and asyncio). They need only ``protos/``.

Both send Ray Serve's ``application`` metadata and the call's deadline as a gRPC deadline (the
server reads it like any gRPC client's; the ``linkner-deadline-ms`` metadata they also send is
only for servers registered without ``deployments.grpc_deadlines``), and retry what did not run
(``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``) with jittered exponential backoff, within gRPC's retry
throttling budget and never past the call's deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Iterable, Iterator, Sequence

import grpc

from clients.models import Description, Result, description_from_proto, result_from_proto
from protos.linkner.v1 import linkner_pb2 as pb
from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:9000"
DEFAULT_APPLICATION = "linkner"
# The request did not run: a replica was unavailable, or a queue was full (refused before any work).
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
# gRPC's own client-side balancing: a target naming several ingress replicas
# ("ipv4:127.0.0.1:9000,127.0.0.1:9001", or a DNS name with several addresses) spreads calls over
# all of them and skips one that is down; with one address it is a plain connection
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]


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


def build_options(estimator: str | None = None, policy: str | None = None, threshold: float | None = None,
                  budget: float | None = None, max_llm_spans: int | None = None,
                  return_candidates: bool = False, return_words: bool = False) -> pb.Options:
    """A ``linkner.v1.Options`` message from keyword arguments (None keeps the server's choice)."""
    options = pb.Options(estimator=estimator or "", policy=policy or "", return_candidates=return_candidates,
                         return_words=return_words)
    if threshold is not None:
        options.threshold = threshold
    if budget is not None:
        options.budget = budget
    if max_llm_spans is not None:
        options.max_llm_spans = max_llm_spans
    return options


def build_request(text: str | None = None, words: Sequence[str] | None = None, request_id: str = "",
                  **options: Any) -> pb.RecognizeRequest:
    return pb.RecognizeRequest(text=text or "", words=[w.encode("utf-8") for w in words or []],
                               options=build_options(**options),
                               request_id=request_id)


class _Common:
    def __init__(self, target: str, application: str, timeout_s: float, retries: int, backoff_s: float) -> None:
        self.target = target
        self.application = application
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.budget = RetryBudget()

    def _metadata(self, timeout_s: float) -> list[tuple[str, str]]:
        return [("application", self.application), ("linkner-deadline-ms", str(int(timeout_s * 1000)))]

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


class LinkNERClient(_Common):
    """Blocking client. Use as a context manager or call :meth:`close`."""

    def __init__(self, target: str = DEFAULT_TARGET, application: str = DEFAULT_APPLICATION, timeout_s: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.2) -> None:
        super().__init__(target, application, timeout_s, retries, backoff_s)
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.LinkNERStub(self.channel)

    def __enter__(self) -> "LinkNERClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def recognize(self, text: str | None = None, *, words: Sequence[str] | None = None,
                  timeout_s: float | None = None, request_id: str = "", **options: Any) -> Result:
        """Entities of one text (or pre-tokenized words)."""
        request = build_request(text, words, request_id, **options)
        return result_from_proto(self._call(self.stub.Recognize, request, timeout_s))

    def recognize_batch(self, texts: Iterable[str], *, timeout_s: float | None = None, **options: Any) -> list[Result]:
        """Entities of many texts in one call."""
        request = pb.RecognizeBatchRequest(items=[pb.RecognizeRequest(text=t) for t in texts],
                                           options=build_options(**options))
        return [result_from_proto(r) for r in self._call(self.stub.RecognizeBatch, request, timeout_s).results]

    def recognize_stream(self, texts: Iterable[str], *, timeout_s: float | None = None,
                         **options: Any) -> Iterator[Result]:
        """Results of many texts, streamed one by one as the server finishes them (no retries)."""
        request = pb.RecognizeBatchRequest(items=[pb.RecognizeRequest(text=t) for t in texts],
                                           options=build_options(**options))
        timeout = timeout_s or self.timeout_s
        try:
            for response in self.stub.RecognizeStream(request, timeout=timeout, metadata=self._metadata(timeout)):
                yield result_from_proto(response)
        except grpc.RpcError as error:
            raise LinkNERError(error.code(), error.details() or "") from None

    def describe(self, *, timeout_s: float | None = None) -> Description:
        """The server's model, labels, estimators, LLM, default policy and calibration status."""
        return description_from_proto(self._call(self.stub.Describe, pb.DescribeRequest(), timeout_s))

    def health(self, timeout_s: float = 5.0) -> bool:
        """Ray Serve's gRPC health endpoint."""
        method = self.channel.unary_unary("/ray.serve.RayServeAPIService/Healthz",
                                          request_serializer=lambda _: b"", response_deserializer=lambda raw: raw)
        try:
            method(None, timeout=timeout_s)
            return True
        except grpc.RpcError:
            return False

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        timeout = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = method(request, timeout=max(0.001, remaining), metadata=self._metadata(remaining))
                self.budget.succeeded()
                return response
            except grpc.RpcError as error:
                delay = self._retry_delay(error.code(), attempt, deadline)
                if delay is None:
                    raise LinkNERError(error.code(), error.details() or "") from None
            time.sleep(delay)
            attempt += 1


class AsyncLinkNERClient(_Common):
    """asyncio client (``grpc.aio``)."""

    def __init__(self, target: str = DEFAULT_TARGET, application: str = DEFAULT_APPLICATION, timeout_s: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.2) -> None:
        super().__init__(target, application, timeout_s, retries, backoff_s)
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.LinkNERStub(self.channel)

    async def __aenter__(self) -> "AsyncLinkNERClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def recognize(self, text: str | None = None, *, words: Sequence[str] | None = None,
                        timeout_s: float | None = None, request_id: str = "", **options: Any) -> Result:
        request = build_request(text, words, request_id, **options)
        return result_from_proto(await self._call(self.stub.Recognize, request, timeout_s))

    async def recognize_batch(self, texts: Iterable[str], *, timeout_s: float | None = None,
                              **options: Any) -> list[Result]:
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
                response = await method(request, timeout=max(0.001, remaining), metadata=self._metadata(remaining))
                self.budget.succeeded()
                return response
            except grpc.aio.AioRpcError as error:
                delay = self._retry_delay(error.code(), attempt, deadline)
                if delay is None:
                    raise LinkNERError(error.code(), error.details() or "") from None
            await asyncio.sleep(delay)
            attempt += 1

"""The gRPC ingress, with RDC routing in the same deployment (one hop less per request): protobuf
in, the core's :class:`LinkNERService` over handles to the NER replicas (or the local model embedded
in this process, ``ner.placement: embedded``) and the LLM pool, protobuf out. Method names equal the
RPC names of ``linkner.v1.LinkNER`` (and ``grpc.health.v1`` Check).

Every failure leaves with its gRPC status (:func:`status_for`), never a silent OK: bad input is
INVALID_ARGUMENT, a full queue RESOURCE_EXHAUSTED, a missed deadline DEADLINE_EXCEEDED, a dead or
restarting replica UNAVAILABLE, and INTERNAL is left for real bugs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Sequence

import grpc
from ray import serve

from deployments.handles import CoalescingRecognizer, HandleBackend, NERClient, NERPool
from deployments.log_limits import limit_backpressure_warnings
from deployments.metrics import IngressMetrics
from linkner.llm.factory import candidate_count
from linkner.model.processes import WorkerLost
from linkner.routing.linker import DeadlineExceeded, RDCLinker
from linkner.service.calibration_state import calibration_state
from linkner.service.config import AppConfig
from linkner.service.documents import check_batch
from linkner.service.service import LinkNERService, Prepared
from linkner.telemetry import server_span, setup_tracing, traced
from protos.convert import description_to_proto, request_from_proto, result_to_proto
from protos.linkner.v1 import linkner_pb2 as pb
from protos.protocol import InvalidRequest

log = logging.getLogger(__name__)
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
SERVICE = "linkner.v1.LinkNER"
HEALTH_SERVICE = "grpc.health.v1.Health"
LLM_HEALTH_SERVICE = "linkner.v1.LinkNER/llm"  # health of the LLM pool alone: NOT_SERVING means degraded answers
HEALTH_PROBE_S = 2.0  # longest a health check waits for a replica's answer
# gRPC status codes that mark a server span as an error (OpenTelemetry's gRPC conventions)
SERVER_ERRORS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                 grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}


def served_model_name(info: dict) -> str:
    """The ``model`` of every answer: the checkpoint (name and weights), encoder, objective and the
    encoder's runtime when it is not float32 (``, int8``)."""
    name = f"{info['encoder']}:{info['objective']}"
    if info.get("runtime", "eager") != "eager":
        name += f", {info['runtime']}"
    return f"{info['checkpoint']} ({name})" if info.get("checkpoint") else name


DEADLINE_METADATA = "linkner-deadline-ms"
"""Milliseconds the caller still waits, for callers that cannot set a gRPC deadline (docs/api.md)."""


def caller_deadline(grpc_context: Any) -> float | None:
    """The caller's deadline as a wall-clock time: the earliest of its gRPC deadline and any
    ``linkner-deadline-ms`` metadata entry; None when it set neither (or outside gRPC)."""
    if grpc_context is None:
        return None
    now = time.time()
    remaining = grpc_context.time_remaining()
    deadlines = [] if remaining is None else [now + max(0.0, remaining)]
    for key, value in grpc_context.invocation_metadata() or ():
        if key == DEADLINE_METADATA:
            try:
                deadlines.append(now + max(0.0, float(value)) / 1000.0)
            except ValueError:
                continue
    return min(deadlines, default=None)


def caller_trace_context(grpc_context: Any) -> dict[str, str]:
    """The W3C trace context (``traceparent``, ``tracestate``, ``baggage``) in the call's metadata."""
    if grpc_context is None:
        return {}
    return {key: value for key, value in grpc_context.invocation_metadata() if key in TRACE_HEADERS}


def trace_id_of(span: Any) -> str:
    """A span's trace id as 32 hex digits, or "" when it has none."""
    context = span.get_span_context() if span is not None else None
    return f"{context.trace_id:032x}" if context is not None and context.trace_id else ""


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status a failure reaches the caller with."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(error, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, (DeadlineExceeded, asyncio.TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error) or "deadline exceeded"
    if isinstance(error, BackPressureError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded, try again later: {error.message}"
    if isinstance(error, (DeploymentUnavailableError, ActorDiedError, ActorUnavailableError, RayActorError,
                          WorkerLost)):
        return grpc.StatusCode.UNAVAILABLE, f"a replica is unavailable, retry: {type(error).__name__}"
    log.exception("request failed", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"


def code_of(grpc_context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with: the failure's, else the one set on its context, else OK."""
    if isinstance(error, _Failed):
        return error.code
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    if error is not None:
        return status_for(error)[0]
    code = grpc_context.code() if grpc_context is not None and hasattr(grpc_context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK


class _Failed(Exception):
    """A request that ends with a gRPC status other than OK."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)  # both in args, so it pickles whole
        self.code, self.details = code, details

    def __str__(self) -> str:
        return self.details


async def pool_embeddings(ner: NERClient, pool: list, checkpoint: Path, chunk: int = 512) -> Any:
    """The pool's span embeddings: from the checkpoint's cache file, or computed by the NER replicas."""
    import torch

    from linkner.llm.demonstrations import embeddings_cache_path, load_cached_embeddings, save_cached_embeddings

    cache = embeddings_cache_path(checkpoint, pool)
    stored = load_cached_embeddings(cache, len(pool))
    if stored is not None:
        return stored
    items = [(list(d.tokens), d.start, d.end) for d in pool]
    embeddings = torch.cat([await ner.embed(items[i : i + chunk]) for i in range(0, len(items), chunk)])
    save_cached_embeddings(cache, embeddings)
    return embeddings


@serve.deployment
class LinkNERIngress:
    """gRPC methods of ``linkner.v1.LinkNER`` answered by RDC over the NER and LLM pools (``ner``:
    the NER pool's handle, or None for the local model embedded in this replica)."""

    async def __init__(self, ner: Any | None, llm: Any | None, config: AppConfig) -> None:
        """Ray Serve awaits this constructor (outside Serve: ``await LinkNERIngress.create(...)``)."""
        setup_tracing(config.telemetry, "ingress")
        self.metrics = IngressMetrics()
        self._in_flight = 0
        self.config = config
        self.router = config.router
        if ner is not None:
            self.ner: NERClient = NERPool(ner)
            self.ner_calls_in_flight = self.router.ner_calls_in_flight
        else:
            from deployments.ner import EmbeddedNER

            embedded = EmbeddedNER(config.ner)
            # one call per forward pass the workers run at once: requests arriving meanwhile go
            # together in the next free one
            self.ner, self.ner_calls_in_flight = embedded, embedded.passes
        self.llm = llm
        limit_backpressure_warnings()  # under overload, a warning per refused call would flood this replica's log
        self.calibration = calibration_state(config)  # at start-up: a stale calibration is logged now
        self.service: LinkNERService | None = None
        self._building = asyncio.Lock()
        self.grpc_server, self.grpc_port = None, None
        # the port opens once the model answers: until then Ray keeps the replicas this one replaces
        # serving, and no call waits here for a model that is still loading (or an NER pool still starting)
        self._model_info = await self.ner.describe()
        await self._open_grpc_server()

    @classmethod
    async def create(cls, ner: Any | None, llm: Any | None, config: AppConfig) -> "LinkNERIngress":
        """The ingress outside Ray Serve (``benchmarks/ingress_without_ray.py``), built as Serve builds it."""
        ingress = cls.__new__(cls)
        await ingress.__init__(ner, llm, config)
        return ingress

    async def _open_grpc_server(self) -> None:
        """Bind the replica's own gRPC server (a busy port or a bad certificate fails the replica
        here, with the reason) and start it on this replica's event loop."""
        from deployments.grpc_server import build_server

        self.grpc_server, self.grpc_port = build_server(
            self, self.config.server, self.router, refused=lambda method: self.metrics.call(method, "RESOURCE_EXHAUSTED"))
        await self.grpc_server.start()
        log.info("answering gRPC on %s:%s", self.config.server.host, self.grpc_port)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Calls in flight on this replica, for :func:`deployments.autoscaling.ongoing_calls_policy`
        (Ray Serve does not see the calls its own server did not route)."""
        return {"ongoing_calls": float(self._in_flight)}

    async def __del__(self) -> None:
        """Ray Serve's shutdown hook: refuse new calls and let those in flight finish for
        ``server.drain_s`` seconds."""
        if self.grpc_server is not None:
            server, self.grpc_server = self.grpc_server, None
            await server.stop(self.config.server.drain_s)

    # ------------------------------------------------------------------ set-up

    async def _service(self) -> LinkNERService:
        """Built once, on the first request (concurrent first requests wait for the same build, so
        the demonstration pool is embedded once)."""
        if self.service is not None:
            return self.service
        async with self._building:
            if self.service is None:
                self.service = await self._build()
        return self.service

    async def _build(self) -> LinkNERService:
        info = self._model_info
        backend = None
        if self.llm is not None:
            backend = HandleBackend(self.llm, await self.llm.model_id.remote(),
                                    candidate_count(self.config.llm_pool.llm))
        recognizer = CoalescingRecognizer(self.ner, info["labels"], self.router.max_words_per_ner_call,
                                          self.ner_calls_in_flight)
        linker = RDCLinker(recognizer, backend, self.calibration.policy, selector=await self._selector(),
                           llm_timeout_s=self.router.llm_timeout_s)
        stored = self.calibration.stored
        return LinkNERService(linker, info["estimators"], served_model_name(info),
                              self.router.limits, self.calibration.status,
                              stored.model_dump(mode="json") if stored is not None else None)

    async def _selector(self) -> Any:
        """Demonstrations as configured; retrieved ones embed through the NER replicas, and the
        training pool's embeddings are cached beside the checkpoint."""
        settings = self.router.demonstrations
        if settings.kind == "none" or self.llm is None:
            return None
        from linkner.data.readers import read_dataset
        from linkner.llm.demonstrations import (RandomDemonstrations, RemoteRetrievedDemonstrations,
                                                training_demonstrations)

        pool = training_demonstrations(read_dataset(settings.train))
        if settings.kind == "random":
            return RandomDemonstrations(pool, settings.k, settings.seed)
        embeddings = await pool_embeddings(self.ner, pool, Path(self.config.ner.checkpoint))
        return RemoteRetrievedDemonstrations(self.ner.embed, pool, embeddings, settings.k)

    # ------------------------------------------------------------------ answering

    def _deadline(self, grpc_context: Any, method: str) -> float:
        """The wall-clock time this call must be answered by: the caller's deadline, capped by the
        server's answer budget for ``method`` (so a caller without a deadline is answered too)."""
        budget = time.time() + self.router.answer_budget_s[method]
        caller = caller_deadline(grpc_context)
        return budget if caller is None else min(caller, budget)

    @contextmanager
    def _call(self, method: str, grpc_context: Any, service: str = SERVICE) -> Iterator[dict[str, str]]:
        """One gRPC call: its SERVER span (a child of the caller's W3C trace context from the
        metadata, with OpenTelemetry's ``rpc.*`` attributes), the in-flight gauge, and on the way out
        ``linkner_requests_total`` by method and status code. Yields the trace context of the
        call's span, which the answering spans are started from."""
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        error: BaseException | None = None
        with server_span(f"{service}/{method}", caller_trace_context(grpc_context), attributes) as (span, carrier):
            try:
                yield carrier
            except BaseException as failure:
                error = failure
                raise
            finally:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)
                code = code_of(grpc_context, error)
                self.metrics.call(method, code.name)
                if span is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, code.name))

    async def _answer(self, prepared: Prepared, deadline_at: float,
                      carrier: dict[str, str] | None = None) -> pb.RecognizeResponse:
        """The answer, its spans children of the call's span (``carrier``)."""
        service = await self._service()
        with traced("linkner.request", carrier, request_id=prepared.request.request_id or None) as span:
            result, stats = await service.answer(prepared, self.router.llm_timeout_s, deadline_at)
            if span is not None and span.is_recording():
                span.set_attributes({"linkner.spans": stats.spans, "linkner.routed": stats.routed,
                                     "linkner.entities": len(result.entities), "linkner.degraded": result.degraded,
                                     "linkner.estimator": prepared.policy.estimator})
        self.metrics.answered(result, stats)
        result.trace_id = trace_id_of(span)
        return result_to_proto(result)

    async def _run(self, grpc_context: Any, call: Any) -> Any:
        """Await ``call``; a failure sets its status on the context and raises :class:`_Failed`."""
        try:
            return await call
        except _Failed:
            raise
        except Exception as error:  # noqa: BLE001 (every failure gets its status)
            code, details = status_for(error)
            raise self._fail(grpc_context, code, details) from None

    @staticmethod
    def _fail(grpc_context: Any, code: grpc.StatusCode, details: str) -> _Failed:
        if grpc_context is not None:
            grpc_context.set_code(code)
            grpc_context.set_details(details)
        return _Failed(code, details)

    async def _prepare(self, grpc_context: Any, items: Sequence[pb.RecognizeRequest],
                       options: pb.Options | None = None) -> list[Prepared]:
        """Every item decoded and validated before any work starts, so a bad item fails the call
        at once, named (``items[i]`` when there are several)."""
        service = await self._service()
        prepared = []
        for index, item in enumerate(items):
            try:
                prepared.append(service.prepare(request_from_proto(item, options)))
            except InvalidRequest as error:
                where = f"items[{index}]: " if options is not None else ""
                raise self._fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, f"{where}{error}") from None
        return prepared

    async def _prepare_batch(self, grpc_context: Any, request: pb.RecognizeBatchRequest) -> list[Prepared]:
        try:
            check_batch(len(request.items), self.router.limits,
                        sum(len(item.text) + sum(len(word) for word in item.words) for item in request.items))
        except InvalidRequest as error:
            raise self._fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        return await self._prepare(grpc_context, request.items, request.options)

    async def Recognize(self, request: pb.RecognizeRequest, grpc_context: Any = None) -> pb.RecognizeResponse:  # noqa: N802
        deadline_at = self._deadline(grpc_context, "Recognize")
        with self._call("Recognize", grpc_context) as carrier:
            try:
                [prepared] = await self._run(grpc_context, self._prepare(grpc_context, [request]))
                return await self._run(grpc_context, self._answer(prepared, deadline_at, carrier))
            except _Failed:
                return pb.RecognizeResponse()

    async def RecognizeBatch(self, request: pb.RecognizeBatchRequest,  # noqa: N802
                             grpc_context: Any = None) -> pb.RecognizeBatchResponse:
        """Items run concurrently, at most ``router.batch_parallelism`` at once; the first failing
        item fails the call with its status, naming the item."""
        deadline_at = self._deadline(grpc_context, "RecognizeBatch")
        with self._call("RecognizeBatch", grpc_context) as carrier:
            try:
                inputs = await self._run(grpc_context, self._prepare_batch(grpc_context, request))
            except _Failed:
                return pb.RecognizeBatchResponse()
            slots = asyncio.Semaphore(self.router.batch_parallelism)

            async def one(index: int, item: Prepared) -> pb.RecognizeResponse:
                async with slots:
                    try:
                        return await self._answer(item, deadline_at, carrier)
                    except Exception as error:  # noqa: BLE001
                        code, details = status_for(error)
                        raise _Failed(code, f"items[{index}]: {details}") from None

            tasks = [asyncio.ensure_future(one(index, item)) for index, item in enumerate(inputs)]
            try:
                results = await asyncio.gather(*tasks)
            except _Failed as failure:
                for task in tasks:
                    task.cancel()
                self._fail(grpc_context, failure.code, failure.details)
                return pb.RecognizeBatchResponse()
            return pb.RecognizeBatchResponse(results=results)

    async def RecognizeStream(self, request: pb.RecognizeBatchRequest,  # noqa: N802
                              grpc_context: Any = None) -> AsyncIterator[pb.RecognizeResponse]:
        """One response per item, in order, under one deadline for the whole call. Items are
        checked before the first answer; a failure later ends the stream with its status (never OK),
        so a caller can tell a truncated stream from a complete one."""
        deadline_at = self._deadline(grpc_context, "RecognizeStream")
        with self._call("RecognizeStream", grpc_context) as carrier:
            inputs = await self._run(grpc_context, self._prepare_batch(grpc_context, request))  # fails with its status
            slots = asyncio.Semaphore(self.router.batch_parallelism)

            async def one(item: Prepared) -> pb.RecognizeResponse:
                async with slots:
                    return await self._answer(item, deadline_at, carrier)

            tasks = [asyncio.ensure_future(one(item)) for item in inputs]
            try:
                for index, task in enumerate(tasks):
                    try:
                        yield await task
                    except Exception as error:  # noqa: BLE001
                        code, details = status_for(error)
                        raise self._fail(grpc_context, code, f"items[{index}]: {details}") from None
            finally:
                for task in tasks:
                    task.cancel()

    async def Describe(self, request: pb.DescribeRequest,  # noqa: N802
                       grpc_context: Any = None) -> pb.DescribeResponse:
        """The model, labels, estimators, LLM, effective default policy and calibration status."""
        with self._call("Describe", grpc_context):
            return description_to_proto((await self._service()).describe())

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (grpc.health.v1)
        """Standard gRPC health check. ``""`` and ``linkner.v1.LinkNER``: SERVING when an NER replica
        answers (the service answers, with or without the LLM); :data:`LLM_HEALTH_SERVICE`: SERVING when
        an LLM replica answers (NOT_SERVING: answers come back degraded). An unknown name: NOT_FOUND."""
        from grpc_health.v1 import health_pb2

        with self._call("Check", grpc_context, HEALTH_SERVICE):
            service = getattr(request, "service", "")
            if service in ("", SERVICE):
                probe = self._probe_ner
            elif service == LLM_HEALTH_SERVICE and self.llm is not None:
                probe = self._probe_llm
            else:
                self._fail(grpc_context, grpc.StatusCode.NOT_FOUND, f"unknown health service {service!r}"
                           + (" (no LLM pool configured)" if service == LLM_HEALTH_SERVICE else ""))
                return health_pb2.HealthCheckResponse()
            caller = caller_deadline(grpc_context)
            timeout = HEALTH_PROBE_S if caller is None else max(0.05, min(HEALTH_PROBE_S, 0.8 * (caller - time.time())))
            try:
                await asyncio.wait_for(probe(), timeout)
                status = health_pb2.HealthCheckResponse.SERVING
            except Exception:  # noqa: BLE001 (no answer in time, or a dead pool)
                status = health_pb2.HealthCheckResponse.NOT_SERVING
            return health_pb2.HealthCheckResponse(status=status)

    async def _probe_ner(self) -> None:
        await self._service()
        await self.ner.describe()

    async def _probe_llm(self) -> None:
        await self.llm.model_id.remote()

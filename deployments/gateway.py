"""gRPC ingress behind Ray Serve's gRPC proxy: method names equal the RPC names of linkner.v1.LinkNER."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import grpc
from ray import serve

from deployments.convert import description_to_proto, request_from_proto, response_to_proto
from linkner.service.api import InvalidRequest, ServiceLimits
from linkner.service.documents import check_batch
from linkner.telemetry import TelemetryConfig, current_carrier, setup_tracing, traced
from protos.linkner.v1 import linkner_pb2 as pb

DEADLINE_METADATA = "linkner-deadline-ms"


def caller_deadline(grpc_context: Any) -> float | None:
    """The caller's deadline as a wall-clock time, from the ``linkner-deadline-ms`` metadata the
    client sends (Ray's proxy does not forward the gRPC deadline itself)."""
    for key, value in grpc_context.invocation_metadata() if grpc_context is not None else []:
        if key == DEADLINE_METADATA:
            try:
                return time.time() + float(value) / 1000.0
            except ValueError:
                return None
    return None


@serve.deployment
class Gateway:
    def __init__(self, router: Any, telemetry: TelemetryConfig, llm_timeout_s: float, limits: ServiceLimits) -> None:
        setup_tracing(telemetry, "gateway")
        self.router = router
        self.llm_timeout_s = llm_timeout_s
        self.limits = limits

    async def _one(self, request: pb.RecognizeRequest, grpc_context: Any,
                   default_options: pb.Options | None = None) -> pb.RecognizeResponse:
        with traced("linkner.request", request_id=request.request_id or None):
            try:
                payload = request_from_proto(request, default_options)
            except ValueError as error:
                return self._invalid(grpc_context, str(error))
            result = await self.router.recognize.remote(payload, self.llm_timeout_s, caller_deadline(grpc_context),
                                                        current_carrier())
            if isinstance(result, InvalidRequest):
                return self._invalid(grpc_context, str(result))
            return response_to_proto(result)

    async def Check(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 (grpc.health.v1)
        """Standard gRPC health check: SERVING when the router (and through it the model) answers."""
        from grpc_health.v1 import health_pb2

        try:
            await asyncio.wait_for(self.router.limits.remote(), timeout=5)
            status = health_pb2.HealthCheckResponse.SERVING
        except Exception:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    async def Describe(self, request: pb.DescribeRequest,  # noqa: N802
                       grpc_context: Any = None) -> pb.DescribeResponse:
        """The model, labels, estimators, LLM, effective default policy and calibration status."""
        return description_to_proto(await self.router.describe.remote())

    def _invalid(self, grpc_context: Any, message: str) -> pb.RecognizeResponse:
        grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        grpc_context.set_details(message)
        return pb.RecognizeResponse()

    async def Recognize(self, request: pb.RecognizeRequest, grpc_context: Any = None) -> pb.RecognizeResponse:  # noqa: N802
        return await self._one(request, grpc_context)

    async def RecognizeBatch(self, request: pb.RecognizeBatchRequest,  # noqa: N802
                             grpc_context: Any = None) -> pb.RecognizeBatchResponse:
        try:
            check_batch(len(request.items), self.limits)
        except InvalidRequest as error:
            return self._invalid(grpc_context, str(error))
        checked = [_ItemContext(grpc_context) for _ in request.items]
        results = await asyncio.gather(*[self._one(item, context, request.options)
                                         for item, context in zip(request.items, checked)])
        for index, context in enumerate(checked):
            if context.code is not None:
                return self._invalid(grpc_context, f"items[{index}]: {context.details}")
        return pb.RecognizeBatchResponse(results=results)

    async def RecognizeStream(self, request: pb.RecognizeBatchRequest,  # noqa: N802
                              grpc_context: Any = None) -> AsyncIterator[pb.RecognizeResponse]:
        for index, item in enumerate(request.items):
            context = _ItemContext(grpc_context)
            response = await self._one(item, context, request.options)
            if context.code is not None:
                self._invalid(grpc_context, f"items[{index}]: {context.details}")
                return
            yield response


class _ItemContext:
    """Collects an item's error without failing its siblings, reading the caller's metadata."""

    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.code = None
        self.details = ""

    def invocation_metadata(self) -> Any:
        return self.parent.invocation_metadata() if self.parent is not None else []

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

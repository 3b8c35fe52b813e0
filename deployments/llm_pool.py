"""LLM replica pool: the configured backend (vLLM by default) behind a deployment."""

from __future__ import annotations

from ray import serve

from linkner.llm.factory import build_backend
from linkner.llm.protocol import SpanAnswer, SpanQuery
from linkner.service.config import LLMPoolConfig
from linkner.telemetry import TelemetryConfig, setup_tracing, traced


@serve.deployment
class LLMPool:
    async def __init__(self, config: LLMPoolConfig, telemetry: TelemetryConfig) -> None:
        """Build the backend and start its engine now (vLLM takes tens of seconds on CPU), so the
        replica is ready, or visibly failed, before it takes traffic."""
        setup_tracing(telemetry, "llm")
        self.backend = build_backend(config.llm)
        start = getattr(self.backend, "start", None)
        if start is not None:
            await start()

    def model_id(self) -> str:
        return self.backend.model_id

    async def classify(self, queries: list[SpanQuery], labels: list[str], timeout_s: float | None = None,
                       carrier: dict[str, str] | None = None) -> list[SpanAnswer]:
        with traced("linkner.llm.classify", carrier, spans=len(queries), model=self.backend.model_id):
            return await self.backend.classify(queries, labels, timeout_s)

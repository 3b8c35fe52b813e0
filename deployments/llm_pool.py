"""LLM replica pool: the configured backend (vLLM by default) behind a deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from linkner.llm.factory import LLMConfig, build_backend
from linkner.llm.protocol import SpanAnswer, SpanQuery
from linkner.service.config import LLMPoolConfig
from linkner.telemetry import TelemetryConfig, setup_tracing, traced


@serve.deployment
class LLMPool:
    async def __init__(self, config: LLMPoolConfig, telemetry: TelemetryConfig,
                       labels: list[str] | None = None) -> None:
        """Build the backend and start its engine now (vLLM takes tens of seconds on CPU), so the
        replica is ready, or visibly failed, before it takes traffic; with the model's ``labels``,
        warm its prefix cache with the text every span shares."""
        setup_tracing(telemetry, "llm")
        self.settings = with_engine_tracing(config.llm, telemetry)
        self.backend = build_backend(self.settings)
        start = getattr(self.backend, "start", None)
        if start is not None:
            await start()
        warm = getattr(self.backend, "warm", None)
        if warm is not None and labels:
            await warm(labels)

    async def __del__(self) -> None:
        """Ray Serve's shutdown hook: stop the engine (vLLM's processes and shared memory)."""
        await self.backend.close()

    def model_id(self) -> str:
        return self.backend.model_id

    async def classify(self, queries: list[SpanQuery], labels: list[str], timeout_s: float | None = None,
                       carrier: dict[str, str] | None = None) -> list[SpanAnswer]:
        """The backend's answers; the span (a CLIENT span to the LLM) carries OpenTelemetry's
        ``gen_ai.*`` attributes, token counts included."""
        with traced("linkner.llm.classify", carrier, kind="client", spans=len(queries),
                    model=self.backend.model_id) as span:
            answers = await self.backend.classify(queries, labels, timeout_s)
            if span is not None and span.is_recording():
                span.set_attributes(gen_ai_attributes(self.settings, answers))
            return answers


def with_engine_tracing(settings: LLMConfig, telemetry: TelemetryConfig) -> LLMConfig:
    """vLLM's own request spans join the trace when this service exports OTLP over gRPC (unless the
    LLM config names another endpoint)."""
    if (settings.backend == "vllm" and settings.engine_traces_endpoint is None and telemetry.exporter == "otlp"
            and telemetry.otlp_protocol == "grpc"):
        return settings.model_copy(update={"engine_traces_endpoint": telemetry.otlp_endpoint})
    return settings


def gen_ai_attributes(settings: LLMConfig, answers: list[SpanAnswer]) -> dict[str, Any]:
    """OpenTelemetry's GenAI attributes of one classify call: system, model, token usage, failures."""
    model = settings.model if settings.backend == "openai" else Path(settings.model).name  # a local folder
    return {"gen_ai.system": settings.backend, "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": sum(answer.prompt_tokens for answer in answers),
            "gen_ai.usage.output_tokens": sum(answer.completion_tokens for answer in answers),
            "linkner.llm_failures": sum(not answer.ok for answer in answers)}

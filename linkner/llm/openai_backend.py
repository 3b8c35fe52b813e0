"""Any OpenAI-compatible chat-completions server over HTTP (a vLLM server, others).

The request asks for a constrained choice over the option names (vLLM's ``structured_outputs``
extension) when ``constrained`` is on; the answer must then match an option exactly (case and
surrounding whitespace aside) or the span gets an error answer; nothing is guessed. The options
are the query's own (the local model's candidates) or every label. Timeouts,
bounded retries with exponential backoff on connection errors, 429 and 5xx; the API key comes
from an environment variable.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any, Sequence

from pydantic import BaseModel, Field

from linkner.llm.ids import llm_id
from linkner.llm.prompts import Option, PromptBuilder
from linkner.llm.protocol import SpanAnswer, SpanQuery, error_answer
from linkner.telemetry import current_carrier

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAISettings(BaseModel):
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    constrained: bool = Field(True, description="send vLLM's structured_outputs choice")
    request_timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0)
    backoff_s: float = Field(0.25, ge=0)
    max_concurrency: int = Field(8, ge=1)
    max_tokens: int = Field(8, ge=1)


class OpenAIBackend:
    """Classifies spans through chat completions, one HTTP request per span, bounded concurrency."""

    def __init__(self, settings: OpenAISettings, definitions: dict[str, str] | None = None,
                 candidates: int | None = None) -> None:
        import httpx

        self.settings = settings
        self.definitions = definitions
        self.candidates = candidates
        self.model_id = llm_id("openai", settings.model, None, candidates)
        key = os.environ.get(settings.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(base_url=settings.base_url.rstrip("/"), headers=headers,
                                         timeout=settings.request_timeout_s)
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        self._builders: dict[tuple[str, ...], PromptBuilder] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def classify(
        self, queries: Sequence[SpanQuery], labels: Sequence[str], timeout_s: float | None = None
    ) -> list[SpanAnswer]:
        if not queries:
            return []
        key = tuple(labels)
        builder = self._builders.setdefault(key, PromptBuilder(key, self.definitions))
        deadline = time.monotonic() + timeout_s if timeout_s else None
        results = await asyncio.gather(*[self._one(query, builder, deadline) for query in queries],
                                       return_exceptions=True)
        return [result if isinstance(result, SpanAnswer) else error_answer(self.model_id, result)
                for result in results]

    async def _one(self, query: SpanQuery, builder: PromptBuilder, deadline: float | None) -> SpanAnswer:
        options = builder.options_for(query)
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": builder.messages(query, "choice"),
            "temperature": 0,
            "max_tokens": self.settings.max_tokens,
            "logprobs": True,
        }
        if self.settings.constrained:
            body["structured_outputs"] = {"choice": [option.name for option in options]}
        async with self._limit:
            reply = await self._post(body, deadline)
        return self._answer(reply, options)

    async def _post(self, body: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        import httpx

        attempt = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("deadline exceeded")
            timeout = self.settings.request_timeout_s if remaining is None else min(remaining, self.settings.request_timeout_s)
            try:
                # the W3C trace context and baggage of the call, as any traced HTTP client sends them
                response = await self._client.post("/chat/completions", json=body, timeout=timeout,
                                                   headers=current_carrier())
                if response.status_code not in RETRYABLE_STATUS:
                    response.raise_for_status()
                    return response.json()
                problem: Exception = RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            except (httpx.TransportError, httpx.TimeoutException) as error:
                problem = error
            if attempt >= self.settings.max_retries:
                kind = TimeoutError if isinstance(problem, httpx.TimeoutException) else ConnectionError
                raise kind(f"{type(problem).__name__}: {problem} (after {attempt + 1} attempts)")
            await asyncio.sleep(self.settings.backoff_s * 2**attempt)
            attempt += 1

    def _answer(self, reply: dict[str, Any], options: Sequence[Option]) -> SpanAnswer:
        choice = reply["choices"][0]
        text = (choice.get("message", {}).get("content") or "").strip()
        usage = reply.get("usage") or {}
        common = {"model": self.model_id, "prompt_tokens": usage.get("prompt_tokens", 0),
                  "completion_tokens": usage.get("completion_tokens", 0)}
        matches = [option for option in options
                   if text.casefold() in (option.name.casefold(), option.letter.casefold())]
        if not matches:
            return SpanAnswer(error=f"answer {text[:60]!r} matches no option", **common)
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        score = math.exp(sum(token.get("logprob", 0.0) for token in tokens)) if tokens else None
        return SpanAnswer(label=matches[0].label, score=score, **common)

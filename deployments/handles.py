"""The core's Recognizer and LLMBackend protocols, served by deployment handles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from linkner.llm.protocol import SpanAnswer, SpanQuery
from linkner.telemetry import current_carrier

if TYPE_CHECKING:
    from linkner.model.predictor import EntityPrediction


class HandleRecognizer:
    def __init__(self, handle: Any, labels: list[str]) -> None:
        self.handle = handle
        self.labels = labels

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list["EntityPrediction"]]:
        return await self.handle.predict.remote([list(s) for s in sentences], list(estimators), current_carrier())


class HandleBackend:
    def __init__(self, handle: Any, model_id: str, candidates: int | None = None) -> None:
        self.handle = handle
        self.model_id = model_id
        self.candidates = candidates  # the pool's top-N option form: the router fills each query's options

    async def classify(self, queries: Sequence[SpanQuery], labels: Sequence[str],
                       timeout_s: float | None = None) -> list[SpanAnswer]:
        return await self.handle.classify.remote(list(queries), list(labels), timeout_s, current_carrier())

    async def close(self) -> None:
        return None

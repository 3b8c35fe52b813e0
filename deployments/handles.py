"""The core's Recognizer and LLMBackend protocols, served by deployment handles."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from linkner.llm.protocol import SpanAnswer, SpanQuery
from linkner.telemetry import current_carrier

if TYPE_CHECKING:
    from linkner.data.spans import Entity


def sentence_chunks(sentences: Sequence[Sequence[str]], max_words: int) -> list[tuple[int, int]]:
    """``(first, end)`` ranges of whole sentences holding about ``max_words`` words each (a longer
    sentence is a chunk of its own), so a long document never holds one NER batch slot alone."""
    chunks: list[tuple[int, int]] = []
    first, words = 0, 0
    for index, sentence in enumerate(sentences):
        if index > first and words + len(sentence) > max_words:
            chunks.append((first, index))
            first, words = index, 0
        words += len(sentence)
    if first < len(sentences):
        chunks.append((first, len(sentences)))
    return chunks


class HandleRecognizer:
    """The NER replica pool as a Recognizer: a document goes out in sentence chunks, concurrently,
    each batched with other requests' chunks by ``@serve.batch``."""

    def __init__(self, handle: Any, labels: list[str], max_words_per_call: int = 256) -> None:
        self.handle = handle
        self.labels = labels
        self.max_words_per_call = max_words_per_call

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list[Entity]]:
        carrier, names = current_carrier(), list(estimators)
        chunks = sentence_chunks(sentences, self.max_words_per_call)
        if len(chunks) == 1:
            return await self.handle.predict.remote([list(s) for s in sentences], names, carrier)
        calls = [asyncio.ensure_future(self.handle.predict.remote([list(s) for s in sentences[first:end]], names,
                                                                  carrier))
                 for first, end in chunks]
        try:
            parts = await asyncio.gather(*calls)
        finally:  # a failed or cancelled chunk (deadline) cancels its siblings too
            for call in calls:
                call.cancel()
        return [prediction for part in parts for prediction in part]


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

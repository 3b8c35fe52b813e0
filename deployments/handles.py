"""The core's Recognizer and LLMBackend protocols, served by deployment handles."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
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


@dataclass
class _Pending:
    sentences: list[list[str]]
    estimators: list[str]
    carrier: dict[str, str]
    future: asyncio.Future = field(repr=False)


class HandleRecognizer:
    """The NER replica pool as a Recognizer.

    Concurrent requests of this process are coalesced: their sentences travel to the NER pool in
    one call of up to ``max_words_per_call`` words, sent when that many words are waiting or
    ``wait_s`` after the first arrived. One call per batch instead of one per request is what
    keeps the stack's per-request cost low (every deployment call costs milliseconds of CPU). A
    long document is cut into chunks of whole sentences, each its own call, at most
    ``chunks_in_flight`` at a time, so short requests are batched between its chunks instead of
    waiting behind all of it.
    """

    def __init__(self, handle: Any, labels: list[str], max_words_per_call: int = 256, wait_s: float = 0.002,
                 chunks_in_flight: int = 2) -> None:
        self.handle = handle
        self.labels = labels
        self.max_words_per_call = max_words_per_call
        self.wait_s = wait_s
        self.chunks_in_flight = chunks_in_flight
        self._pending: list[_Pending] = []
        self._pending_words = 0
        self._timer: asyncio.TimerHandle | None = None

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list["Entity"]]:
        carrier, names = current_carrier(), list(estimators)
        chunks = sentence_chunks(sentences, self.max_words_per_call)
        if len(chunks) == 1:
            return await self._submit([list(s) for s in sentences], names, carrier)
        slots = asyncio.Semaphore(self.chunks_in_flight)  # short requests slip in between a document's chunks

        async def chunk(first: int, end: int) -> list[list["Entity"]]:
            async with slots:
                return await self._submit([list(s) for s in sentences[first:end]], names, carrier)

        tasks = [asyncio.ensure_future(chunk(first, end)) for first, end in chunks]
        try:
            parts = await asyncio.gather(*tasks)
        finally:  # a failed or cancelled request (deadline) gives up its other chunks too
            for task in tasks:
                task.cancel()
        return [prediction for part in parts for prediction in part]

    def _submit(self, sentences: list[list[str]], estimators: list[str], carrier: dict[str, str]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        words = sum(map(len, sentences))
        if self._pending and self._pending_words + words > self.max_words_per_call:
            self._flush()
        pending = _Pending(sentences, estimators, carrier, loop.create_future())
        self._pending.append(pending)
        self._pending_words += words
        if self._pending_words >= self.max_words_per_call:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return pending.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._pending, self._pending_words = self._pending, [], 0
        if items:
            asyncio.ensure_future(self._send(items))

    async def _send(self, items: list[_Pending]) -> None:
        """One NER call for ``items``; each gets its own sentences' predictions (or the error)."""
        live = [item for item in items if not item.future.done()]
        if not live:
            return
        sentences = [sentence for item in live for sentence in item.sentences]
        estimators = sorted({name for item in live for name in item.estimators})
        try:
            predictions = await self.handle.predict.remote(sentences, estimators, live[0].carrier)
        except BaseException as error:  # noqa: BLE001 (every waiting request learns of it)
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        cursor = 0
        for item in live:
            part = predictions[cursor : cursor + len(item.sentences)]
            cursor += len(item.sentences)
            if not item.future.done():
                item.future.set_result(part)


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

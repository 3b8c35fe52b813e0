"""The core's Recognizer and LLMBackend protocols over the deployments: the local model (an
:class:`NERClient`: :class:`deployments.ner.EmbeddedNER` in the ingress, or the NER pool through
:class:`NERPool`), coalesced by :class:`CoalescingRecognizer`, and the LLM pool."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ray.serve.exceptions import BackPressureError

from linkner.llm.protocol import LLMOverloaded, SpanAnswer, SpanQuery
from linkner.telemetry import current_carrier
from linkner.uncertainty.names import LEARNED

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


class NERClient(Protocol):
    """What the ingress needs of the local model, wherever it runs."""

    async def describe(self) -> dict: ...

    async def embed(self, items: list[tuple[list[str], int, int]]) -> Any: ...

    async def predict(self, sentences: list[list[str]], estimators: list[str], carrier: dict[str, str],
                      documents: list[int] | None = None, requests: int = 1) -> list[list["Entity"]]:
        """One forward pass over ``sentences`` (the ``requests`` merged into this call; ``documents``:
        each sentence's document, for the learned estimator)."""


class NERPool:
    """The NER replica pool, through its deployment handle (one Ray call per method call)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def describe(self) -> dict:
        return await self.handle.describe.remote()

    async def embed(self, items: list[tuple[list[str], int, int]]) -> Any:
        return await self.handle.embed.remote(items)

    async def predict(self, sentences: list[list[str]], estimators: list[str], carrier: dict[str, str],
                      documents: list[int] | None = None, requests: int = 1) -> list[list["Entity"]]:
        return await self.handle.predict.remote(sentences, estimators, carrier, documents, requests)


@dataclass
class _Pending:
    sentences: list[list[str]]
    estimators: list[str]
    carrier: dict[str, str]
    future: asyncio.Future = field(repr=False)


class CoalescingRecognizer:
    """The local model (an :class:`NERClient`: the NER pool or the embedded model) as a Recognizer.

    Concurrent requests of this process are coalesced: at most ``calls_in_flight`` NER calls are
    outstanding, and requests arriving meanwhile wait here and go together in the next call (up to
    ``max_words_per_call`` words each). Idle, a request goes at once; busy, one call carries many
    requests, which keeps the stack's per-request cost low (every deployment call costs
    milliseconds of CPU) and the NER pool's queue short. A long document is cut into chunks of
    whole sentences, at most ``chunks_in_flight`` at a time, so short requests are batched between
    its chunks instead of waiting behind all of it.
    """

    def __init__(self, ner: NERClient, labels: list[str], max_words_per_call: int = 256, calls_in_flight: int = 4,
                 chunks_in_flight: int = 2) -> None:
        self.ner = ner
        self.labels = labels
        self.max_words_per_call = max_words_per_call
        self.calls_in_flight = calls_in_flight
        self.chunks_in_flight = chunks_in_flight
        self._pending: list[_Pending] = []
        self._in_flight = 0

    async def recognize(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str]
                        ) -> list[list["Entity"]]:
        carrier, names = current_carrier(), list(estimators)
        # the learned estimator weighs the whole document's predictions: such a document goes in one call
        chunks = ([(0, len(sentences))] if LEARNED in names
                  else sentence_chunks(sentences, self.max_words_per_call))
        if len(chunks) == 1:
            return await self._submit([list(s) for s in sentences], names, carrier)
        slots = asyncio.Semaphore(self.chunks_in_flight)

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
        pending = _Pending(sentences, estimators, carrier, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._dispatch()
        return pending.future

    def _dispatch(self) -> None:
        """Send waiting requests while fewer than ``calls_in_flight`` calls are outstanding."""
        while self._in_flight < self.calls_in_flight:
            self._pending = [item for item in self._pending if not item.future.done()]  # cancelled: dropped
            if not self._pending:
                return
            batch, words = [], 0
            while self._pending and (not batch or words + len_words(self._pending[0]) <= self.max_words_per_call):
                item = self._pending.pop(0)
                batch.append(item)
                words += len_words(item)
            self._in_flight += 1
            asyncio.ensure_future(self._send(batch))

    async def _send(self, items: list[_Pending]) -> None:
        """One NER call for ``items``; each gets its own sentences' predictions (or the error).

        The next call is sent before the answered requests are woken: their responses take the
        event loop a while, and the pass behind the freed slot would wait for all of them."""
        sentences = [sentence for item in items for sentence in item.sentences]
        estimators = sorted({name for item in items for name in item.estimators})
        # each request is a document of its own (only the learned estimator looks across sentences)
        documents = [number for number, item in enumerate(items) for _ in item.sentences] \
            if LEARNED in estimators else None
        failure: Exception | None = None
        try:
            predictions = await self.ner.predict(sentences, estimators, items[0].carrier, documents, len(items))
        except Exception as error:  # noqa: BLE001 (every waiting request learns of it)
            failure = error
        finally:  # the slot is free, and the next call on its way, before any request is woken
            self._in_flight -= 1
            self._dispatch()
        cursor = 0
        for item in items:
            if not item.future.done():
                if failure is not None:
                    item.future.set_exception(failure)
                else:
                    item.future.set_result(predictions[cursor : cursor + len(item.sentences)])
            cursor += len(item.sentences)


def len_words(item: _Pending) -> int:
    return sum(map(len, item.sentences))


class HandleBackend:
    """The LLM pool, through its deployment handle, as an LLM backend."""

    def __init__(self, handle: Any, model_id: str, candidates: int | None = None) -> None:
        self.handle = handle
        self.model_id = model_id
        self.candidates = candidates  # the pool's top-N option form: the router fills each query's options

    async def classify(self, queries: Sequence[SpanQuery], labels: Sequence[str],
                       timeout_s: float | None = None) -> list[SpanAnswer]:
        """The pool's answers; a full pool queue (``llm_pool.deployment.max_queued_requests``) raises
        :class:`LLMOverloaded` at once."""
        try:
            return await self.handle.classify.remote(list(queries), list(labels), timeout_s, current_carrier())
        except BackPressureError as error:
            raise LLMOverloaded(error.message) from error

    async def close(self) -> None:
        return None

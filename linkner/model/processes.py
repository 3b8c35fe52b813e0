"""Forward passes in worker processes of their own.

Threads of one Python process share its interpreter lock: a forward pass needs it between torch
operators, and so does the request handling beside it. On CPU the two get in each other's way (on
a 2-core machine, two pass threads beside a gRPC ingress were busy only 60% of the time).
:class:`PredictorProcesses` runs each pass in a spawned process with its own copy of the model
instead. A call is one pickled message each way over a pipe, read by the event loop itself (no
helper thread), so a batch costs a fraction of a millisecond more than in a thread.

A call that finds every worker idle and no call waiting, while calls seldom overlap, borrows the
other workers: it runs with their torch threads as well (a lone sentence on 2 cores: 7 ms instead
of 11), and the borrowed workers take no call until it ends, so the machine never runs more threads
than it has workers' worth.

A worker that dies (killed, out of memory) fails the call it had with :class:`WorkerLost` and is
replaced; the calls after it go to the other workers and then to the new one. The workers also
answer span embeddings and say what they loaded (:attr:`PredictorProcesses.description`), so the
owner needs no copy of the model of its own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Sequence

from linkner.data.spans import Entity

log = logging.getLogger(__name__)


STALE: Any = object()
"""A worker's pending call that was made in an event loop no longer running."""


class WorkerLost(RuntimeError):
    """A worker process ended while it had a call: the call's result is lost (retry it)."""


@dataclass(frozen=True)
class PredictorSpec:
    """What a worker loads: :meth:`SpanPredictor.from_checkpoint`'s arguments and its torch threads."""

    checkpoint: str
    device: str = "cpu"
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)


OVERLAP_TO_BORROW = 0.25
"""A lone call borrows idle workers only while fewer than this share of recent calls had another
call arrive during them: when calls overlap, a call arriving during a borrowed pass waits for all of
it instead of starting on a core of its own."""
OVERLAP_WEIGHT = 0.2
"""Weight of the newest call in that moving share (about the last 5 calls count)."""

METHODS = ("predict", "span_embeddings")
"""The :class:`SpanPredictor` methods a worker answers."""


def _serve(connection: Connection, spec: PredictorSpec) -> None:
    """A worker's life: load the model, say what it loaded, then answer ``(method, args, threads)``
    messages until the pipe closes."""
    import torch

    from linkner.model.predictor import SpanPredictor

    torch.set_num_threads(spec.threads)
    predictor = SpanPredictor.from_checkpoint(spec.checkpoint, spec.device, **spec.options)
    connection.send(("ready", predictor.describe()))
    while True:
        try:
            method, args, threads = connection.recv()
        except (EOFError, OSError):  # the owner is gone
            return
        try:
            if torch.get_num_threads() != threads:  # more with borrowed workers' cores, then back
                torch.set_num_threads(threads)
            if method not in METHODS:
                raise ValueError(f"a worker answers {', '.join(METHODS)}, not {method!r}")
            connection.send(("ok", getattr(predictor, method)(*args)))
        except Exception as error:  # noqa: BLE001 (the caller gets it; the worker goes on)
            try:
                connection.send(("error", error))
            except Exception:  # noqa: BLE001 (an exception that does not pickle)
                connection.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))


class _Worker:
    """One worker process, the parent's end of its pipe, and the call it is answering."""

    def __init__(self, context: Any, spec: PredictorSpec) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, spec), daemon=True, name="linkner-ner-pass")
        self.process.start()
        child.close()
        self.pending: asyncio.Future | None = None
        self.borrowed: list[_Worker] = []  # idle workers whose threads the current call also uses
        self.overlapped = False  # another call arrived while this worker's call ran


class PredictorProcesses:
    """``count`` worker processes, each with its own :class:`SpanPredictor`; :meth:`predict` runs a
    call on an idle one (waiting for one when all are busy). With ``borrow_idle``, a call that finds
    every worker idle and nobody waiting also runs on the other workers' threads."""

    def __init__(self, spec: PredictorSpec, count: int, start_timeout_s: float = 300.0,
                 borrow_idle: bool = True) -> None:
        self.spec, self.start_timeout_s, self.borrow_idle = spec, start_timeout_s, borrow_idle
        self._waiting = 0  # callers waiting for an idle worker
        self._overlap = 0.0  # moving share of calls that another call arrived during
        self._context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        self.description: dict = {}
        """What the workers loaded (:meth:`SpanPredictor.describe`)."""
        self._workers = [self._start() for _ in range(count)]
        self._idle: asyncio.Queue[_Worker] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _start(self) -> _Worker:
        worker = _Worker(self._context, self.spec)
        if not worker.connection.poll(self.start_timeout_s):
            worker.process.kill()
            raise RuntimeError(f"an NER worker process did not load {self.spec.checkpoint} in "
                               f"{self.start_timeout_s:.0f} s")
        try:
            kind, description = worker.connection.recv()
        except EOFError:
            raise RuntimeError(f"an NER worker process died loading {self.spec.checkpoint} "
                               f"(exit code {worker.process.exitcode})") from None
        assert kind == "ready", kind
        self.description = description
        return worker

    def _queue(self) -> asyncio.Queue:
        """The idle workers, for the event loop that calls :meth:`predict` (the pipes are read by
        that loop; a new loop, such as the next ``asyncio.run``, takes them over)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                for worker in self._workers:
                    self._loop.remove_reader(worker.connection.fileno())
            # last in, first out: a lone caller keeps one worker, whose caches stay warm (1.4 ms a call
            # less than taking turns)
            self._loop, self._idle = loop, asyncio.LifoQueue()
            for worker in self._workers:
                worker.borrowed = []  # a stale call's borrowed workers are idle again
                self._watch(loop, worker)
                if worker.pending is None:
                    self._idle.put_nowait(worker)
                else:  # busy with a call of the finished loop: idle once that answer is dropped
                    worker.pending = STALE
        return self._idle

    def _watch(self, loop: asyncio.AbstractEventLoop, worker: _Worker) -> None:
        """Answers of ``worker`` are read by ``loop`` when they arrive. The pipe stays blocking:
        uvloop (Ray Serve's loop) makes a watched descriptor non-blocking, and a message larger
        than the pipe's buffer would then fail half-sent; blocking, a send or receive waits for the
        other end, which is always ready for it."""
        fileno = worker.connection.fileno()
        loop.add_reader(fileno, self._on_answer, worker)
        os.set_blocking(fileno, True)

    async def predict(self, sentences: Sequence[Sequence[str]], estimators: Sequence[str],
                      documents: Sequence[int] | None = None) -> list[list[Entity]]:
        """Entities of each sentence, as :meth:`SpanPredictor.predict`, from a worker process."""
        return await self._call("predict", [list(s) for s in sentences], list(estimators),
                                None if documents is None else list(documents))

    async def span_embeddings(self, items: Sequence[tuple[Sequence[str], int, int]]) -> Any:
        """Span embeddings of ``(words, start, end)`` items, as :meth:`SpanPredictor.span_embeddings`."""
        return await self._call("span_embeddings", [(list(words), start, end) for words, start, end in items])

    async def _call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on an idle worker (waiting for one when all are busy)."""
        idle = self._queue()
        for busy in self._workers:
            busy.overlapped = True  # (only read for workers with a call)
        # a lone call (every worker idle, nobody waiting, and calls seldom overlap of late) takes every
        # worker's cores; a call that had to wait never does, so under load each worker runs its own
        lone = (self.borrow_idle and not self._waiting and self._overlap < OVERLAP_TO_BORROW
                and idle.qsize() == len(self._workers) > 1)
        self._waiting += 1
        try:
            worker = await idle.get()
        finally:
            self._waiting -= 1
        worker.pending = asyncio.get_running_loop().create_future()
        while lone and not idle.empty():
            worker.borrowed.append(idle.get_nowait())
        worker.overlapped = False
        try:
            worker.connection.send((method, args, self.spec.threads * (1 + len(worker.borrowed))))
        except (OSError, ValueError):
            self._replace(worker)
            raise WorkerLost("an NER worker process is gone") from None
        return await worker.pending

    def _on_answer(self, worker: _Worker) -> None:
        """The event loop's reader callback: a worker answered, or its pipe closed."""
        try:
            kind, value = worker.connection.recv()
        except (EOFError, OSError):
            self._replace(worker)
            return
        pending, worker.pending = worker.pending, None
        self._overlap += OVERLAP_WEIGHT * (worker.overlapped - self._overlap)
        self._release(worker)
        if pending is None or pending is STALE or pending.done():  # the caller gave up (deadline, cancel)
            return
        if kind == "ok":
            pending.set_result(value)
        else:
            pending.set_exception(value)

    def _release(self, worker: _Worker) -> None:
        """``worker`` and the workers it borrowed are idle again."""
        self._return_borrowed(worker)
        self._idle.put_nowait(worker)

    def _return_borrowed(self, worker: _Worker) -> None:
        """The workers ``worker``'s call borrowed are idle again."""
        for lent in worker.borrowed:
            self._idle.put_nowait(lent)
        worker.borrowed = []

    def _replace(self, worker: _Worker) -> None:
        """Fail the dead worker's call and start another in its place (in a thread: it loads a model)."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.connection.fileno())
        worker.connection.close()
        worker.process.join(timeout=1.0)
        code = worker.process.exitcode
        log.warning("NER worker process %s ended (exit code %s); starting another", worker.process.pid, code)
        if worker.pending not in (None, STALE) and not worker.pending.done():
            worker.pending.set_exception(WorkerLost(f"the NER worker process ended (exit code {code})"))
        self._return_borrowed(worker)  # they go on answering
        self._workers.remove(worker)

        async def restart() -> None:
            try:
                fresh = await asyncio.to_thread(self._start)
            except Exception:  # noqa: BLE001 (the other workers keep answering)
                log.exception("could not replace the NER worker process")
                return
            self._workers.append(fresh)
            self._watch(loop, fresh)
            self._idle.put_nowait(fresh)

        asyncio.ensure_future(restart())

    def close(self) -> None:
        """Stop the workers (they also stop by themselves when this process ends)."""
        for worker in self._workers:
            worker.connection.close()
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
        self._workers = []

"""The benchmarks' one load generator: callers that each send their next request as soon as the last
one is answered (a closed loop), and what they saw.

Two ways to call share the loop (:func:`keep_calling`) and the tally (:class:`LoadStats`):

- :func:`closed_loop`: a plain ``grpc.aio`` stub on one channel that sends only a gRPC deadline, as
  any language's client would, for a fixed time (the serving, gRPC floor, pass size and tracing
  benchmarks): throughput and latency;
- :class:`ClosedLoad`: the project's asyncio client (retries with jittered backoff and a budget),
  one per caller, in a thread of its own until stopped, so faults can be injected meanwhile (the
  reliability benchmarks and tests): what was lost, retried, degraded or wrong.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

APP = "bench"  # the application name the served-path benchmarks deploy


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass(frozen=True)
class Endpoint:
    """Where callers dial, and what a protected port wants of them: a bearer token, the CA of its
    TLS certificate."""

    address: str
    token: str | None = None
    ca: bytes | None = None

    def channel(self) -> Any:
        """An asyncio channel to the endpoint (TLS when it has a CA)."""
        import grpc

        if self.ca is None:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, grpc.ssl_channel_credentials(root_certificates=self.ca))

    def metadata(self) -> list[tuple[str, str]]:
        """What a call sends besides its deadline: the bearer token, when the port wants one."""
        return [("authorization", f"Bearer {self.token}")] if self.token else []


def endpoint(target: "str | Endpoint") -> Endpoint:
    return target if isinstance(target, Endpoint) else Endpoint(target)


@dataclass
class LoadStats:
    """What a closed-loop load saw. ``failed``: calls that failed for the caller (after any
    retries), by status; ``retried``: attempts the client retried transparently."""

    sent: int = 0
    ok: int = 0
    retried: int = 0
    failed: Counter = field(default_factory=Counter)
    attempt_failures: Counter = field(default_factory=Counter)  # every failed attempt's status, retried or not
    degraded: Counter = field(default_factory=Counter)  # answers with the local labels kept, by reason or kind
    linked: int = 0  # answered, not degraded, with spans linked by the LLM
    invalid: list[str] = field(default_factory=list)  # answers whose entities do not match the text
    latencies_s: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # monotonic times of successful answers
    llm_spans: int = 0
    words: int = 0  # words of the answered requests

    def answered(self, started: float, llm_spans: int = 0, degraded: str | None = None, words: int = 0) -> None:
        """One answer to a call sent at ``started`` (``time.perf_counter``); ``degraded``: why it was,
        None when it was not."""
        self.latencies_s.append(time.perf_counter() - started)
        self.done_at.append(time.monotonic())
        self.ok += 1
        self.llm_spans += llm_spans
        self.words += words
        if degraded is not None:
            self.degraded[degraded] += 1
        elif llm_spans:
            self.linked += 1

    @property
    def statuses(self) -> dict[str, int]:
        """Every call's final status, ``OK`` included."""
        return {**({"OK": self.ok} if self.ok else {}), **self.failed}

    def rate(self, start: float, end: float) -> float:
        """Successful answers per second between two monotonic times."""
        return sum(start <= t < end for t in self.done_at) / max(end - start, 1e-9)

    def p(self, quantile: float) -> float:
        return percentile(sorted(self.latencies_s), quantile)

    def recovered_after(self, fault_at: float, baseline: float, share: float = 0.8,
                        window_s: float = 2.0) -> float | None:
        """Seconds from ``fault_at`` until a ``window_s`` window first reaches ``share`` of ``baseline``
        answers per second again (and every later window of the run too); None if it never does."""
        end = max(self.done_at, default=fault_at)
        t, first = fault_at, None
        while t + window_s <= end:
            good = self.rate(t, t + window_s) >= share * baseline
            first = (first if first is not None else t) if good else None
            t += 0.25
        return None if first is None else first - fault_at

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "ok": self.ok, "failed": sum(self.failed.values()),
                "failed_by_status": dict(self.failed), "retried": self.retried,
                "failed_attempts_by_status": dict(self.attempt_failures),
                "degraded": sum(self.degraded.values()), "invalid": len(self.invalid),
                "p50_ms": round(1000 * self.p(0.5), 1), "p99_ms": round(1000 * self.p(0.99), 1)}


async def keep_calling(callers: int, call: Callable[[int], Awaitable[Any]], going: Callable[[], bool]) -> float:
    """``callers`` callers at once, each awaiting ``call(its number)`` again as soon as the last
    returned, while ``going()``; returns the seconds they took."""

    async def caller(number: int) -> None:
        while going():
            await call(number)

    started = time.perf_counter()
    await asyncio.gather(*(caller(number) for number in range(callers)))
    return time.perf_counter() - started


async def closed_loop(target: "str | Endpoint", texts: list[str], words: list[int], concurrency: int, seconds: float,
                      options: Any = None, deadline_s: float = 30.0) -> dict[str, Any]:
    """``concurrency`` callers on one channel, each sending its next request (the next of ``texts``,
    in turn) when the last is answered, for ``seconds``; a call refused with RESOURCE_EXHAUSTED is
    followed by a jittered 50-150 ms back-off, as a well-behaved gRPC client does. Only answered
    calls count towards throughput; every status is tallied."""
    import grpc

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    requests = [pb.RecognizeRequest(text=text, options=options) for text in texts]
    metadata = endpoint(target).metadata()
    stats = LoadStats()
    turn = itertools.count()
    async with endpoint(target).channel() as channel:
        stub = pb_grpc.LinkNERStub(channel)
        stop_at = time.perf_counter() + seconds

        async def call(_: int) -> None:
            index = next(turn) % len(requests)
            stats.sent += 1
            begin = time.perf_counter()
            try:
                reply = await stub.Recognize(requests[index], metadata=metadata, timeout=deadline_s)
            except grpc.aio.AioRpcError as error:
                stats.failed[error.code().name] += 1
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # back off before trying again
                    await asyncio.sleep(random.uniform(0.05, 0.15))
                return
            stats.answered(begin, reply.llm_spans, reply.degraded_kind if reply.degraded else None, words[index])

        elapsed = await keep_calling(concurrency, call, lambda: time.perf_counter() < stop_at)
    latencies = sorted(stats.latencies_s)
    ok = stats.ok
    return {"concurrency": concurrency, "seconds": elapsed, "answered": ok, "statuses": stats.statuses,
            "degraded": dict(stats.degraded), "linked": stats.linked, "linked_per_s": stats.linked / elapsed,
            "requests_per_s": ok / elapsed, "sentences_per_s": ok / elapsed, "words_per_s": stats.words / elapsed,
            "p50_ms": 1000 * percentile(latencies, 0.50), "p95_ms": 1000 * percentile(latencies, 0.95),
            "p99_ms": 1000 * percentile(latencies, 0.99)}


async def warm_up(target: "str | Endpoint", texts: list[str], options: Any, calls: int = 8) -> None:
    """A few calls before measuring: the ingress builds its service, the LLM engine warms up."""
    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    async with endpoint(target).channel() as channel:
        stub = pb_grpc.LinkNERStub(channel)
        await asyncio.gather(*[stub.Recognize(pb.RecognizeRequest(text=text, options=options),
                                              metadata=endpoint(target).metadata(), timeout=120)
                               for text in texts[:calls]])


TEXTS = [
    "John Smith visited Paris yesterday. Google said Mary Jones will move to Tokyo.",
    "Anna Berg left Reuters last week .",
    "in London , Acme Corp opened a new office .",
    "the talks between United Nations and Peter Blackburn ended .",
    "nothing happened today .",
]


def check_answer(text: str, result: Any) -> str | None:
    """Why an answer is wrong, or None: each entity's character slice of the text equals its text."""
    for entity in result.entities:
        if text[entity.char_start : entity.char_end] != entity.text:
            return f"{text!r}[{entity.char_start}:{entity.char_end}] != {entity.text!r}"
    return None


class ClosedLoad:
    """``clients`` callers through the project's asyncio client (one each: retries with jittered
    backoff and a budget) against ``served`` (its ``target``), each picking its texts
    with a generator seeded by its number, until :meth:`stop`. Runs in its own thread and event
    loop, so the caller can inject faults meanwhile."""

    def __init__(self, served: Any, clients: int = 8, texts: Sequence[str] = TEXTS, timeout_s: float = 10.0,
                 retries: int = 5, **options: Any) -> None:
        self.served, self.clients, self.texts = served, clients, list(texts)
        self.timeout_s, self.retries, self.options = timeout_s, retries, options
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "ClosedLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> LoadStats:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s * (self.retries + 2))
        return self.stats

    async def _run(self) -> None:
        from contextlib import AsyncExitStack

        from clients.client import AsyncLinkNERClient, LinkNERError

        stats = self.stats

        class Counting(AsyncLinkNERClient):
            def _retry_delay(self, code: Any, attempt: int, deadline: float) -> float | None:
                stats.attempt_failures[code.name] += 1
                delay = super()._retry_delay(code, attempt, deadline)
                stats.retried += delay is not None
                return delay

        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Counting(self.served.target, timeout_s=self.timeout_s,
                                                                retries=self.retries, backoff_s=0.1))
                       for _ in range(self.clients)]
            pickers = [random.Random(number) for number in range(self.clients)]

            async def call(number: int) -> None:
                text = pickers[number].choice(self.texts)
                stats.sent += 1
                started = time.perf_counter()
                try:
                    result = await clients[number].recognize(text, **self.options)
                except LinkNERError as error:
                    stats.failed[error.code.name] += 1
                    return
                stats.answered(started, result.llm_spans, result.degraded_reason if result.degraded else None)
                problem = check_answer(text, result)
                if problem:
                    stats.invalid.append(problem)

            await keep_calling(self.clients, call, lambda: not self._stop.is_set())

"""The local model behind the ingress's :class:`deployments.handles.NERClient`, in one of two places:

- :class:`EmbeddedNER` (``ner.placement: embedded``, CPU): worker processes inside the ingress
  replica, one forward pass per core;
- :class:`NERReplica` (``ner.placement: pool``, GPU or several nodes): a Ray Serve deployment of its
  own, one pass at a time per replica, reached through :class:`deployments.handles.NERPool`.

The ingress coalesces concurrent requests into each call (:class:`deployments.handles.CoalescingRecognizer`):
a call here is one forward pass.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ray import serve

from deployments.metrics import NERMetrics
from linkner.data.spans import Entity
from linkner.service.config import NERConfig
from linkner.telemetry import TelemetryConfig, current_carrier, setup_tracing, traced

if TYPE_CHECKING:  # torch comes with it: the embedded model's ingress never loads it
    from linkner.model.predictor import SpanPredictor

Predictions = list[list[Entity]]


def predictor_options(config: NERConfig) -> dict[str, Any]:
    """:meth:`SpanPredictor.from_checkpoint`'s options for ``config`` (in a replica or a worker)."""
    return {"mc_samples": config.mc_samples, "consistency": config.document_consistency,
            "pack_tokens": config.pack_tokens, "runtime": config.runtime}


def limit_tokenizer_threads(threads: int) -> None:
    """The fast tokenizer's own thread pool would otherwise take every core for each pass (worker
    processes inherit this)."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"


def on_gpu(config: NERConfig) -> bool:
    """Whether the model runs on a GPU: ``device`` names one, or is ``auto`` and the replica reserves one."""
    reserved = (config.deployment.get("ray_actor_options") or {}).get("num_gpus") or 0
    return config.device.startswith("cuda") or (config.device == "auto" and reserved > 0)


def embedded_passes(config: NERConfig) -> int:
    """Forward passes an embedded model runs at once, one worker process each: one per ``threads``
    cores this process may use on a CPU, one on a GPU."""
    if on_gpu(config):
        return 1
    return max(1, len(os.sched_getaffinity(0)) // config.threads)


def where_this_runs() -> tuple[str, str]:
    """This Serve replica's id and node id, for the spans ("local" outside Serve, as in
    ``benchmarks/ingress_without_ray.py``)."""
    import ray
    from ray.serve.exceptions import RayServeException

    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        return "local", "local"
    return replica, ray.get_runtime_context().get_node_id()


class ForwardPasses:
    """What both places do around a pass: the ``linkner.ner.request`` and ``linkner.ner.batch``
    spans (naming the replica and node that answered) and the pass's metrics."""

    def __init__(self) -> None:
        self.metrics = NERMetrics()
        self.replica_id, self.node_id = where_this_runs()

    async def run(self, sentences: list[list[str]], carrier: dict[str, str] | None,
                  predict: Callable[[], Awaitable[Predictions]],
                  requests: int, turn: AbstractAsyncContextManager[Any] | None = None) -> Predictions:
        """One call's pass (``predict``: the ``requests`` the ingress merged into it), once ``turn``
        (if any) is this call's."""
        queued = time.perf_counter()
        with traced("linkner.ner.request", carrier, sentences=len(sentences), replica=self.replica_id,
                    node=self.node_id):
            async with turn or nullcontext():
                wait = time.perf_counter() - queued
                self.metrics.batch(requests, len(sentences), [wait])
                with traced("linkner.ner.batch", current_carrier(), requests=requests, sentences=len(sentences),
                            queue_wait_ms=round(1000 * wait, 3)):
                    return await predict()


class EmbeddedNER:
    """The model in worker processes of this ingress replica (one pass per core; the ingress
    process itself loads no torch). An :class:`deployments.handles.NERClient`."""

    def __init__(self, config: NERConfig) -> None:
        from linkner.model.processes import PredictorProcesses, PredictorSpec

        limit_tokenizer_threads(config.threads)
        self.passes = embedded_passes(config)
        spec = PredictorSpec(config.checkpoint, config.device, config.threads, predictor_options(config))
        self.processes = PredictorProcesses(spec, self.passes)
        self.forward = ForwardPasses()

    async def describe(self) -> dict:
        """Labels, estimators, objective and device of the served model."""
        return self.processes.description

    async def embed(self, items: list[tuple[list[str], int, int]]) -> Any:
        """Span embeddings (for retrieved demonstrations) of ``(words, start, end)`` items."""
        return await self.processes.span_embeddings(items)

    async def predict(self, sentences: list[list[str]], estimators: list[str], carrier: dict[str, str] | None = None,
                      documents: list[int] | None = None, requests: int = 1) -> Predictions:
        """One forward pass on the next idle worker."""
        return await self.forward.run(sentences, carrier, lambda: self.processes.predict(
            sentences, sorted(estimators), documents or [0] * len(sentences)), requests)


@serve.deployment
class NERReplica:
    """A replica of the NER pool: the model in this process, one forward pass at a time (calls
    arrive already coalesced by the ingress; more replicas run more passes)."""

    def __init__(self, config: NERConfig, telemetry: TelemetryConfig) -> None:
        import torch

        from linkner.model.predictor import SpanPredictor

        setup_tracing(telemetry, "ner")
        limit_tokenizer_threads(config.threads)
        torch.set_num_threads(config.threads)
        self.predictor: SpanPredictor = SpanPredictor.from_checkpoint(config.checkpoint, config.device,
                                                                      **predictor_options(config))
        self.forward = ForwardPasses()
        self._turn = asyncio.Lock()

    async def describe(self) -> dict:
        """Labels, estimators, objective and device of the served model."""
        return self.predictor.describe()

    async def embed(self, items: list[tuple[list[str], int, int]]) -> Any:
        """Span embeddings (for retrieved demonstrations) of ``(words, start, end)`` items."""
        async with self._turn:
            return await asyncio.to_thread(self.predictor.span_embeddings, items)

    async def predict(self, sentences: list[list[str]], estimators: list[str], carrier: dict[str, str] | None = None,
                      documents: list[int] | None = None, requests: int = 1) -> Predictions:
        """One call's predictions, in this replica's next turn."""
        return await self.forward.run(sentences, carrier, lambda: asyncio.to_thread(
            self.predictor.predict, sentences, sorted(estimators), documents or [0] * len(sentences)),
            requests, self._turn)

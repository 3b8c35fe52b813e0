"""The local model: :class:`LocalNER` (a plain class: predictor, tracing, metrics), served either by
the NER replica pool behind Ray Serve dynamic batching (:class:`NERReplica`) or embedded in the
ingress process (``ner.placement: embedded``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Sequence

from ray import serve

from deployments.metrics import NERMetrics
from linkner.data.spans import Entity
from linkner.service.config import NERConfig
from linkner.telemetry import TelemetryConfig, current_carrier, setup_tracing, traced

if TYPE_CHECKING:  # torch comes with it: an ingress whose passes run in worker processes never loads it
    from linkner.model.predictor import SpanPredictor

CallItem = tuple[list[list[str]], tuple[str, ...], dict[str, str], list[int], float]
"""One call's sentences, estimators, trace carrier, document ids and the time it was queued."""


class LocalNER:
    """The local model of this process. Its methods are the ingress's :class:`NERClient`; an
    embedded one is called directly, the pool's through :class:`NERReplica`."""

    def __init__(self, config: NERConfig, replica_id: str = "", node_id: str = "") -> None:
        self.metrics = NERMetrics()
        if config.threads:
            # the fast tokenizer's own thread pool would otherwise take every core for each batch (worker
            # processes inherit these; they set their torch threads themselves)
            os.environ["RAYON_NUM_THREADS"] = str(config.threads)
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if config.threads > 1 else "false"
        # where this model runs: on its spans, so a trace shows which replica and node answered
        self.replica_id, self.node_id = replica_id, node_id
        options = self.predictor_options(config)
        # embedded with worker processes: the model lives in the workers alone (they also answer
        # describe() and embed()); otherwise in this process
        self.predictor: SpanPredictor | None = None
        self.processes = None
        if config.placement == "embedded" and config.pass_workers == "process":
            from linkner.model.processes import PredictorProcesses, PredictorSpec

            spec = PredictorSpec(config.checkpoint, config.device, config.threads or 1, options)
            self.processes = PredictorProcesses(spec, config.concurrent_passes, borrow_idle=config.lone_pass_borrows)
        else:
            import torch

            from linkner.model import predictor

            if config.threads:
                torch.set_num_threads(config.threads)
            self.predictor = predictor.SpanPredictor.from_checkpoint(config.checkpoint, config.device, **options)

    @staticmethod
    def predictor_options(config: NERConfig) -> dict[str, Any]:
        """:meth:`SpanPredictor.from_checkpoint`'s options for ``config`` (in this process or a worker's)."""
        return {"mc_samples": config.mc_samples, "consistency": config.document_consistency,
                "pack_tokens": config.pack_tokens}

    @classmethod
    def in_this_replica(cls, config: NERConfig) -> "LocalNER":
        """The model of the Serve replica this runs in, its spans labelled with the replica and node
        ("local" outside Serve: ``benchmarks/ingress_without_ray.py`` runs the ingress in a plain process)."""
        import ray
        from ray.serve.exceptions import RayServeException

        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except RayServeException:
            return cls(config, "local", "local")
        return cls(config, replica, ray.get_runtime_context().get_node_id())

    def request_span(self, carrier: dict[str, str] | None, sentences: int):
        """The ``linkner.ner.request`` span of one call (in the caller's trace)."""
        return traced("linkner.ner.request", carrier, sentences=sentences, replica=self.replica_id, node=self.node_id)

    async def describe(self) -> dict:
        """Labels, estimators, objective and device of the served model."""
        return self.processes.description if self.processes is not None else self.predictor.describe()

    async def embed(self, items: list[tuple[list[str], int, int]]):
        """Span embeddings (for retrieved demonstrations) of ``(words, start, end)`` items."""
        if self.processes is not None:
            return await self.processes.span_embeddings(items)
        return await asyncio.to_thread(self.predictor.span_embeddings, items)

    async def predict(self, sentences: list[list[str]], estimators: list[str],
                      carrier: dict[str, str] | None = None, documents: list[int] | None = None
                      ) -> list[list[Entity]]:
        """One call, predicted at once (the embedded model: the ingress already coalesces calls)."""
        with self.request_span(carrier, len(sentences)):
            return (await self.predict_calls([self.call_item(sentences, estimators, documents)]))[0]

    @staticmethod
    def call_item(sentences: list[list[str]], estimators: Sequence[str], documents: list[int] | None) -> CallItem:
        """A call as :meth:`predict_calls` takes it (documents default: the call is one document)."""
        return (sentences, tuple(estimators), current_carrier(), documents or [0] * len(sentences),
                time.perf_counter())

    async def predict_calls(self, items: Sequence[CallItem]) -> list[list[list[Entity]]]:
        """One forward pass for all calls; its span joins the first call's trace. Documents never
        span two calls (each call's document ids are kept apart)."""
        started = time.perf_counter()
        estimators = sorted({name for _, names, _, _, _ in items for name in names})
        flat = [sentence for sentences, _, _, _, _ in items for sentence in sentences]
        keys = [(call, document) for call, (_, _, _, documents, _) in enumerate(items) for document in documents]
        numbering = {key: number for number, key in enumerate(dict.fromkeys(keys))}
        waits = [started - queued for _, _, _, _, queued in items]
        self.metrics.batch(len(items), len(flat), waits)
        with traced("linkner.ner.batch", items[0][2], requests=len(items), sentences=len(flat),
                    queue_wait_ms=round(1000 * max(waits), 3)):
            documents = [numbering[key] for key in keys]
            if self.processes is not None:
                predictions = await self.processes.predict(flat, estimators, documents)
            else:
                predictions = await asyncio.to_thread(self.predictor.predict, flat, estimators, documents)
        results, cursor = [], 0
        for sentences, _, _, _, _ in items:
            results.append(predictions[cursor : cursor + len(sentences)])
            cursor += len(sentences)
        return results


@serve.deployment
class NERReplica:
    """A replica of the NER pool: merges concurrent calls into one forward pass (``@serve.batch``)."""

    def __init__(self, config: NERConfig, telemetry: TelemetryConfig) -> None:
        setup_tracing(telemetry, "ner")
        self.model = LocalNER.in_this_replica(config)
        self.predict_batched.set_max_batch_size(config.max_batch_size)
        self.predict_batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    async def describe(self) -> dict:
        """Labels, estimators and objective of the served model."""
        return await self.model.describe()

    async def embed(self, items: list[tuple[list[str], int, int]]):
        """Span embeddings (for retrieved demonstrations) of ``(words, start, end)`` items."""
        return await self.model.embed(items)

    async def predict(self, sentences: list[list[str]], estimators: list[str],
                      carrier: dict[str, str] | None = None, documents: list[int] | None = None
                      ) -> list[list[Entity]]:
        """Predictions of one call, batched with other calls to this replica."""
        with self.model.request_span(carrier, len(sentences)):
            return await self.predict_batched(LocalNER.call_item(sentences, estimators, documents))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict_batched(self, items: Sequence[CallItem]) -> list[list[list[Entity]]]:
        return await self.model.predict_calls(items)

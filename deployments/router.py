"""Router: RDC over the NER replicas and the LLM pool (the logic is linkner.service.service)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray import serve

from deployments.handles import HandleBackend, HandleRecognizer
from linkner.llm.factory import candidate_count
from linkner.routing.linker import RDCLinker
from linkner.service.api import InvalidRequest, RecognizeInput, RecognizeOutput, ServiceDescription
from linkner.service.calibration_state import calibration_state
from linkner.service.service import LinkNERService
from linkner.service.config import AppConfig
from linkner.telemetry import setup_tracing, traced


async def pool_embeddings(ner: Any, pool: list, checkpoint: Path, chunk: int = 512) -> Any:
    """The pool's span embeddings: from the checkpoint's cache file, or computed by the NER replicas."""
    import torch

    from linkner.llm.demonstrations import embeddings_cache_path, load_cached_embeddings, save_cached_embeddings

    cache = embeddings_cache_path(checkpoint, pool)
    stored = load_cached_embeddings(cache, len(pool))
    if stored is not None:
        return stored
    items = [(list(d.tokens), d.start, d.end) for d in pool]
    embeddings = torch.cat([await ner.embed.remote(items[i : i + chunk]) for i in range(0, len(items), chunk)])
    save_cached_embeddings(cache, embeddings)
    return embeddings


@serve.deployment
class Router:
    def __init__(self, ner: Any, llm: Any | None, config: AppConfig) -> None:
        setup_tracing(config.telemetry, "router")
        self.config = config
        self.ner, self.llm = ner, llm
        self.calibration = calibration_state(config)  # at start-up: a stale calibration is logged now
        self.service: LinkNERService | None = None
        self._building = asyncio.Lock()

    async def _service(self) -> LinkNERService:
        """Built once, on the first request (concurrent first requests wait for the same build,
        so the demonstration pool is embedded once)."""
        async with self._building:
            return self.service or await self._build()

    async def _build(self) -> LinkNERService:
        if self.service is None:
            info = await self.ner.describe.remote()
            backend = None
            if self.llm is not None:
                backend = HandleBackend(self.llm, await self.llm.model_id.remote(),
                                        candidate_count(self.config.llm_pool.llm))
            linker = RDCLinker(HandleRecognizer(self.ner, info["labels"]), backend, self.calibration.policy,
                               selector=await self._selector(), llm_timeout_s=self.config.router.llm_timeout_s)
            stored = self.calibration.stored
            self.service = LinkNERService(linker, info["estimators"], f"{info['encoder']}:{info['objective']}",
                                          self.config.router.limits, self.calibration.status,
                                          stored.model_dump_json() if stored is not None else "")
        return self.service

    async def _selector(self) -> Any:
        """Demonstrations as configured; retrieved ones embed through the NER replicas, and the
        training pool's embeddings are cached beside the checkpoint."""
        settings = self.config.router.demonstrations
        if settings.kind == "none" or self.llm is None:
            return None
        from linkner.llm.demonstrations import (RandomDemonstrations, RemoteRetrievedDemonstrations,
                                                training_demonstrations)
        from linkner.data.readers import read_dataset

        pool = training_demonstrations(read_dataset(settings.train))
        if settings.kind == "random":
            return RandomDemonstrations(pool, settings.k, settings.seed)
        embeddings = await pool_embeddings(self.ner, pool, Path(self.config.ner.checkpoint))
        return RemoteRetrievedDemonstrations(self.ner.embed.remote, pool, embeddings, settings.k)

    async def recognize(self, request: RecognizeInput, timeout_s: float | None, deadline_at: float | None = None,
                        carrier: dict[str, str] | None = None) -> RecognizeOutput | InvalidRequest:
        """The answer, or the InvalidRequest (returned, not raised, so it crosses processes intact).
        The LLM step ends by ``timeout_s`` and before the caller's ``deadline_at`` (wall clock)."""
        service = await self._service()
        with traced("linkner.router", carrier, request_id=request.request_id or None):
            try:
                return await service.recognize(request, timeout_s, deadline_at)
            except InvalidRequest as error:
                return error

    async def describe(self) -> ServiceDescription:
        """What this router serves (see :meth:`LinkNERService.describe`)."""
        return (await self._service()).describe()

    async def limits(self) -> dict:
        return (await self._service()).limits.model_dump()

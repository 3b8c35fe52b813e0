"""Choosing demonstrations for the LLM prompt: none, random k per label (the paper's), or the k
training spans most similar to the queried span (by the local encoder's span embedding)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Literal, Protocol, Sequence

from linkner.data.spans import Sentence
from linkner.llm.protocol import Demonstration

if TYPE_CHECKING:
    import torch

    from linkner.model.predictor import SpanPredictor

DemonstrationKind = Literal["none", "random", "retrieved"]
SpanInContext = tuple[Sequence[str], int, int]  # (words, start, end_exclusive) of a span


class DemonstrationSelector(Protocol):
    def select(self, spans: Sequence[SpanInContext]) -> list[list[Demonstration]]:
        """Demonstrations for each queried span."""
        ...


def training_demonstrations(sentences: Sequence[Sentence]) -> list[Demonstration]:
    """Every gold entity of ``sentences`` as a demonstration."""
    return [Demonstration(tokens=s.tokens, start=e.start, end=e.end, label=e.label)
            for s in sentences for e in s.entities]


class NoDemonstrations:
    def select(self, spans: Sequence[SpanInContext]) -> list[list[Demonstration]]:
        return [[] for _ in spans]


class RandomDemonstrations:
    """``k`` random examples of each label, fixed once (the paper's setting), seeded."""

    def __init__(self, pool: Sequence[Demonstration], k: int = 1, seed: int = 0) -> None:
        rng = random.Random(seed)
        by_label: dict[str, list[Demonstration]] = {}
        for demo in pool:
            by_label.setdefault(demo.label, []).append(demo)
        self.chosen = [demo for label in sorted(by_label)
                       for demo in rng.sample(by_label[label], min(k, len(by_label[label])))]
        rng.shuffle(self.chosen)

    def select(self, spans: Sequence[SpanInContext]) -> list[list[Demonstration]]:
        return [list(self.chosen) for _ in spans]


class RetrievedDemonstrations:
    """The ``k`` most similar labelled spans by cosine similarity of span embeddings; the most
    similar comes last (nearest the question). Exact copies of the queried span are skipped."""

    def __init__(self, predictor: "SpanPredictor", pool: Sequence[Demonstration], k: int = 4,
                 embeddings: "torch.Tensor | None" = None) -> None:
        self.predictor = predictor
        self.pool = list(pool)
        self.k = k
        self.embeddings = embeddings if embeddings is not None else predictor.span_embeddings(
            [(demo.tokens, demo.start, demo.end) for demo in self.pool])

    @classmethod
    def cached(cls, predictor: "SpanPredictor", pool: Sequence[Demonstration], cache: Path, k: int = 4
               ) -> "RetrievedDemonstrations":
        """Load the pool's embeddings from ``cache`` (a .pt file) or compute and save them."""
        stored = load_cached_embeddings(cache, len(pool))
        if stored is not None:
            return cls(predictor, pool, k, stored)
        selector = cls(predictor, pool, k)
        save_cached_embeddings(cache, selector.embeddings)
        return selector

    def select(self, spans: Sequence[SpanInContext]) -> list[list[Demonstration]]:
        if not spans:
            return []
        return nearest_demonstrations(self.pool, self.embeddings, self.k, spans,
                                      self.predictor.span_embeddings(spans))


class RemoteRetrievedDemonstrations:
    """Retrieved demonstrations whose query embeddings come from an async embedder (the NER
    replicas of the served application); the pool's embeddings are given."""

    def __init__(self, embed: Callable[[list[SpanInContext]], Awaitable["torch.Tensor"]],
                 pool: Sequence[Demonstration], embeddings: "torch.Tensor", k: int = 4) -> None:
        self.embed = embed
        self.pool = list(pool)
        self.embeddings = embeddings
        self.k = k

    async def select_async(self, spans: Sequence[SpanInContext]) -> list[list[Demonstration]]:
        if not spans:
            return []
        queries = await self.embed([(list(words), start, end) for words, start, end in spans])
        return nearest_demonstrations(self.pool, self.embeddings, self.k, spans, queries)


CACHE_NAME = re.compile(r"demonstrations-(?P<pool>[0-9a-f]{16})-(?P<weights>[0-9a-f]{16}|no-weights)\.pt")
LEGACY_CACHE_NAME = re.compile(r"demonstrations-\d+\.pt")  # keyed by the pool's size alone


def pool_fingerprint(pool: Sequence[Demonstration]) -> str:
    """SHA-256 of a demonstration pool's content: every span's words, offsets and label, in order."""
    digest = hashlib.sha256()
    for demo in pool:
        digest.update(json.dumps([demo.tokens, demo.start, demo.end, demo.label]).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def embeddings_cache_path(checkpoint: Path, pool: Sequence[Demonstration]) -> Path:
    """Where a checkpoint keeps the span embeddings of a demonstration pool: the name holds a hash
    of the pool's content and of the checkpoint's weights, so another pool of the same size, or
    retrained weights, never find a stale file."""
    from linkner.model.metadata import weights_fingerprint

    weights = weights_fingerprint(checkpoint)
    return Path(checkpoint) / f"demonstrations-{pool_fingerprint(pool)[:16]}-{weights[:16]}.pt"


def load_cached_embeddings(cache: Path, size: int) -> "torch.Tensor | None":
    """The cached embeddings when the file holds exactly ``size`` rows, else None."""
    import torch

    if not cache.is_file():
        return None
    stored = torch.load(cache, weights_only=True)
    return stored if stored.size(0) == size else None


def save_cached_embeddings(cache: Path, embeddings: "torch.Tensor") -> None:
    """Save embeddings for the next start; a read-only checkpoint folder is not an error."""
    import torch

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(embeddings, cache)
        remove_stale_caches(cache)
    except OSError:
        pass


def remove_stale_caches(cache: Path) -> None:
    """Delete the caches beside ``cache`` made for other weights (or keyed by size alone): they can
    never be used again. Caches of other pools for the same weights stay."""
    current = CACHE_NAME.fullmatch(cache.name)
    if current is None:
        return
    for other in cache.parent.glob("demonstrations-*.pt"):
        match = CACHE_NAME.fullmatch(other.name)
        if LEGACY_CACHE_NAME.fullmatch(other.name) or (match and match["weights"] != current["weights"]):
            other.unlink(missing_ok=True)


def nearest_demonstrations(pool: Sequence[Demonstration], pool_embeddings: "torch.Tensor", k: int,
                           spans: Sequence[SpanInContext], queries: "torch.Tensor") -> list[list[Demonstration]]:
    """The ``k`` pool entries most similar to each query, most similar last; exact copies of the
    queried span (repeated lines) are skipped."""
    similarity = queries @ pool_embeddings.T
    top = similarity.topk(min(k + 16, len(pool)), dim=-1).indices.tolist()
    chosen = []
    for (words, start, end), candidates in zip(spans, top):
        picked = [pool[i] for i in candidates
                  if not (pool[i].tokens == tuple(words) and (pool[i].start, pool[i].end) == (start, end))]
        chosen.append(list(reversed(picked[:k])))
    return chosen


def build_selector(kind: DemonstrationKind, predictor: "SpanPredictor | None", pool: Sequence[Demonstration],
                   k: int, seed: int = 0, cache: Path | None = None) -> DemonstrationSelector:
    """The selector ``kind`` names (``retrieved`` needs the local predictor for embeddings)."""
    if kind == "none" or not pool:
        return NoDemonstrations()
    if kind == "random":
        return RandomDemonstrations(pool, k, seed)
    if predictor is None:
        raise ValueError("retrieved demonstrations need the local model for span embeddings")
    if cache is not None:
        return RetrievedDemonstrations.cached(predictor, pool, cache, k)
    return RetrievedDemonstrations(predictor, pool, k)

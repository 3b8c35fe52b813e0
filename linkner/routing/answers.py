"""LLM answers by predicted entity, asked for once in batches (with progress), timed and counted:
every point of a sweep or a calibration reuses them."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Sequence

from linkner.data.spans import Sentence
from linkner.llm.protocol import LLMBackend, SpanAnswer
from linkner.routing.linker import backend_candidates, classify_with_deadline, span_queries
from linkner.routing.ranking import EntityRef, Predictions

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector


class AnswerCache:
    """LLM answers by span, asked for in batches with progress, timed and counted."""

    def __init__(self, backend: LLMBackend, sentences: Sequence[Sentence], predictions: Predictions,
                 labels: Sequence[str], selector: "DemonstrationSelector | None" = None) -> None:
        self.backend = backend
        self.sentences = sentences
        self.predictions = predictions
        self.labels = list(labels)
        self.selector = selector
        self.answers: dict[EntityRef, SpanAnswer] = {}
        self.seconds = 0.0

    async def ensure(self, refs: Sequence[EntityRef], batch: int = 64, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        missing = [ref for ref in dict.fromkeys(refs) if ref not in self.answers]
        tokens = [s.tokens for s in self.sentences]
        with tqdm(total=len(missing), desc=f"asking {self.backend.model_id}", unit="span",
                  disable=not progress or not missing, file=sys.stderr) as bar:
            for start in range(0, len(missing), batch):
                chunk = missing[start : start + batch]
                started = time.perf_counter()
                queries = span_queries(tokens, self.predictions, chunk, self.selector,
                                       candidates=backend_candidates(self.backend))
                answers = await classify_with_deadline(self.backend, queries, self.labels, None)
                self.seconds += time.perf_counter() - started
                self.answers.update(zip(chunk, answers))
                bar.update(len(chunk))

    def for_refs(self, refs: Sequence[EntityRef]) -> list[SpanAnswer]:
        return [self.answers[ref] for ref in refs]

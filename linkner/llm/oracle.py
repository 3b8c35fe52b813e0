"""An evaluation backend that answers the gold label for routed spans: the upper bound of what
uncertainty routing allows (the LLM is perfect, so only the choice of spans limits the gain)."""

from __future__ import annotations

from typing import Sequence

from linkner.data.spans import Sentence
from linkner.llm.protocol import NON_ENTITY, SpanAnswer, SpanQuery


class OracleBackend:
    """Looks the span up in the gold data; a span that is not exactly a gold entity is Non-entity."""

    model_id = "oracle"

    def __init__(self, sentences: Sequence[Sentence]) -> None:
        self.gold = {(s.tokens, e.start, e.end): e.label for s in sentences for e in s.entities}

    async def classify(self, queries: Sequence[SpanQuery], labels: Sequence[str],
                       timeout_s: float | None = None) -> list[SpanAnswer]:
        return [SpanAnswer(label=self.gold.get((tuple(q.tokens), q.start, q.end), NON_ENTITY), score=1.0,
                           model=self.model_id) for q in queries]

    async def close(self) -> None:
        return None

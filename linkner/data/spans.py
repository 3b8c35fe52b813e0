"""Core data records: labelled sentences and entity spans.

Spans use word offsets with an exclusive end: ``Span(0, 2, "PER")`` covers words 0 and 1.
These are plain frozen dataclasses (hot-path records, millions per epoch); the pydantic
shapes for configs and API messages live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

OUTSIDE = "O"


@dataclass(frozen=True, order=True)
class Span:
    """An entity mention: words ``start`` .. ``end - 1`` labelled ``label``."""

    start: int
    end: int
    label: str

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid span offsets [{self.start}, {self.end})")

    def overlaps(self, other: "Span") -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Sentence:
    """A tokenised sentence with its (possibly empty) gold entities."""

    tokens: tuple[str, ...]
    entities: tuple[Span, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for span in self.entities:
            if span.end > len(self.tokens):
                raise ValueError(f"span {span} runs past the sentence end ({len(self.tokens)} tokens)")

    def __len__(self) -> int:
        return len(self.tokens)

    def span_text(self, span: Span) -> str:
        return " ".join(self.tokens[span.start : span.end])


@dataclass(slots=True)
class Entity:
    """A predicted entity, the one shape from the local model to the response.

    The predictor fills the first six fields (word offsets within its sentence, end exclusive;
    the local model's label, its probability, uncertainties by estimator, and every class with its
    probability, most probable first). Linking sets ``label``, ``source``, ``llm_score`` and
    ``degraded``; the service places it in the request's document (``sentence``, ``word_*``,
    ``char_*``, ``text``). Each step makes a copy (``dataclasses.replace``), never edits in place.
    """

    start: int
    end: int
    label: str
    probability: float  # the local model's probability of ``local_label``
    uncertainty: dict[str, float] = field(default_factory=dict)
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    local_label: str = ""  # the local model's label (``label`` until the LLM changes it)
    source: str = "local"  # "local" or "llm"
    llm_score: float | None = None
    degraded: bool = False  # routed, but the LLM could not answer: the local label stands
    sentence: int = 0
    word_start: int = -1  # in the document
    word_end: int = -1
    char_start: int = -1  # in the request text; -1 for pre-tokenized input
    char_end: int = -1
    text: str = ""

    def __post_init__(self) -> None:
        if not self.local_label:
            self.local_label = self.label

    @property
    def span(self) -> Span:
        return Span(self.start, self.end, self.label)


def label_set(sentences: Iterable[Sentence]) -> list[str]:
    """The sorted entity types found in ``sentences`` (never including ``O``)."""
    return sorted({span.label for sentence in sentences for span in sentence.entities})


def make_sentence(tokens: Sequence[str], entities: Iterable[Span] = ()) -> Sentence:
    """Build a :class:`Sentence` from any sequences, sorting its entities."""
    return Sentence(tuple(tokens), tuple(sorted(entities)))

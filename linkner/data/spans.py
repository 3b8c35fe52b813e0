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


def label_set(sentences: Iterable[Sentence]) -> list[str]:
    """The sorted entity types found in ``sentences`` (never including ``O``)."""
    return sorted({span.label for sentence in sentences for span in sentence.entities})


def make_sentence(tokens: Sequence[str], entities: Iterable[Span] = ()) -> Sentence:
    """Build a :class:`Sentence` from any sequences, sorting its entities."""
    return Sentence(tuple(tokens), tuple(sorted(entities)))

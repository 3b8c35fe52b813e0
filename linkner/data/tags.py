"""Conversions between BIO-style tag sequences and entity spans.

Schemes:
- ``iob2`` (BIO): every entity starts with ``B-``. In strict mode an ``I-X`` that does not
  continue an entity of type X is an error; otherwise it starts a new entity (as conlleval does).
- ``iob1``: ``I-`` starts an entity; ``B-`` only separates two adjacent entities of one type.
  Decoding it is the same as lenient IOB2 decoding.
"""

from __future__ import annotations

from typing import Literal, Sequence

from linkner.data.spans import OUTSIDE, Span

TagScheme = Literal["iob2", "iob1"]


class TagError(ValueError):
    """A tag sequence problem at token ``index`` (0-based within the sentence)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


def parse_tag(tag: str, index: int = 0) -> tuple[str, str]:
    """Split ``B-PER`` into ``("B", "PER")``; ``O`` gives ``("O", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not label:
        raise TagError(index, f"bad tag {tag!r}: expected 'O', 'B-TYPE' or 'I-TYPE'")
    return prefix, label


def tags_to_spans(tags: Sequence[str], scheme: TagScheme = "iob2", strict: bool = False) -> list[Span]:
    """Decode a tag sequence into entity spans.

    Raises :class:`TagError` for malformed tags, and, with ``strict`` IOB2, for an ``I-``
    that does not continue an entity of the same type.
    """
    if strict and scheme != "iob2":
        raise ValueError("strict decoding is defined for the iob2 scheme only")
    spans: list[Span] = []
    start: int | None = None
    current = ""
    for index, tag in enumerate(tags):
        prefix, label = parse_tag(tag, index)
        continues = prefix == "I" and start is not None and label == current
        if prefix == "I" and not continues and strict:
            raise TagError(index, f"{tag!r} does not continue an entity of type {label!r} (I- without B-)")
        if start is not None and not continues:
            spans.append(Span(start, index, current))
            start = None
        if prefix != OUTSIDE and not continues:
            start, current = index, label
    if start is not None:
        spans.append(Span(start, len(tags), current))
    return spans


def spans_to_tags(length: int, spans: Sequence[Span], scheme: TagScheme = "iob2") -> list[str]:
    """Encode non-overlapping spans as a tag sequence of ``length`` tokens."""
    tags = [OUTSIDE] * length
    previous: Span | None = None
    for span in sorted(spans):
        if span.end > length:
            raise ValueError(f"span {span} runs past {length} tokens")
        if previous is not None and span.overlaps(previous):
            raise ValueError(f"overlapping spans {previous} and {span}")
        adjacent_same = previous is not None and previous.end == span.start and previous.label == span.label
        if scheme == "iob2" or adjacent_same:
            tags[span.start] = f"B-{span.label}"
        else:
            tags[span.start] = f"I-{span.label}"
        for index in range(span.start + 1, span.end):
            tags[index] = f"I-{span.label}"
        previous = span
    return tags

"""Turning word-tokenised sentences into padded tensors of sub-words, words and candidate spans."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

import torch

from linkner.data.spans import OUTSIDE, Sentence
from linkner.model.casing import casing_class

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class SpanBatch:
    """Tensors for one batch. Span ends are inclusive word indices; ``spans[i]`` lists the
    candidate spans of sentence ``i`` as ``(start, end_exclusive)`` in span-axis order."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    word_index: torch.Tensor  # [B, W] position of each word's first sub-token
    casing: torch.Tensor  # [B, W]
    span_start: torch.Tensor  # [B, S]
    span_end: torch.Tensor  # [B, S] inclusive
    span_width: torch.Tensor  # [B, S] width - 1
    span_mask: torch.Tensor  # [B, S] bool
    span_labels: torch.Tensor | None  # [B, S] class index, IGNORE_INDEX on padding
    spans: list[list[tuple[int, int]]]
    represented_words: list[int]  # words per sentence that fit under the sub-word limit

    def to(self, device: torch.device | str) -> "SpanBatch":
        """Move every tensor to ``device``."""
        moved = {}
        for item in fields(self):
            value = getattr(self, item.name)
            moved[item.name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return SpanBatch(**moved)


class SpanBatcher:
    """Encodes sentences for :class:`~linkner.model.span_model.SpanNER`."""

    def __init__(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        labels: Sequence[str],
        max_span_len: int,
        max_subwords: int = 512,
    ) -> None:
        self.tokenizer = tokenizer
        self.classes = [OUTSIDE, *labels]
        self.class_index = {name: index for index, name in enumerate(self.classes)}
        self.max_span_len = max_span_len
        self.max_subwords = min(max_subwords, getattr(tokenizer, "model_max_length", max_subwords) or max_subwords)
        self._tables: dict[int, SpanTable] = {}

    def tokenize(self, words: Sequence[Sequence[str]]) -> "Tokenized":
        """Tokenize word lists once, padded (on the right) to the longest; batches then take rows of
        it (:meth:`encode_rows`) without tokenizing again."""
        lists = [list(tokens) for tokens in words]
        # always these padding and truncation settings: a fast tokenizer keeps them as state, and
        # changing them while another thread encodes breaks that thread's batch
        encoding = self.tokenizer(lists, is_split_into_words=True, truncation=True, max_length=self.max_subwords,
                                  padding=True, return_tensors="pt")
        return Tokenized(lists, encoding)

    def encode(self, sentences: Sequence[Sentence], with_labels: bool = False) -> SpanBatch:
        """Encode a batch; with labels, every candidate span gets its gold class (``O`` if none)."""
        tokenized = self.tokenize([sentence.tokens for sentence in sentences])
        return self.encode_rows(tokenized, range(len(sentences)), sentences if with_labels else None)

    def encode_rows(self, tokenized: "Tokenized", rows: Sequence[int],
                    gold: Sequence[Sentence] | None = None) -> SpanBatch:
        """The batch of ``tokenized``'s ``rows`` (padded to their own longest); with ``gold`` (the
        rows' labelled sentences), every candidate span gets its gold class."""
        rows = list(rows)
        words = [tokenized.words[row] for row in rows]
        lengths = tokenized.encoding["attention_mask"][rows].sum(1)
        width = max(1, int(lengths.max())) if rows else 1
        input_ids = tokenized.encoding["input_ids"][rows, :width]
        attention_mask = tokenized.encoding["attention_mask"][rows, :width]
        batch_size = len(rows)
        max_words = max((len(tokens) for tokens in words), default=1) or 1
        word_index = torch.zeros(batch_size, max_words, dtype=torch.long)
        represented: list[int] = []
        for position, (row, length) in enumerate(zip(rows, lengths.tolist())):
            truncated = length >= self.max_subwords
            represented.append(self._align_words(tokenized.encoding.word_ids(row), len(words[position]), truncated,
                                                 word_index[position]))
        casing = torch.tensor(
            [[casing_class(token) for token in tokens] + [0] * (max_words - len(tokens)) for tokens in words],
            dtype=torch.long,
        ).view(batch_size, max_words)

        tables = [self._span_table(count) for count in represented]
        spans = [table.spans for table in tables]
        max_spans = max((len(candidates) for candidates in spans), default=1) or 1
        span_start = torch.zeros(batch_size, max_spans, dtype=torch.long)
        span_end = torch.zeros(batch_size, max_spans, dtype=torch.long)
        span_mask = torch.zeros(batch_size, max_spans, dtype=torch.bool)
        span_labels = torch.full((batch_size, max_spans), IGNORE_INDEX, dtype=torch.long) if gold is not None else None
        for row, table in enumerate(tables):
            count = len(table.spans)
            if not count:
                continue
            span_start[row, :count] = table.starts
            span_end[row, :count] = table.ends
            span_mask[row, :count] = True
            if span_labels is not None:
                classes = {(span.start, span.end): self.class_index[span.label] for span in gold[row].entities}
                span_labels[row, :count] = torch.tensor([classes.get(candidate, 0) for candidate in table.spans])
        return SpanBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            word_index=word_index,
            casing=casing,
            span_start=span_start,
            span_end=span_end,
            span_width=(span_end - span_start).clamp(min=0),
            span_mask=span_mask,
            span_labels=span_labels,
            spans=spans,
            represented_words=represented,
        )

    def _align_words(self, word_ids: list[int | None], num_words: int, truncated: bool, out: torch.Tensor) -> int:
        """Fill ``out`` with each word's first sub-token position; return how many words fit.

        A word the tokenizer turned into no sub-token (a lone control character, say) borrows its
        predecessor's position. Only a sequence cut at the sub-word limit loses words."""
        first: dict[int, int] = {}
        for position, word in enumerate(word_ids):
            if word is not None and word not in first:
                first[word] = position
        represented = (max(first) + 1 if first else 0) if truncated else num_words
        previous = 0
        for word in range(represented):
            previous = first.get(word, previous)
            out[word] = previous
        return min(represented, num_words)

    def subword_lengths(self, sentences: Sequence[Sequence[str]]) -> list[int]:
        """Sub-words (special tokens included, capped at the limit) each word list encodes to."""
        return self.tokenize(sentences).lengths if sentences else []

    def _span_table(self, num_words: int) -> "SpanTable":
        """The candidate spans of a ``num_words``-word sentence, built once per length."""
        table = self._tables.get(num_words)
        if table is None:
            spans = self._candidate_spans(num_words)
            starts = torch.tensor([start for start, _ in spans], dtype=torch.long)
            ends = torch.tensor([end - 1 for _, end in spans], dtype=torch.long)
            table = self._tables[num_words] = SpanTable(spans, starts, ends)
        return table

    def _candidate_spans(self, num_words: int) -> list[tuple[int, int]]:
        return [
            (start, end)
            for start in range(num_words)
            for end in range(start + 1, min(num_words, start + self.max_span_len) + 1)
        ]


@dataclass(frozen=True)
class SpanTable:
    """Candidate spans of one sentence length: ``(start, end_exclusive)`` pairs and, as tensors,
    their starts and inclusive ends. Shared between batches: never modify."""

    spans: list[tuple[int, int]]
    starts: torch.Tensor
    ends: torch.Tensor


@dataclass(frozen=True)
class Tokenized:
    """Word lists and their tokenizer output (padded on the right to the longest), tokenized once
    for a call whose batches take rows of it."""

    words: list[list[str]]
    encoding: "BatchEncoding"

    @property
    def lengths(self) -> list[int]:
        """Sub-words of each row (special tokens included, capped at the limit)."""
        return self.encoding["attention_mask"].sum(1).tolist()

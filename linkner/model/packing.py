"""Laying out a call's sentences for the encoder: length-planned padded batches, or packed rows.

Padded batches: a forward pass costs about ``overhead + padded tokens`` (on one CPU thread MiniLM-L6's
encoder pays ~4.5 ms per call, as much as ~25 sub-words, then ~0.17 ms per padded sub-word; the span
head and the per-batch Python add to the fixed part). Sorting by length and cutting where that total
is smallest (an exact dynamic programme over the sorted order) beats both one batch per request
(padding to the longest sentence) and one call per sentence (overhead).

Packed rows: sentences end to end in rows of a few hundred sub-words, each attending only to itself
(a block-diagonal attention mask, positions restarting at each sentence). No padding at all, and the
encoder's matrix products see every sub-word of the call at once: on one CPU thread a product of
~25 rows (one sentence) costs 1.6x a row what one of 100 or more does."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import torch

# Sub-words a predictor batch's fixed cost is worth on a CPU: throughput on CoNLL test (one thread,
# MiniLM-L6) is flat from 48 to 96 and best near 64. On a GPU a call costs far more than a sub-word
# does, so there the plan degenerates to "as large as allowed".
CPU_OVERHEAD_TOKENS = 64
GPU_OVERHEAD_TOKENS = 4096
# Packed rows have no padding: under a sub-word cap, the fewest batches are best.
PACKED_OVERHEAD_TOKENS = 1 << 20


def plan_batches(
    lengths: Sequence[int],
    max_batch: int,
    overhead_tokens: int = CPU_OVERHEAD_TOKENS,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Group item indices into batches of at most ``max_batch`` items (and, when given, at most
    ``max_tokens`` padded sub-words unless a single item is longer), minimising
    ``sum(overhead_tokens + size * longest)`` over batches of length-sorted items.

    Returns batches of indices into ``lengths``, shortest items first; every index appears once.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    count = len(order)
    best = [0.0] + [float("inf")] * count  # best[j]: cost of the first j sorted items
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sorted_lengths[end - 1]
        for start in range(end - 1, max(-1, end - 1 - max_batch), -1):
            size = end - start
            if max_tokens is not None and size > 1 and size * longest > max_tokens:
                break
            cost = best[start] + overhead_tokens + size * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches: list[list[int]] = []
    end = count
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


# Sub-words per packed encoder row (see ``SpanPredictor``'s ``pack_tokens``): long enough that the
# encoder's matrix products run at full speed, short enough that attention across a row's sentences,
# which the mask then throws away, stays cheap (it stays in float32 when the matrix products run in
# int8, so it weighs more there; docs/performance.md). A GPU takes longer rows.
CPU_PACK_TOKENS = 128
GPU_PACK_TOKENS = 512


def pack_layout(lengths: Sequence[int], row_tokens: int) -> tuple[list[int], int, int]:
    """Place sequences of ``lengths`` sub-words end to end in about ``total / row_tokens`` rows, each
    sequence (longest first) in the row filled least so far, so the rows come out about even. One
    row fewer is taken where it costs less (a sequence longer than the others would otherwise leave
    a row mostly padding), by :func:`_row_cost`.

    Returns each sequence's flat start (``row * width + offset``), the row count and the row width
    (the fullest row's sub-words)."""
    if not lengths:
        return [], 0, 0
    most = min(len(lengths), math.ceil(sum(lengths) / max(1, row_tokens)))
    layouts = [_fill_rows(lengths, rows) for rows in {max(1, most - 1), most}]
    placed, rows, width = min(layouts, key=lambda layout: _row_cost(layout[1], layout[2]))
    return [row * width + offset for row, offset in placed], rows, width


ATTENTION_WIDTH = 2048
"""A row width at which a BERT-style layer's attention costs about what its matrix products do (for
MiniLM-L6, ``2 * hidden + intermediate`` = 2,304 sub-words)."""


def _row_cost(rows: int, width: int) -> float:
    """What ``rows`` rows of ``width`` sub-words cost the encoder, in sub-words' worth of work."""
    return rows * width * (1 + width / ATTENTION_WIDTH)


def _fill_rows(lengths: Sequence[int], rows: int) -> tuple[list[tuple[int, int]], int, int]:
    """Longest first, each sequence in the least-filled of ``rows`` rows: each sequence's ``(row,
    offset)``, the row count and the fullest row's sub-words."""
    filled = [(0, row) for row in range(rows)]  # a heap of (sub-words so far, row)
    placed: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        used, row = heapq.heappop(filled)
        placed[index] = (row, used)
        heapq.heappush(filled, (used + lengths[index], row))
    return placed, rows, max(used for used, _ in filled)


@dataclass(frozen=True)
class PackedInputs:
    """A padded batch re-laid as packed encoder rows: sentences end to end, each attending only to
    itself (``attention_mask`` is block-diagonal, padding a block of its own) with positions counted
    from each sentence's start (from ``first_position``: 0 for BERT-style encoders).
    ``token_index[b, t]`` is where sub-word ``t`` of sentence ``b`` lands in the rows flattened to
    ``[rows * width]``."""

    input_ids: torch.Tensor  # [R, W]
    position_ids: torch.Tensor  # [R, W]
    attention_mask: torch.Tensor  # [R, 1, W, W] bool, True where a sub-word may attend
    token_index: torch.Tensor  # [B, T]


def pack_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, row_tokens: int,
                first_position: int = 0) -> PackedInputs:
    """Re-lay padded ``[B, T]`` encoder inputs as packed rows of about ``row_tokens`` sub-words, each
    sentence's position ids counted from ``first_position``."""
    count, longest = attention_mask.shape
    starts, rows, width = pack_layout(attention_mask.sum(1).tolist(), row_tokens)
    device = input_ids.device
    token_index = torch.tensor(starts, device=device).unsqueeze(1) + torch.arange(longest, device=device)
    real = attention_mask.bool()
    target = token_index[real]
    packed_ids = input_ids.new_zeros(rows * width)
    packed_ids[target] = input_ids[real]
    positions = torch.zeros(rows * width, dtype=torch.long, device=device)
    counted = torch.arange(first_position, first_position + longest, device=device)
    positions[target] = counted.expand(count, longest)[real]
    owner = torch.full((rows * width,), -1, dtype=torch.long, device=device)  # padding: a block of its own
    owner[target] = torch.arange(count, device=device).unsqueeze(1).expand(count, longest)[real]
    owner = owner.view(rows, 1, width)
    return PackedInputs(
        input_ids=packed_ids.view(rows, width),
        position_ids=positions.view(rows, width),
        attention_mask=(owner.unsqueeze(-1) == owner.unsqueeze(-2)),
        token_index=token_index.clamp(max=rows * width - 1),  # padded positions: any real index
    )

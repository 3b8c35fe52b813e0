"""Cutting length-sorted inputs into batches that waste little on padding.

A forward pass costs about ``overhead + padded tokens`` (on one CPU thread MiniLM-L6's encoder pays
~4.5 ms per call, as much as ~25 sub-words, then ~0.17 ms per padded sub-word; the span head and the
per-batch Python add to the fixed part). Sorting by length and
cutting where that total is smallest (an exact dynamic programme over the sorted order) beats both
one batch per request (padding to the longest sentence) and one call per sentence (overhead).
"""

from __future__ import annotations

from typing import Sequence

# Sub-words a predictor batch's fixed cost is worth on a CPU: throughput on CoNLL test (one thread,
# MiniLM-L6) is flat from 48 to 96 and best near 64. On a GPU a call costs far more than a sub-word
# does, so there the plan degenerates to "as large as allowed".
CPU_OVERHEAD_TOKENS = 64
GPU_OVERHEAD_TOKENS = 4096


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

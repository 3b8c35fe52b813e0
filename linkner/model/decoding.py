"""Decoding span scores into a flat set of entities."""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def greedy_non_overlapping(candidates: Sequence[T], boundaries: Sequence[tuple[int, int]], scores: Sequence[float]) -> list[T]:
    """Keep candidates most confident first, skipping any that overlaps one already kept.

    ``boundaries[i]`` is ``(start, end_exclusive)`` of ``candidates[i]``. The result is sorted by
    position. Ties in score go to the earlier, then shorter, span (deterministic).
    """
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], boundaries[i][0], boundaries[i][1]))
    taken: list[int] = []
    occupied: set[int] = set()
    for index in order:
        start, end = boundaries[index]
        if any(position in occupied for position in range(start, end)):
            continue
        occupied.update(range(start, end))
        taken.append(index)
    return [candidates[index] for index in sorted(taken, key=lambda i: boundaries[i])]

"""Decoding span scores into a flat set of entities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, TypeVar

if TYPE_CHECKING:
    from linkner.data.spans import Entity

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


def consistent_labels(sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence["Entity"]],
                      groups: Sequence[Sequence[int]]) -> list[list["Entity"]]:
    """Document-level label consistency: within each group of sentence indices (a document), every
    prediction of the same surface form takes the label with the highest summed probability over
    its mentions (from each entity's ``alternatives``). Relabelled entities are copies with the new
    label's probability and ``confidence``; the others are returned as they are."""
    from collections import Counter, defaultdict
    from dataclasses import replace

    result = [list(entities) for entities in predictions]
    for members in groups:
        mentions: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i in members:
            for j, entity in enumerate(predictions[i]):
                mentions[" ".join(sentences[i][entity.start:entity.end])].append((i, j))
        for refs in mentions.values():
            if len({predictions[i][j].label for i, j in refs}) < 2:
                continue
            votes: Counter = Counter()
            for i, j in refs:
                for label, probability in predictions[i][j].alternatives:
                    if label != "O":
                        votes[label] += probability
            winner = votes.most_common(1)[0][0]
            for i, j in refs:
                entity = predictions[i][j]
                if entity.label != winner:
                    probability = dict(entity.alternatives).get(winner, 0.0)
                    uncertainty = dict(entity.uncertainty)
                    if "confidence" in uncertainty:
                        uncertainty["confidence"] = 1.0 - probability
                    result[i][j] = replace(entity, label=winner, local_label=winner, probability=probability,
                                           uncertainty=uncertainty)
    return result

"""One ranking for every policy, sweep and calibration: predicted spans most uncertain first,
and a share of them is ``share_count(share, n)`` spans."""

from __future__ import annotations

import math
from typing import Sequence

from linkner.data.spans import Entity

EntityRef = tuple[int, int]  # (sentence index, entity index) of a predicted entity
Predictions = Sequence[Sequence[Entity]]


def share_count(share: float, total: int) -> int:
    """How many of ``total`` spans a ``share`` in [0, 1] routes (rounded up; float noise ignored)."""
    return math.ceil(share * total - 1e-9)


def rank_by_uncertainty(predictions: Predictions, estimator: str) -> list[EntityRef]:
    """Every predicted entity, most uncertain first (ties keep document order)."""
    flat = [((i, j), entity.uncertainty[estimator])
            for i, entities in enumerate(predictions) for j, entity in enumerate(entities)]
    flat.sort(key=lambda item: -item[1])
    return [ref for ref, _ in flat]

"""How good a herding order is: evaluation helpers for tests and benchmarks (not selection).

Both read the features in one chunked pass (an in-memory array or a chunked reader, see
:mod:`memstore.selection.readers`) and hold only the picked rows, O(len(picks)·d).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore._validation import as_int_array
from memstore.selection.readers import (
    DEFAULT_CHUNK_ROWS,
    FeatureReader,
    check_chunk_rows,
    check_reader,
    iter_blocks,
)

__all__ = ["herding_objective", "herding_errors"]


def _picked_rows(
    features: Any, picks: Any, chunk_rows: int, owner: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean of all rows, float64 rows[picks] in pick order)`` in one chunked pass."""
    reader = check_reader(features, owner)
    chunk_rows = check_chunk_rows(chunk_rows, owner)
    n, d = (int(s) for s in reader.shape)
    picks = as_int_array(picks, "picks", owner)
    if picks.size == 0:
        raise ValueError(f"The 'picks' parameter of {owner} must be non-empty. Got [] instead.")
    if picks.min() < 0 or picks.max() >= n:
        bad = picks[(picks < 0) | (picks >= n)][:5].tolist()
        raise ValueError(
            f"The 'picks' parameter of {owner} must hold row numbers in [0, {n}). "
            f"Got {bad} instead."
        )
    order = np.argsort(picks, kind="stable")
    sorted_picks = picks[order]
    total = np.zeros(d, dtype=np.float64)
    rows = np.empty((picks.size, d), dtype=np.float64)
    for start, block in iter_blocks(reader, chunk_rows, owner):
        total += block.sum(axis=0, dtype=np.float64)
        lo, hi = np.searchsorted(sorted_picks, [start, start + block.shape[0]])
        rows[order[lo:hi]] = block[sorted_picks[lo:hi] - start]
    return total / n, rows


def herding_objective(
    features: np.ndarray | FeatureReader,
    picks: Any,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """``‖mean(features[picks]) − mean(features)‖`` in float64, what herding drives down.

    One chunked pass; memory O(len(picks)·d).
    """
    center, rows = _picked_rows(features, picks, chunk_rows, "herding_objective")
    return float(np.linalg.norm(rows.mean(axis=0) - center))


def herding_errors(
    features: np.ndarray | FeatureReader,
    picks: Any,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """``‖mean(features[picks[:j]]) − mean(features)‖`` for ``j = 1..len(picks)`` (float64).

    Herding's error oscillates from one pick to the next (±15% between neighbouring ``j``
    on Gaussian mixtures), so two equally good orders compare better by the mean of this
    curve over a window (e.g. the last half) than by its value at one ``k``. One chunked
    pass; memory O(len(picks)·d).
    """
    center, rows = _picked_rows(features, picks, chunk_rows, "herding_errors")
    means = np.cumsum(rows, axis=0) / np.arange(1, rows.shape[0] + 1)[:, None]
    return np.linalg.norm(means - center, axis=1)

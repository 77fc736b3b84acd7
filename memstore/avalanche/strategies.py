"""Avalanche's selection-strategy names, as memstore's strategies.

Constructors take Avalanche's arguments (``model, layer_name`` for the feature-based ones).
During an update the drop-in sets ``device`` and ``batch_size`` from the training strategy
(``strategy.device``, ``strategy.eval_mb_size``), as Avalanche's feature extraction does.
Random selection draws from the buffer's generator (Avalanche shuffles with Python's
``random``), so its picks are reproducible but not Avalanche's.
"""

from __future__ import annotations

from memstore.selection import (
    ClosestToCenterSelectionStrategy,
    ExemplarsSelectionStrategy,
    FeatureBasedExemplarsSelectionStrategy,
    HerdingSelectionStrategy,
    RandomExemplarsSelectionStrategy,
)

__all__ = [
    "ExemplarsSelectionStrategy",
    "RandomExemplarsSelectionStrategy",
    "FeatureBasedExemplarsSelectionStrategy",
    "HerdingSelectionStrategy",
    "ClosestToCenterSelectionStrategy",
]

"""Selection strategies: the order in which a group's rows are kept (random, herding,
closest-to-center), exact by default, FAISS IVF for millions of rows."""

from .strategies import (
    ClosestToCenterSelectionStrategy,
    ExemplarsSelectionStrategy,
    FeatureBasedExemplarsSelectionStrategy,
    HerdingSelectionStrategy,
    RandomExemplarsSelectionStrategy,
)

__all__ = [
    "ClosestToCenterSelectionStrategy",
    "ExemplarsSelectionStrategy",
    "FeatureBasedExemplarsSelectionStrategy",
    "HerdingSelectionStrategy",
    "RandomExemplarsSelectionStrategy",
]

"""Selection strategies: the order in which a group's rows are kept (random, herding,
closest-to-center), exact by default, FAISS IVF for millions of rows.

Modules, each depending only on those after it: ``strategies`` (the public Avalanche
strategies and how a state records them) → ``herding`` (exact herding, in RAM or chunked,
one near-tie margin), ``closest`` (closest-to-center), ``faiss_ivf`` (approximate herding)
and ``ivf_cache`` (its persisted index) → ``center`` (torch's float32 mean bit for bit in
one pass; its numba kernels in ``_center_kernels``) and ``kernels`` (which first pass herding
uses: a probe) → ``scores`` (float32 / torch int8 / AVX-512 VNNI first passes; the VNNI pass
and the fused pick loop are numba code in ``_int8_kernels``) → ``rounding`` (the reference's
float32 arithmetic and the rounding bounds, plain functions that numba compiles too) and
``readers`` (the chunked ``FeatureReader`` protocol and block iteration).
"""

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

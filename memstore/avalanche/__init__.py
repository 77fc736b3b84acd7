"""Drop-in replacements for ``avalanche.training.storage_policy`` (avalanche-lib 0.6.0).

Switch a run with one import line::

    from memstore.avalanche import ClassBalancedBuffer   # was: from avalanche.training...

    policy = ClassBalancedBuffer(max_size=200, seed=0, store="runs/mem", name="digits")
    strategy = Naive(model, opt, plugins=[ReplayPlugin(mem_size=200, storage_policy=policy)])

Needs ``pip install memstore[avalanche]``; ``import memstore`` never imports this package.
Sample ids are the rows' indices in their root dataset (:mod:`.chain`); the draws come
from the policy's own seeded generator, not torch's global one (:mod:`.policies`).
"""

from __future__ import annotations

try:
    import avalanche.training  # noqa: F401  (fail early, with the fix)
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "memstore.avalanche needs avalanche-lib 0.6.0. Install it with "
        "`pip install memstore[avalanche]`."
    ) from err

from .policies import (
    BalancedExemplarsBuffer,
    ClassBalancedBuffer,
    ExemplarsBuffer,
    ExperienceBalancedBuffer,
    MultipleRootsError,
    ParametricBuffer,
    ReservoirSamplingBuffer,
)
from .strategies import (
    ClosestToCenterSelectionStrategy,
    ExemplarsSelectionStrategy,
    FeatureBasedExemplarsSelectionStrategy,
    HerdingSelectionStrategy,
    RandomExemplarsSelectionStrategy,
)

__all__ = [
    "BalancedExemplarsBuffer",
    "ClassBalancedBuffer",
    "ClosestToCenterSelectionStrategy",
    "ExemplarsBuffer",
    "ExemplarsSelectionStrategy",
    "ExperienceBalancedBuffer",
    "FeatureBasedExemplarsSelectionStrategy",
    "HerdingSelectionStrategy",
    "MultipleRootsError",
    "ParametricBuffer",
    "RandomExemplarsSelectionStrategy",
    "ReservoirSamplingBuffer",
]

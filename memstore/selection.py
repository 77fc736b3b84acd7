"""Exemplar selection strategies (Avalanche names) and the exact selection algorithms.

Herding and closest-to-center reproduce Avalanche 0.6.0's picks bit for bit on float32
features (see AVALANCHE_SEMANTICS.md) at a fraction of its cost:

* herding keeps ``‖x‖²`` and does one matrix-vector product per pick (O(k·N·d), never an
  ``N×d`` temporary), then re-evaluates only the candidates within float32 rounding distance of
  the best with the reference's own float32 expression, so near-ties resolve as Avalanche does;
* closest-to-center computes the reference distances once and keeps the ``k`` smallest by
  partial selection, ties broken by lower index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from ._validation import check_bool, check_features, check_int

__all__ = [
    "ExemplarsSelectionStrategy",
    "RandomExemplarsSelectionStrategy",
    "FeatureBasedExemplarsSelectionStrategy",
    "HerdingSelectionStrategy",
    "ClosestToCenterSelectionStrategy",
    "herding_order",
    "closest_to_center_order",
    "smallest_k_stable",
    "DetachedSelectionStrategy",
    "strategy_record",
    "strategy_from_record",
]

_EPS32 = float(np.finfo(np.float32).eps)


class ExemplarsSelectionStrategy(ABC):
    """Orders the rows of a group; a buffer keeps the first ``k``."""

    #: whether ``select`` needs the rows' features (then the buffer computes them once).
    needs_features: bool = False

    @abstractmethod
    def select(
        self, n: int, *, features: np.ndarray | None, generator: torch.Generator, k: int
    ) -> np.ndarray:
        """The first ``k`` row positions (int64) of the strategy's order over ``n`` rows."""

    def params(self) -> dict[str, Any]:
        """JSON-able constructor parameters, recorded by the store (models never are)."""
        return {}


class RandomExemplarsSelectionStrategy(ExemplarsSelectionStrategy):
    """A uniformly random order, drawn from the buffer's generator (``torch.randperm``)."""

    def select(self, n, *, features=None, generator, k):
        return torch.randperm(n, generator=generator).numpy().astype(np.int64)[:k]


class FeatureBasedExemplarsSelectionStrategy(ExemplarsSelectionStrategy):
    """Base of strategies that order rows by the features of ``model`` at ``layer_name``.

    Args:
        model: a ``torch.nn.Module``; never stored, re-attach it after loading a buffer.
        layer_name: name of the submodule (``model.named_modules()``) whose output is used.
        batch_size: rows per forward pass during extraction.
        device: where extraction runs.
        input_key: for dataset items that are dicts, the key of the model input.
        approximate: use an approximate FAISS index (large groups); exact by default.
    """

    needs_features = True

    def __init__(
        self,
        model: torch.nn.Module,
        layer_name: str,
        *,
        batch_size: int = 256,
        device: str = "cpu",
        input_key: str | None = None,
        approximate: bool = False,
        nlist: int | None = None,
        nprobe: int | None = None,
        feature_cache: Any = None,
        progress: bool = False,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"The 'model' parameter of {owner} must be a torch.nn.Module. "
                f"Got {type(model).__name__} instead."
            )
        if not isinstance(layer_name, str):
            raise TypeError(
                f"The 'layer_name' parameter of {owner} must be a str. Got {layer_name!r} instead."
            )
        from .features import find_layer

        find_layer(model, layer_name)  # unknown name -> error listing the valid ones
        self.model = model
        self.layer_name = layer_name
        self.batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        self.device = str(device)
        self.input_key = input_key
        self.approximate = check_bool(approximate, "approximate", owner)
        self.nlist = check_int(nlist, "nlist", owner, minimum=1, allow_none=True)
        self.nprobe = check_int(nprobe, "nprobe", owner, minimum=1, allow_none=True)
        if feature_cache is not None and not hasattr(feature_cache, "open_feature_cache"):
            raise TypeError(
                f"The 'feature_cache' parameter of {owner} must be a memstore Store. "
                f"Got {type(feature_cache).__name__} instead."
            )
        self.feature_cache = feature_cache
        self.progress = check_bool(progress, "progress", owner)

    def params(self) -> dict[str, Any]:
        return {
            "layer_name": self.layer_name,
            "batch_size": self.batch_size,
            "device": self.device,
            "input_key": self.input_key,
            "approximate": self.approximate,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
        }

    def compute_features(self, dataset: Any, keys: np.ndarray) -> np.ndarray:
        """Features of ``dataset[keys]``, through the store's cache when one was given."""
        from .features import cached_features, extract_features

        options = dict(batch_size=self.batch_size, device=self.device,
                       input_key=self.input_key, progress=self.progress)
        if self.feature_cache is not None:
            return cached_features(
                self.model, self.layer_name, dataset, keys, self.feature_cache, **options
            )
        return extract_features(self.model, self.layer_name, dataset, keys, **options)

    def select(self, n, *, features, generator=None, k):
        if features is None or features.shape[0] != n:
            raise ValueError(f"{type(self).__name__} needs one feature row per candidate ({n}).")
        return self.make_sorted_indices_from_features(features, k=k)

    @abstractmethod
    def make_sorted_indices_from_features(self, features: Any, k: int | None = None) -> np.ndarray:
        """The order of the rows of ``features`` [N, d] (its first ``k`` entries if given)."""


class HerdingSelectionStrategy(FeatureBasedExemplarsSelectionStrategy):
    """Herding (Welling 2009; iCaRL): greedily keep the running mean close to the group mean.

    Exact mode reproduces Avalanche's order in O(k·N·d); ``approximate=True`` uses an IVF
    index for groups of millions of rows.
    """

    def make_sorted_indices_from_features(self, features, k=None):
        feats = check_features(features, type(self).__name__, k=k)
        k = feats.shape[0] if k is None else int(k)
        if self.approximate:
            from .approximate import approximate_herding_order

            return approximate_herding_order(feats, k, nlist=self.nlist, nprobe=self.nprobe)
        return herding_order(feats, k)


class ClosestToCenterSelectionStrategy(FeatureBasedExemplarsSelectionStrategy):
    """Rows ordered by squared distance to the group mean, ascending (ties: lower index)."""

    def make_sorted_indices_from_features(self, features, k=None):
        feats = check_features(features, type(self).__name__, k=k)
        k = feats.shape[0] if k is None else int(k)
        if self.approximate:
            from .approximate import approximate_closest_order

            return approximate_closest_order(feats, k, nlist=self.nlist, nprobe=self.nprobe)
        return closest_to_center_order(feats, k)


def smallest_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest values in ascending order, ties by lower position."""
    n = values.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        kth = np.partition(values, k - 1)[k - 1]
        cand = np.flatnonzero(values <= kth)
    else:
        cand = np.arange(n)
    return cand[np.argsort(values[cand], kind="stable")][:k].astype(np.int64)


def closest_to_center_order(features: np.ndarray, k: int) -> np.ndarray:
    """Reference distances (float32, as Avalanche computes them), then a stable top-k."""
    x = torch.from_numpy(features)
    center = x.mean(dim=0)
    distances = torch.pow(x - center, 2).sum(dim=1).numpy()
    return smallest_k_stable(distances, k)


def herding_order(features: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` herding picks, identical to Avalanche's float32 loop.

    Picks minimise ``‖x_j‖² − 2⟨x_j, t⟩`` with ``t = (i+1)·center − i·current`` (one sgemv per
    pick). Every row whose score lies within a bound on float32 rounding (of this score and of
    the reference's distance) of the best is re-scored with the reference's expression
    ``((current·i/(i+1) + x/(i+1)) − center)²`` summed in float32, and the reference's argmin
    among them is taken; the running mean is updated exactly as the reference does.
    """
    n, d = features.shape
    k = min(int(k), n)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    x32 = features
    xt = torch.from_numpy(x32)
    center_t = xt.mean(dim=0)
    center = center_t.double().numpy()
    sq = np.einsum("ij,ij->i", x32, x32, dtype=np.float64)
    xmax = float(np.sqrt(sq.max()))
    cnorm = float(np.linalg.norm(center))
    current_t = center_t * 0
    current = np.zeros(d)
    gamma = (d + 4) * _EPS32
    taken = np.zeros(n, dtype=bool)
    for i in range(k):
        t = (i + 1) * center - i * current
        tnorm = float(np.linalg.norm(t))
        score = sq - 2.0 * (x32 @ t.astype(np.float32)).astype(np.float64)
        score[taken] = np.inf
        best = float(score.min())
        # Reference distance of the best (exact-math value), and bounds on both roundings.
        ref = max(best + tnorm * tnorm, 0.0) / (i + 1) ** 2
        elem = 3 * _EPS32 * (float(np.linalg.norm(current)) + xmax / (i + 1) + cnorm)
        ref_err = 2 * np.sqrt(ref) * elem + elem * elem + gamma * ref
        score_err = 2 * gamma * xmax * (xmax + tnorm)
        margin = 4 * (score_err + (i + 1) ** 2 * ref_err) + 1e-30
        cand = np.flatnonzero(score <= best + margin)
        cand_t = torch.from_numpy(cand)
        candidate_centers = current_t * i / (i + 1) + xt[cand_t] / (i + 1)
        distances = pow(candidate_centers - center_t, 2).sum(dim=1)
        j = int(torch.argmin(distances))
        picks[i] = cand[j]
        taken[cand[j]] = True
        current_t = candidate_centers[j]
        current = current_t.double().numpy()
    return picks


class DetachedSelectionStrategy(ExemplarsSelectionStrategy):
    """Stands in for a feature-based strategy loaded without its model.

    The buffer loads and can be inspected and replayed; updating or resizing it raises an
    error telling how to re-attach the model.
    """

    needs_features = True

    def __init__(self, class_name: str, params: dict[str, Any]) -> None:
        self.class_name = class_name
        self._params = dict(params)

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        from .errors import DetachedStrategyError

        layer = self._params.get("layer_name", "<layer>")
        raise DetachedStrategyError(
            f"This ParametricBuffer was saved with {self.class_name}, whose model is never "
            "stored, so it cannot select exemplars. Re-attach one: store.load(name, "
            f"selection_strategy={self.class_name}(model, {layer!r}))."
        )

    select = compute_features = _refuse


_STRATEGIES = {
    cls.__name__: cls
    for cls in (
        RandomExemplarsSelectionStrategy,
        HerdingSelectionStrategy,
        ClosestToCenterSelectionStrategy,
    )
}


def strategy_record(strategy: ExemplarsSelectionStrategy) -> dict[str, Any]:
    """How a strategy is recorded in a state: its class name and parameters (no model)."""
    name = strategy.class_name if isinstance(strategy, DetachedSelectionStrategy) else type(
        strategy
    ).__name__
    return {"class": name, "params": strategy.params()}


def strategy_from_record(record: Any) -> ExemplarsSelectionStrategy:
    """Rebuild a strategy from :func:`strategy_record`; feature-based ones come back detached."""
    if not isinstance(record, dict) or "class" not in record:
        raise ValueError(f"Corrupted selection strategy record: {record!r}.")
    cls = _STRATEGIES.get(record["class"])
    if cls is RandomExemplarsSelectionStrategy:
        return cls()
    return DetachedSelectionStrategy(str(record["class"]), record.get("params") or {})

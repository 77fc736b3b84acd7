"""Exemplar selection strategies with Avalanche's names, and how a state records them.

A strategy orders the rows of a group; a buffer keeps the first ``k``. Random order draws
from the buffer's generator; herding (:mod:`.herding`) and closest-to-center
(:mod:`.closest`) reproduce Avalanche 0.6.0's picks bit for bit (docs/SEMANTICS.md) on
in-memory float32 features; chunked readers (:mod:`.readers`, e.g. a zarr array of the
feature cache) go through the bounded-memory exact paths, and ``approximate=True`` through a
FAISS IVF index (:mod:`.faiss_ivf`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from memstore._validation import check_bool, check_features, check_int
from memstore.errors import DetachedStrategyError
from memstore.features.cache import FeatureCacheStore
from memstore.features.extract import cached_features, extract_features, find_layer

from .closest import chunked_closest_order, closest_to_center_order
from .faiss_ivf import approximate_herding_order
from .herding import exact_herding_chunked, herding_order
from .readers import check_k, check_reader, is_reader

__all__ = [
    "ExemplarsSelectionStrategy",
    "RandomExemplarsSelectionStrategy",
    "FeatureBasedExemplarsSelectionStrategy",
    "HerdingSelectionStrategy",
    "ClosestToCenterSelectionStrategy",
    "DetachedSelectionStrategy",
    "strategy_record",
    "strategy_from_record",
]


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
        feature_cache: FeatureCacheStore | None = None,
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
        find_layer(model, layer_name)  # unknown name -> error listing the valid ones
        self.model = model
        self.layer_name = layer_name
        self.batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        self.device = str(device)
        self.input_key = input_key
        self.approximate = check_bool(approximate, "approximate", owner)
        self.nlist = check_int(nlist, "nlist", owner, minimum=1, allow_none=True)
        self.nprobe = check_int(nprobe, "nprobe", owner, minimum=1, allow_none=True)
        if feature_cache is not None and not isinstance(feature_cache, FeatureCacheStore):
            raise TypeError(
                f"The 'feature_cache' parameter of {owner} must be a memstore Store "
                "(a FeatureCacheStore: open_feature_cache and feature_cache). "
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
        options = dict(
            batch_size=self.batch_size,
            device=self.device,
            input_key=self.input_key,
            progress=self.progress,
        )
        if self.feature_cache is not None:
            return cached_features(
                self.model, self.layer_name, dataset, keys, self.feature_cache, **options
            )
        return extract_features(self.model, self.layer_name, dataset, keys, **options)

    def select(self, n, *, features, generator=None, k):
        if features is None or features.shape[0] != n:
            raise ValueError(f"{type(self).__name__} needs one feature row per candidate ({n}).")
        return self.make_sorted_indices_from_features(features, k=k)

    def make_sorted_indices_from_features(self, features: Any, k: int | None = None) -> np.ndarray:
        """The order of the rows of ``features`` [N, d] (its first ``k`` entries if given).

        ``features`` may also be a chunked reader (a
        :class:`~memstore.selection.readers.FeatureReader`, e.g. a zarr array of the feature
        cache): it is read chunk by chunk, never loaded whole — by the bounded-memory exact
        path, or the approximate one.
        """
        owner = type(self).__name__
        if is_reader(features):
            reader = check_reader(features, owner)
            n = int(reader.shape[0])
            k = n if k is None else check_k(k, n, owner)
            if self.approximate:
                return self._approximate_order(reader, k)
            return self._chunked_order(reader, k)
        feats = check_features(features, owner, k=k)
        k = feats.shape[0] if k is None else int(k)
        if self.approximate:
            return self._approximate_order(feats, k)
        return self._exact_order(feats, k)

    @abstractmethod
    def _exact_order(self, features: np.ndarray, k: int) -> np.ndarray:
        """The exact order of in-memory float32 features (the reference's, bit for bit)."""

    @abstractmethod
    def _chunked_order(self, features: Any, k: int) -> np.ndarray:
        """The exact order of a chunked reader, in bounded memory."""

    @abstractmethod
    def _approximate_order(self, features: Any, k: int) -> np.ndarray:
        """The order in approximate mode (array or chunked reader)."""


class HerdingSelectionStrategy(FeatureBasedExemplarsSelectionStrategy):
    """Herding (Welling 2009; iCaRL): greedily keep the running mean close to the group mean.

    Exact mode reproduces Avalanche's order in O(k·N·d) (:func:`.herding.herding_order`);
    a chunked reader is herded block by block in bounded memory
    (:func:`.herding.exact_herding_chunked`, same picks unless the float64-summed mean
    rounds differently from torch's and flips a near-tie); ``approximate=True`` searches an
    IVF index (FAISS) for groups of hundreds of thousands to millions of rows.
    """

    def _exact_order(self, features, k):
        return herding_order(features, k)

    def _chunked_order(self, features, k):
        return exact_herding_chunked(features, k)

    def _approximate_order(self, features, k):
        return approximate_herding_order(features, k, nlist=self.nlist, nprobe=self.nprobe)


class ClosestToCenterSelectionStrategy(FeatureBasedExemplarsSelectionStrategy):
    """Rows ordered by squared distance to the group mean, ascending (ties: lower index).

    In memory, the reference's float32 distances and a stable top-k
    (:func:`.closest.closest_to_center_order`). A chunked reader, and any input with
    ``approximate=True``, is read in two passes (mean, then distances;
    :func:`.closest.chunked_closest_order`); the result is exact — an index would cost more
    than the one pass the answer needs.
    """

    def _exact_order(self, features, k):
        return closest_to_center_order(features, k)

    def _chunked_order(self, features, k):
        return chunked_closest_order(features, k)

    def _approximate_order(self, features, k):
        return chunked_closest_order(features, k)


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
    name = (
        strategy.class_name
        if isinstance(strategy, DetachedSelectionStrategy)
        else type(strategy).__name__
    )
    return {"class": name, "params": strategy.params()}


def strategy_from_record(record: Any) -> ExemplarsSelectionStrategy:
    """Rebuild a strategy from :func:`strategy_record`; feature-based ones come back detached."""
    if not isinstance(record, dict) or "class" not in record:
        raise ValueError(f"Corrupted selection strategy record: {record!r}.")
    cls = _STRATEGIES.get(record["class"])
    if cls is RandomExemplarsSelectionStrategy:
        return cls()
    return DetachedSelectionStrategy(str(record["class"]), record.get("params") or {})

"""Reservoir sampling: a uniform random memory (Avalanche's ``ReservoirSamplingBuffer``).

Two ways to draw a row's weight (``draws=``): ``"torch"`` (default) takes the next
``torch.rand`` values of the buffer's generator, in row order — Avalanche's exact sequence;
``"hash"`` derives it from the row itself, :func:`hash_draws` of (seed, source, id,
experience), so the memory is the top-``max_size`` of the rows seen (a bottom-k sample): it
depends neither on the order of rows within an update nor on how rows are split among
processes, and per-process top-k candidates merge into the global one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from memstore._validation import check_choice
from memstore.experiences import ExemplarSet

from .base import ExemplarsBuffer

__all__ = [
    "DRAWS",
    "ReservoirSamplingBuffer",
    "hash_draws",
    "hash_order",
    "splitmix64",
    "with_draws",
]

#: the values of the ``draws`` parameter of the reservoir family.
DRAWS = ("torch", "hash")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic): a fixed,
    well-mixed 64-bit hash of each value (also what assigns ids to ranks across processes)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _name_hash(name: str) -> int:
    """A stable 64-bit hash of a source name (blake2b; Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def hash_draws(
    seed: int, source: np.ndarray, ids: np.ndarray, experience: np.ndarray
) -> np.ndarray:
    """A weight in [0, 1) per row, a deterministic function of (seed, source, id, experience).

    Chained splitmix64 mixes of the int64 columns (each distinct source name hashed once with
    blake2b); the top 24 bits become the float32 weight, so saved weights are exact.
    Cost O(N) vectorised, plus one hash per distinct source name.
    """
    names, codes = np.unique(np.asarray(source), return_inverse=True)
    name_keys = np.array([_name_hash(str(n)) for n in names], dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = splitmix64(np.full(len(ids), seed, dtype=np.uint64))
        key = splitmix64(key ^ name_keys[codes.reshape(-1)])
        key = splitmix64(key ^ np.asarray(experience, dtype=np.int64).astype(np.uint64))
        key = splitmix64(key ^ np.asarray(ids, dtype=np.int64).astype(np.uint64))
    return (key >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def with_draws(params: dict[str, Any], draws: str) -> dict[str, Any]:
    """``params`` with ``draws`` recorded when it is not the default ``"torch"``.

    Omitted for ``"torch"`` so that states (and stores) written before ``draws`` existed stay
    byte-identical; a missing ``draws`` reads as ``"torch"``.
    """
    return params if draws == "torch" else {**params, "draws": draws}


def hash_order(rows: ExemplarSet, weights: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` by descending weight, ties by ascending (source, id, experience).

    The total order of ``draws="hash"``: any subset of rows keeps its relative order, so a
    top-k over each part of a split, merged, gives the top-k of the whole.
    """
    return np.lexsort((rows.experience, rows.ids, rows.source, -weights))


class ReservoirSamplingBuffer(ExemplarsBuffer, policy=True):
    """Uniform random memory: each sample gets a random weight; the top ``max_size`` stay.

    With ``draws="torch"`` (default), per update one ``torch.rand(len(experience))`` draw; new
    rows are placed before old ones and the weights sorted descending (stable). With
    ``draws="hash"``, weights are :func:`hash_draws` and rows ordered by :func:`hash_order`
    (the generator is not used). Cost O((N + max_size) log(N + max_size)).
    """

    def __init__(self, max_size: int, seed: int = 0, draws: str = "torch") -> None:
        super().__init__(max_size, seed)
        self.draws = check_choice(draws, "draws", type(self).__name__, DRAWS)
        self._exemplars = ExemplarSet.empty()
        self._weights = np.empty(0, dtype=np.float32)

    @classmethod
    def make_group(
        cls, max_size: int, generator: torch.Generator, draws: str = "torch", seed: int = 0
    ) -> ReservoirSamplingBuffer:
        """A group of a balanced buffer: shares its parent's generator, draws and seed."""
        group = cls.sharing_generator(max_size, generator)
        group.draws, group.seed = draws, seed
        group._exemplars = ExemplarSet.empty()
        group._weights = np.empty(0, dtype=np.float32)
        return group

    def params(self) -> dict[str, Any]:
        return with_draws(super().params(), self.draws)

    def _set_params(self, params: dict[str, Any]) -> None:
        super()._set_params(params)
        self.draws = params.get("draws", "torch")

    @property
    def buffer(self) -> ExemplarSet:
        return self._exemplars

    def add(self, rows: ExemplarSet) -> None:
        """The reservoir step (old ``max_size``), without the update bookkeeping."""
        if self.draws == "hash":
            both = ExemplarSet.concat([rows, self._exemplars])
            new = hash_draws(self.seed, rows.source, rows.ids, rows.experience)
            weights = np.concatenate([new, self._weights])
            keep = hash_order(both, weights)[: self._max_size]
            self._exemplars, self._weights = both.take(keep), weights[keep]
            return
        new_weights = torch.rand(len(rows), generator=self._generator)
        weights = torch.cat([new_weights, torch.from_numpy(self._weights)])
        ordered = torch.sort(weights, descending=True, stable=True)
        keep = ordered.indices[: self._max_size].numpy()
        self._exemplars = ExemplarSet.concat([rows, self._exemplars]).take(keep)
        self._weights = ordered.values[: self._max_size].numpy().copy()

    def row_weights(self) -> np.ndarray:
        """The random weight of each exemplar (descending), saved as the ``'weight'`` column."""
        return self._weights

    def restore_rows(self, rows: ExemplarSet, weights: np.ndarray) -> None:
        """Set the rows and their weights as a state recorded them (weights are copied)."""
        self._exemplars, self._weights = rows, weights.copy()

    def shrink_to(self, new_size: int) -> None:
        self._max_size = int(new_size)
        self._exemplars = self._exemplars.take(np.arange(min(new_size, len(self._exemplars))))
        self._weights = self._weights[:new_size].copy()

    def _update(self, experience, rows, index, sources):
        self.add(rows)

    def _resize(self, new_size, sources):
        self.shrink_to(new_size)

    def _group_items(self):
        return [(0, self)]

    def _restore_groups(self, groups):
        if len(groups) != 1:
            raise ValueError("a ReservoirSamplingBuffer state has exactly one group")
        _, _, rows, weights = groups[0]
        if weights is None:
            raise ValueError("a ReservoirSamplingBuffer state needs the 'weight' column")
        self.restore_rows(rows, weights)

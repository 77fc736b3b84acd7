"""Reservoir sampling: a uniform random memory (Avalanche's ``ReservoirSamplingBuffer``)."""

from __future__ import annotations

import numpy as np
import torch

from memstore.experiences import ExemplarSet

from .base import ExemplarsBuffer

__all__ = ["ReservoirSamplingBuffer"]


class ReservoirSamplingBuffer(ExemplarsBuffer, policy=True):
    """Uniform random memory: each sample gets a random weight; the top ``max_size`` stay.

    Per update, one ``torch.rand(len(experience))`` draw; new rows are placed before old ones
    and the weights sorted descending (stable). Cost O((N + max_size) log(N + max_size)).
    """

    def __init__(self, max_size: int, seed: int = 0) -> None:
        super().__init__(max_size, seed)
        self._exemplars = ExemplarSet.empty()
        self._weights = np.empty(0, dtype=np.float32)

    @classmethod
    def make_group(cls, max_size: int, generator: torch.Generator) -> ReservoirSamplingBuffer:
        """A group of a balanced buffer: shares its parent's generator; may be empty."""
        group = cls.sharing_generator(max_size, generator)
        group._exemplars = ExemplarSet.empty()
        group._weights = np.empty(0, dtype=np.float32)
        return group

    @property
    def buffer(self) -> ExemplarSet:
        return self._exemplars

    def add(self, rows: ExemplarSet) -> None:
        """The reservoir step (old ``max_size``), without the update bookkeeping."""
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

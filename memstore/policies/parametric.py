"""Parametric buffer: groups whose content a selection strategy chooses (Avalanche's
``ParametricBuffer``), and the groups it holds."""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore._validation import check_choice
from memstore.experiences import ExemplarSet, Experience, resolve_inputs
from memstore.selection.strategies import (
    ExemplarsSelectionStrategy,
    RandomExemplarsSelectionStrategy,
    strategy_from_record,
)

from .balanced import BalancedExemplarsBuffer
from .base import ExemplarsBuffer, first_appearance_groups

__all__ = ["ParametricBuffer"]


class _SelectedGroup(ExemplarsBuffer):
    """A group of a :class:`ParametricBuffer`: its rows, kept in the strategy's order."""

    def __init__(self, max_size: int, rows: ExemplarSet | None = None) -> None:
        self._max_size = int(max_size)
        self.seed = 0
        self._num_updates = 0
        self._exemplars = ExemplarSet.empty() if rows is None else rows
        self.features: np.ndarray | None = None  # only during an update / resize

    @property
    def buffer(self) -> ExemplarSet:
        return self._exemplars

    def append(self, rows: ExemplarSet, features: np.ndarray | None) -> None:
        """Add candidate rows (and their features, when the strategy uses them) at the end."""
        self._exemplars = ExemplarSet.concat([self._exemplars, rows])
        if features is None or not len(features):
            return  # no new rows: the group's features stay (an empty (0, 0) array has no d)
        if self.features is None or not len(self.features):
            self.features = features
        else:
            self.features = np.concatenate([self.features, features])

    def keep(self, order: np.ndarray, size: int) -> None:
        """Keep the rows at ``order`` (and their features), now with room for ``size``."""
        self._exemplars = self._exemplars.take(order)
        if self.features is not None:
            self.features = self.features[order]
        self._max_size = size

    def _update(self, *args):  # groups are driven by their ParametricBuffer
        raise NotImplementedError

    _resize = _group_items = _restore_groups = _update


class ParametricBuffer(BalancedExemplarsBuffer, policy=True):
    """Groups (``groupby``) whose content a selection strategy chooses.

    Args:
        max_size: total exemplars, split adaptively between groups.
        groupby: ``None`` (one group), ``'class'``, ``'task'`` or ``'experience'``.
        selection_strategy: defaults to :class:`RandomExemplarsSelectionStrategy`; one
            instance serves all groups. Feature-based strategies get each sample's features
            computed once per update.
        seed: seeds the generator used by random selection.
    """

    GROUPBY = (None, "class", "task", "experience")
    takes_selection_strategy = True

    def __init__(
        self,
        max_size: int,
        groupby: str | None = None,
        selection_strategy: ExemplarsSelectionStrategy | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(max_size, True, None, seed)
        self.groupby = check_choice(groupby, "groupby", "ParametricBuffer", self.GROUPBY)
        if selection_strategy is None:
            selection_strategy = RandomExemplarsSelectionStrategy()
        if not isinstance(selection_strategy, ExemplarsSelectionStrategy):
            raise TypeError(
                "The 'selection_strategy' parameter of ParametricBuffer must be an "
                f"ExemplarsSelectionStrategy. Got {type(selection_strategy).__name__} instead."
            )
        self.selection_strategy = selection_strategy

    def params(self) -> dict[str, Any]:
        return {"max_size": self._max_size, "groupby": self.groupby, "seed": self.seed}

    def _set_params(self, params: dict[str, Any]) -> None:
        self.seed = int(params.get("seed", self.seed))
        self.groupby = params.get("groupby", self.groupby)

    @classmethod
    def _from_params(cls, params, selection_strategy, record):
        strategy = selection_strategy or strategy_from_record(record)
        return cls(params["max_size"], params.get("groupby"), strategy, params.get("seed", 0))

    def _with_params(self, params: dict[str, Any]) -> ParametricBuffer:
        return ParametricBuffer(selection_strategy=self.selection_strategy, **params)

    def _group_keys(self, rows: ExemplarSet, index: int) -> np.ndarray:
        if self.groupby is None:
            return np.zeros(len(rows), dtype=np.int64)
        if self.groupby == "class":
            return rows.targets
        if self.groupby == "task":
            return rows.task_labels
        return np.full(len(rows), index, dtype=np.int64)

    def _select(self, group: _SelectedGroup, size: int) -> None:
        """Re-run the strategy on the group's rows and keep the first ``size``."""
        n = len(group.buffer)
        order = self.selection_strategy.select(
            n, features=group.features, generator=self._generator, k=min(size, n)
        )
        group.keep(order, size)

    def _features(
        self, rows: ExemplarSet, experience: Experience | None, sources: Any
    ) -> np.ndarray | None:
        if not self.selection_strategy.needs_features:
            return None
        if len(rows) == 0:
            return np.empty((0, 0), dtype=np.float32)
        owner = f"ParametricBuffer({type(self.selection_strategy).__name__})"
        parts = resolve_inputs(rows, experience, sources, owner)
        out = None
        for dataset, keys, positions in parts:
            feats = self.selection_strategy.compute_features(dataset, keys)
            if out is None:
                out = np.empty((len(rows), feats.shape[1]), dtype=np.float32)
            out[positions] = feats
        return out

    def _attach_features(self, feats: np.ndarray | None) -> None:
        start = 0
        for group in self.buffer_groups.values():
            n = len(group.buffer)
            group.features = None if feats is None else feats[start : start + n]
            start += n

    def _update(self, experience, rows, index, sources):
        keys = self._group_keys(rows, index)
        by_group = first_appearance_groups(keys)
        if not by_group and self.groupby in (None, "experience"):
            # As Avalanche: an empty experience still creates (or touches) its group.
            by_group = [(0 if self.groupby is None else index, np.empty(0, dtype=np.int64))]
        lengths = self._lengths_for(
            list(dict.fromkeys([*self.buffer_groups, *(g for g, _ in by_group)]))
        )
        old = self.buffer
        # Features of every row involved, once: old exemplars, then the new rows.
        feats = self._features(ExemplarSet.concat([old, rows]), experience, sources)
        self._attach_features(None if feats is None else feats[: len(old)])
        new_feats = None if feats is None else feats[len(old) :]
        try:
            for key, positions in by_group:
                new_rows = rows.take(positions)
                new_f = None if new_feats is None else new_feats[positions]
                if key in self.buffer_groups:
                    group = self.buffer_groups[key]
                    group.append(new_rows, new_f)
                    self._select(group, group.max_size)
                    self._select(group, lengths[key])
                else:
                    group = _SelectedGroup(lengths[key], new_rows)
                    group.features = new_f
                    self._select(group, lengths[key])
                    self.buffer_groups[key] = group
            for key, group in self.buffer_groups.items():
                self._select(group, lengths[key])
        finally:
            self._attach_features(None)

    def _resize(self, new_size, sources):
        self._max_size = new_size
        if not self.buffer_groups:
            return
        lengths = self._lengths_for(list(self.buffer_groups))
        self._attach_features(self._features(self.buffer, None, sources))
        try:
            for key, group in self.buffer_groups.items():
                self._select(group, lengths[key])
        finally:
            self._attach_features(None)

    def _restore_groups(self, groups):
        self.buffer_groups = {key: _SelectedGroup(size, rows) for key, size, rows, _ in groups}

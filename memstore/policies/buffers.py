"""Replay buffer policies with Avalanche's names and selection semantics.

Policies are pure: they take an :class:`~memstore.experiences.Experience` (ids and metadata),
hold an :class:`~memstore.experiences.ExemplarSet`, draw every random number from their own
``torch.Generator`` (seeded by ``seed``) and never touch storage. ``state_dict()`` holds only
JSON scalars, lists, dicts of those and numpy arrays; the store persists it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from memstore._validation import (
    check_bool,
    check_choice,
    check_int,
    generator_state,
    make_generator,
    set_generator_state,
)
from memstore.errors import StrategyMismatchError
from memstore.experiences import COLUMNS, ExemplarSet, Experience, resolve_inputs
from memstore.selection.strategies import (
    ExemplarsSelectionStrategy,
    RandomExemplarsSelectionStrategy,
    strategy_from_record,
    strategy_record,
)

__all__ = [
    "ExemplarsBuffer",
    "ReservoirSamplingBuffer",
    "BalancedExemplarsBuffer",
    "ExperienceBalancedBuffer",
    "ClassBalancedBuffer",
    "ParametricBuffer",
    "POLICIES",
    "STATE_FORMAT",
]

STATE_FORMAT = 1
_STATE_KEYS = {
    "format",
    "policy",
    "params",
    "num_updates",
    "generator_state",
    "source_names",
    "columns",
    "groups",
    "strategy",
}


def first_appearance_groups(keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Split row positions by key: keys in first-appearance order, rows in input order."""
    if keys.size == 0:
        return []
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows_by_key = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=uniq.size))[:-1]
    chunks = np.split(rows_by_key, bounds)
    return [(int(uniq[g]), chunks[g]) for g in np.argsort(first, kind="stable")]


class ExemplarsBuffer(ABC):
    """A bounded memory of exemplars, updated one experience at a time.

    Args:
        max_size: the most exemplars the buffer may hold.
        seed: seeds the buffer's generator; with ``seed=s`` the random draws equal the ones
            Avalanche makes after ``torch.manual_seed(s)``.
    """

    def __init__(self, max_size: int, seed: int = 0) -> None:
        owner = type(self).__name__
        self._max_size = check_int(max_size, "max_size", owner, minimum=1)
        self.seed = check_int(seed, "seed", owner, minimum=0)
        self._generator = make_generator(self.seed, owner)
        self._num_updates = 0

    # -- public API -------------------------------------------------------------------------
    @property
    def max_size(self) -> int:
        return self._max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        self.resize(value)

    @property
    @abstractmethod
    def buffer(self) -> ExemplarSet:
        """The exemplars, in buffer order."""

    def __len__(self) -> int:
        return len(self.buffer)

    def update(self, experience: Experience, sources: Mapping[str, Any] | None = None) -> None:
        """Add the candidates of ``experience``. On error the buffer is left exactly as it was.

        ``sources`` maps source names to datasets indexable by sample id; feature-based
        selection reads the inputs of old exemplars from there.
        """
        if not isinstance(experience, Experience):
            raise TypeError(
                f"The 'experience' parameter of {type(self).__name__}.update must be a "
                f"memstore.Experience. Got {type(experience).__name__} instead."
            )
        snapshot = self.state_dict()
        try:
            index = experience.index if experience.index is not None else self._num_updates
            self._update(experience, experience.as_exemplars(index), index, sources)
            self._num_updates += 1
        except BaseException:
            self.load_state_dict(snapshot)
            raise

    def resize(self, new_size: int, sources: Mapping[str, Any] | None = None) -> None:
        """Change ``max_size``; shrinking drops exemplars by the policy's rule."""
        new_size = check_int(new_size, "new_size", f"{type(self).__name__}.resize", minimum=1)
        snapshot = self.state_dict()
        try:
            self._resize(new_size, sources)
        except BaseException:
            self.load_state_dict(snapshot)
            raise

    def params(self) -> dict[str, Any]:
        """Constructor parameters (current ``max_size``), JSON-able."""
        return {"max_size": self._max_size, "seed": self.seed}

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        groups = self._group_items()
        parts = [g.buffer for _, g in groups]
        rows = ExemplarSet.concat(parts)
        names, codes = np.unique(rows.source, return_inverse=True)
        columns = {c: np.array(getattr(rows, c), copy=True) for c in COLUMNS if c != "source"}
        columns["source"] = codes.astype(np.int32).reshape(-1)
        columns["group"] = np.concatenate(
            [
                np.full(len(p), key, dtype=np.int64)
                for (key, _), p in zip(groups, parts, strict=True)
            ]
            or [np.empty(0, dtype=np.int64)]
        )
        weights = [getattr(g, "_weights", None) for _, g in groups]
        if all(w is not None for w in weights) and groups:
            columns["weight"] = np.concatenate(weights).astype(np.float32)
        state = {
            "format": STATE_FORMAT,
            "policy": type(self).__name__,
            "params": self.params(),
            "num_updates": self._num_updates,
            "generator_state": generator_state(self._generator),
            "source_names": [str(n) for n in names],
            "columns": columns,
            "groups": {
                "keys": np.array([k for k, _ in groups], dtype=np.int64),
                "max_sizes": np.array([g.max_size for _, g in groups], dtype=np.int64),
            },
        }
        strategy = getattr(self, "selection_strategy", None)
        if strategy is not None:
            state["strategy"] = strategy_record(strategy)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (checked before anything changes)."""
        owner = f"{type(self).__name__}.load_state_dict"
        groups = _check_state(state, type(self).__name__, owner)
        strategy = getattr(self, "selection_strategy", None)
        if strategy is not None:
            record = state.get("strategy")
            mine = strategy_record(strategy)["class"]
            if not isinstance(record, Mapping) or record.get("class") != mine:
                got = record.get("class") if isinstance(record, Mapping) else record
                raise StrategyMismatchError(
                    f"{owner}: the state was made with selection strategy {got!r} but this "
                    f"buffer has {mine}. Build the buffer with a strategy "
                    "of the recorded class."
                )
        params = dict(state["params"])
        try:  # the constructor's checks, and the group sizes these params give
            expected = self._with_params(params)._group_sizes([key for key, *_ in groups])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{owner}: corrupted state dict (params {params!r}: {err})") from err
        sizes = [size for _, size, _, _ in groups]
        if sizes != expected:
            raise ValueError(
                f"{owner}: corrupted state dict (group sizes {sizes} do not follow from "
                f"max_size={params['max_size']}; expected {expected})."
            )
        backup = self.state_dict()
        try:
            self._apply_state(state, groups)
        except Exception as err:
            self._apply_state(backup, _check_state(backup, type(self).__name__, owner))
            raise ValueError(f"{owner}: corrupted state dict ({err}).") from err

    def _apply_state(self, state: Mapping[str, Any], groups: list) -> None:
        params = dict(state["params"])
        max_size = params.pop("max_size")
        self._set_params(params)
        self._max_size = int(max_size)
        self._num_updates = int(state["num_updates"])
        set_generator_state(self._generator, state["generator_state"])
        self._restore_groups(groups)

    def _with_params(self, params: dict[str, Any]) -> ExemplarsBuffer:
        """A fresh buffer of this class built from ``params`` (validates them)."""
        return type(self)(**params)

    def _group_sizes(self, keys: list[int]) -> list[int]:
        """The ``max_size`` each group with these keys must have."""
        return [self._max_size]

    # -- for subclasses ---------------------------------------------------------------------
    @abstractmethod
    def _update(
        self, experience: Experience, rows: ExemplarSet, index: int, sources: Any
    ) -> None: ...

    @abstractmethod
    def _resize(self, new_size: int, sources: Any) -> None: ...

    @abstractmethod
    def _group_items(self) -> list[tuple[int, ExemplarsBuffer]]: ...

    @abstractmethod
    def _restore_groups(self, groups: list[tuple[int, int, ExemplarSet, Any]]) -> None: ...

    def _set_params(self, params: dict[str, Any]) -> None:
        self.seed = int(params.get("seed", self.seed))


def _check_state(state: Any, policy: str, owner: str) -> list[tuple[int, int, ExemplarSet, Any]]:
    """Validate a state dict; return its groups as (key, max_size, rows, weights)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{owner}: a state must be a dict. Got {type(state).__name__} instead.")
    keys = set(state)
    missing = sorted(_STATE_KEYS - {"strategy"} - keys)
    unexpected = sorted(keys - _STATE_KEYS)
    if missing or unexpected:
        raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unexpected}.")
    if state["policy"] != policy:
        raise ValueError(
            f"{owner}: the state belongs to a {state['policy']!r}, not a {policy!r}. "
            "Load it into a buffer of the recorded class (or use memstore.buffer_from_state)."
        )
    if state["format"] != STATE_FORMAT:
        raise ValueError(f"{owner}: state format {state['format']!r} is not {STATE_FORMAT}.")
    try:
        cols = state["columns"]
        names = np.asarray(state["source_names"], dtype=np.str_)
        n = len(cols["ids"])
        for c in (*COLUMNS[1:], "source", "group"):
            if np.asarray(cols[c]).shape != (n,):
                raise ValueError(f"column {c!r} has shape {np.asarray(cols[c]).shape}, not ({n},)")
        codes = np.asarray(cols["source"], dtype=np.int64)
        if n and (codes.min() < 0 or codes.max() >= len(names)):
            raise ValueError("source codes out of range of source_names")
        rows = ExemplarSet(
            names[codes] if n else np.empty(0, dtype="<U1"),
            *(np.asarray(cols[c], dtype=np.int64) for c in COLUMNS[1:]),
        )
        weights = np.asarray(cols["weight"], dtype=np.float32) if "weight" in cols else None
        if weights is not None and weights.shape != (n,):
            raise ValueError("column 'weight' has the wrong length")
        gkeys = np.asarray(state["groups"]["keys"], dtype=np.int64)
        gsizes = np.asarray(state["groups"]["max_sizes"], dtype=np.int64)
        group_col = np.asarray(cols["group"], dtype=np.int64)
        if gkeys.shape != gsizes.shape or len(set(gkeys.tolist())) != gkeys.size:
            raise ValueError("group keys and sizes disagree or repeat")
        # Rows come in runs of one group key, in the order of groups["keys"].
        starts = np.flatnonzero(np.r_[True, group_col[1:] != group_col[:-1]]) if n else []
        bounds = dict(
            zip(
                group_col[starts].tolist(),
                zip(starts, [*starts[1:], n], strict=False),
                strict=False,
            )
        )
        if len(bounds) != len(starts) or not set(bounds) <= set(gkeys.tolist()):
            raise ValueError("rows are not grouped contiguously by known group keys")
        out, start = [], 0
        for key, size in zip(gkeys.tolist(), gsizes.tolist(), strict=True):
            lo, hi = bounds.get(key, (start, start))
            if lo != start or hi - lo > size or size < 0:
                raise ValueError(f"group {key} rows are out of order or exceed its size {size}")
            sl = np.arange(lo, hi)
            out.append((key, size, rows.take(sl), None if weights is None else weights[sl]))
            start = hi
        gen = np.asarray(state["generator_state"])
        if (
            gen.ndim != 1
            or gen.dtype.kind not in "iu"
            or (gen.size and (gen.min() < 0 or gen.max() > 255))
        ):
            raise ValueError("'generator_state' must be a 1-D array of bytes")
        try:
            torch.Generator().set_state(torch.from_numpy(gen.astype(np.uint8)))
        except RuntimeError as err:
            msg = f"'generator_state' is not a torch CPU generator state: {err}"
            raise ValueError(msg) from err
        int(state["num_updates"])
        int(state["params"]["max_size"])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{owner}: corrupted state dict ({err}).") from err
    return out


class ReservoirSamplingBuffer(ExemplarsBuffer):
    """Uniform random memory: each sample gets a random weight; the top ``max_size`` stay.

    Per update, one ``torch.rand(len(experience))`` draw; new rows are placed before old ones
    and the weights sorted descending (stable). Cost O((N + max_size) log(N + max_size)).
    """

    def __init__(self, max_size: int, seed: int = 0) -> None:
        super().__init__(max_size, seed)
        self._exemplars = ExemplarSet.empty()
        self._weights = np.empty(0, dtype=np.float32)

    @classmethod
    def _group(cls, max_size: int, generator: torch.Generator) -> ReservoirSamplingBuffer:
        """A group of a balanced buffer: shares its parent's generator; may be empty."""
        group = cls.__new__(cls)
        group._max_size = int(max_size)
        group.seed = 0
        group._generator = generator
        group._num_updates = 0
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
        self._exemplars, self._weights = rows, weights.copy()


class BalancedExemplarsBuffer(ExemplarsBuffer):
    """A buffer split into groups, each a buffer of its own, sharing ``max_size``.

    Adaptive (default): every group gets ``max_size // n`` and the first ``max_size % n``
    groups in ascending key order one more. Fixed: ``max_size // total_num_groups`` each.
    """

    _total_name = "total_num_groups"

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        total_num_groups: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(max_size, seed)
        owner = type(self).__name__
        self.adaptive_size = check_bool(adaptive_size, "adaptive_size", owner)
        self.total_num_groups = check_int(
            total_num_groups, self._total_name, owner, minimum=1, allow_none=True
        )
        if not self.adaptive_size and self.total_num_groups is None:
            raise ValueError(
                f"The {self._total_name!r} parameter of {owner} must be a positive int when "
                "adaptive_size=False. Got None instead."
            )
        self.buffer_groups: dict[int, ExemplarsBuffer] = {}

    @property
    def buffer(self) -> ExemplarSet:
        return ExemplarSet.concat([g.buffer for g in self.buffer_groups.values()])

    def get_group_lengths(self, num_groups: int) -> list[int]:
        """Lengths of ``num_groups`` groups (to be matched with keys in ascending order)."""
        num_groups = check_int(num_groups, "num_groups", "get_group_lengths", minimum=0)
        if self.adaptive_size:
            if num_groups == 0:
                return []
            lengths = [self._max_size // num_groups] * num_groups
            for i in range(self._max_size - sum(lengths)):
                lengths[i] += 1
            return lengths
        if num_groups > self.total_num_groups:
            raise ValueError(
                f"{type(self).__name__} was declared with {self._total_name}="
                f"{self.total_num_groups} (adaptive_size=False) but sees {num_groups} groups. "
                f"Declare a larger {self._total_name} or use adaptive_size=True."
            )
        return [self._max_size // self.total_num_groups] * num_groups

    def params(self) -> dict[str, Any]:
        return {
            "max_size": self._max_size,
            "adaptive_size": self.adaptive_size,
            self._total_name: self.total_num_groups,
            "seed": self.seed,
        }

    def _set_params(self, params: dict[str, Any]) -> None:
        super()._set_params(params)
        self.adaptive_size = bool(params.get("adaptive_size", self.adaptive_size))
        self.total_num_groups = params.get(self._total_name, self.total_num_groups)

    def _group_sizes(self, keys: list[int]) -> list[int]:
        lengths = self._lengths_for(keys)
        return [lengths[key] for key in keys]

    def _lengths_for(self, keys: list[int]) -> dict[int, int]:
        ordered = sorted(keys)
        return dict(zip(ordered, self.get_group_lengths(len(ordered)), strict=True))

    def _group_items(self):
        return list(self.buffer_groups.items())

    def _resize(self, new_size, sources):
        self._max_size = new_size
        lengths = self._lengths_for(list(self.buffer_groups))
        for key, group in self.buffer_groups.items():
            group.shrink_to(lengths[key])

    def _restore_groups(self, groups):
        self.buffer_groups = {}
        for key, size, rows, weights in groups:
            group = ReservoirSamplingBuffer._group(size, self._generator)
            if weights is None:
                raise ValueError(f"a {type(self).__name__} state needs the 'weight' column")
            group._exemplars, group._weights = rows, weights.copy()
            self.buffer_groups[key] = group


class ExperienceBalancedBuffer(BalancedExemplarsBuffer):
    """One reservoir group per experience (key: the experience's ``index``)."""

    _total_name = "num_experiences"

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        num_experiences: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(max_size, adaptive_size, num_experiences, seed)

    @property
    def num_experiences(self) -> int | None:
        return self.total_num_groups

    def _update(self, experience, rows, index, sources):
        if index in self.buffer_groups:
            raise ValueError(
                f"ExperienceBalancedBuffer already holds experience {index}. Give each "
                "update a new Experience index."
            )
        lengths = self._lengths_for([*self.buffer_groups, index])
        group = ReservoirSamplingBuffer._group(lengths[index], self._generator)
        group.add(rows)
        self.buffer_groups[index] = group
        for key, g in self.buffer_groups.items():
            g.shrink_to(lengths[key])


class ClassBalancedBuffer(BalancedExemplarsBuffer):
    """One reservoir group per class seen so far."""

    _total_name = "total_num_classes"

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        total_num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(max_size, adaptive_size, total_num_classes, seed)

    @property
    def total_num_classes(self) -> int | None:
        return self.total_num_groups

    @property
    def seen_classes(self) -> set[int]:
        return set(self.buffer_groups)

    def _update(self, experience, rows, index, sources):
        if len(rows) == 0:
            return
        by_class = first_appearance_groups(rows.targets)
        lengths = self._lengths_for(
            list(dict.fromkeys([*self.buffer_groups, *(c for c, _ in by_class)]))
        )
        for cls, positions in by_class:
            if cls in self.buffer_groups:
                group = self.buffer_groups[cls]
                group.add(rows.take(positions))
                group.shrink_to(lengths[cls])
            else:
                group = ReservoirSamplingBuffer._group(lengths[cls], self._generator)
                group.add(rows.take(positions))
                self.buffer_groups[cls] = group
        for key, group in self.buffer_groups.items():
            group.shrink_to(lengths[key])


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

    def _update(self, *args):  # groups are driven by their ParametricBuffer
        raise NotImplementedError

    _resize = _group_items = _restore_groups = _update


class ParametricBuffer(BalancedExemplarsBuffer):
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
        group._exemplars = group.buffer.take(order)
        if group.features is not None:
            group.features = group.features[order]
        group._max_size = size

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
                    group._exemplars = ExemplarSet.concat([group.buffer, new_rows])
                    if new_f is not None:
                        group.features = np.concatenate(
                            [group.features.reshape(-1, new_f.shape[1]), new_f]
                        )
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


POLICIES: dict[str, type[ExemplarsBuffer]] = {
    cls.__name__: cls
    for cls in (
        ReservoirSamplingBuffer,
        ExperienceBalancedBuffer,
        ClassBalancedBuffer,
        ParametricBuffer,
    )
}


def buffer_from_state(
    state: Mapping[str, Any], selection_strategy: ExemplarsSelectionStrategy | None = None
) -> ExemplarsBuffer:
    """Rebuild a buffer of the recorded class from a :meth:`ExemplarsBuffer.state_dict`.

    A ParametricBuffer recorded with a feature-based strategy needs ``selection_strategy``
    (models are never stored); without one it loads, but updating it raises a clear error.
    """
    policy = state.get("policy") if isinstance(state, Mapping) else None
    if policy not in POLICIES:
        raise ValueError(f"Unknown buffer policy {policy!r} in state; known: {sorted(POLICIES)}.")
    params = dict(state["params"])
    if selection_strategy is not None and policy != "ParametricBuffer":
        raise TypeError(
            f"selection_strategy only applies to a ParametricBuffer; the state is a {policy}."
        )
    if policy == "ParametricBuffer":
        strategy = selection_strategy or strategy_from_record(state.get("strategy"))
        buf = ParametricBuffer(
            params["max_size"], params.get("groupby"), strategy, params.get("seed", 0)
        )
    else:
        buf = POLICIES[policy](**params)
    buf.load_state_dict(state)
    return buf

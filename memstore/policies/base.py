"""The contract of every replay buffer policy: :class:`ExemplarsBuffer` and its state.

Policies are pure: they take an :class:`~memstore.experiences.Experience` (ids and metadata),
hold an :class:`~memstore.experiences.ExemplarSet`, draw every random number from their own
``torch.Generator`` (seeded by ``seed``) and never touch storage. ``state_dict()`` holds only
JSON scalars, lists, dicts of those and numpy arrays; the store persists it, and
:func:`buffer_from_state` rebuilds a buffer of the recorded policy from it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from memstore._validation import (
    check_int,
    check_sources_mapping,
    generator_state,
    make_generator,
    set_generator_state,
)
from memstore.errors import IdConflictError, StrategyMismatchError
from memstore.experiences import (
    COLUMNS,
    PAYLOAD_PREFIX,
    ExemplarSet,
    Experience,
    as_payload,
    check_payload_fits,
)
from memstore.selection.strategies import ExemplarsSelectionStrategy, strategy_record

__all__ = [
    "ExemplarsBuffer",
    "POLICIES",
    "STATE_FORMAT",
    "buffer_from_state",
    "check_known_ids",
    "check_state",
    "first_appearance_groups",
    "state_digest",
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


#: the concrete policies by class name (registered with ``policy=True``), for
#: :func:`buffer_from_state`.
POLICIES: dict[str, type[ExemplarsBuffer]] = {}


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

    The state contract: :meth:`state_dict` holds only JSON scalars, lists, dicts of those
    and numpy arrays (the rows, grouped, with the groups' keys and sizes, the parameters,
    the generator state and — for a policy with one — the selection strategy's record);
    :meth:`load_state_dict` checks a state completely before anything changes.
    Subclasses implement ``_update``, ``_resize``, ``_group_items`` and ``_restore_groups``;
    a concrete policy registers itself for :func:`buffer_from_state` with
    ``class MyBuffer(ExemplarsBuffer, policy=True)``.

    Args:
        max_size: the most exemplars the buffer may hold.
        seed: seeds the buffer's generator; with ``seed=s`` the random draws equal the ones
            Avalanche makes after ``torch.manual_seed(s)``.
    """

    #: the strategy ordering the rows of a group (recorded in the state), if the policy has
    #: one; ``None`` for random-weight policies.
    selection_strategy: ExemplarsSelectionStrategy | None = None
    #: the commit this buffer's content comes from, set by ``Store.load`` and ``Store.save``
    #: (a :class:`memstore.Origin`: store, buffer name, seq); ``None`` for a buffer never
    #: loaded or saved. ``Store.save`` builds on it. Not part of :meth:`state_dict`.
    origin: Any = None
    #: whether :func:`buffer_from_state` may hand this policy a ``selection_strategy``.
    takes_selection_strategy: ClassVar[bool] = False

    def __init_subclass__(cls, *, policy: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if policy:
            POLICIES[cls.__name__] = cls

    def __init__(self, max_size: int, seed: int = 0) -> None:
        owner = type(self).__name__
        self._max_size = check_int(max_size, "max_size", owner, minimum=1)
        self.seed = check_int(seed, "seed", owner, minimum=0)
        self._generator = make_generator(self.seed, owner)
        self._num_updates = 0

    @classmethod
    def sharing_generator(cls, max_size: int, generator: torch.Generator):
        """A bare instance that draws from ``generator`` (a group of a balanced buffer).

        Skips the constructor's checks: a group's size may be 0 and its draws are its
        parent's. The subclass fills in its rows.
        """
        group = cls.__new__(cls)
        group._max_size = int(max_size)
        group.seed = 0
        group._generator = generator
        group._num_updates = 0
        return group

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
        check_sources_mapping(sources, f"{type(self).__name__}.update")
        index = experience.index if experience.index is not None else self._num_updates
        rows = experience.as_exemplars(index)
        held = self.buffer
        check_known_ids(held, rows, type(self).__name__)
        check_payload_fits(held, rows, type(self).__name__)
        snapshot = self.state_dict()
        try:
            self._update(experience, rows, index, sources)
            self._num_updates += 1
        except BaseException:
            self.load_state_dict(snapshot)
            raise

    def resize(self, new_size: int, sources: Mapping[str, Any] | None = None) -> None:
        """Change ``max_size``; shrinking drops exemplars by the policy's rule."""
        new_size = check_int(new_size, "new_size", f"{type(self).__name__}.resize", minimum=1)
        check_sources_mapping(sources, f"{type(self).__name__}.resize")
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
        for key, value in rows.payload.items():  # "payload.<name>": [n, ...] per exemplar
            columns[PAYLOAD_PREFIX + key] = np.array(value, copy=True)
        columns["group"] = np.concatenate(
            [
                np.full(len(p), key, dtype=np.int64)
                for (key, _), p in zip(groups, parts, strict=True)
            ]
            or [np.empty(0, dtype=np.int64)]
        )
        weights = [g.row_weights() for _, g in groups]
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
        if self.selection_strategy is not None:
            state["strategy"] = strategy_record(self.selection_strategy)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (checked before anything changes)."""
        owner = f"{type(self).__name__}.load_state_dict"
        groups = check_state(state, type(self).__name__, owner)
        strategy = self.selection_strategy
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
            self._apply_state(backup, check_state(backup, type(self).__name__, owner))
            raise ValueError(f"{owner}: corrupted state dict ({err}).") from err

    def _apply_state(self, state: Mapping[str, Any], groups: list) -> None:
        params = dict(state["params"])
        max_size = params.pop("max_size")
        self._set_params(params)
        self._max_size = int(max_size)
        self._num_updates = int(state["num_updates"])
        set_generator_state(self._generator, state["generator_state"])
        self._restore_groups(groups)

    def row_weights(self) -> np.ndarray | None:
        """Per-row weights saved with the rows (the ``'weight'`` column), or ``None``."""
        return None

    @classmethod
    def _from_params(
        cls,
        params: dict[str, Any],
        selection_strategy: ExemplarsSelectionStrategy | None,
        record: Any,
    ) -> ExemplarsBuffer:
        """A fresh buffer of this policy from a state's ``params`` (and strategy record)."""
        return cls(**params)

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


def check_known_ids(held: ExemplarSet, rows: ExemplarSet, owner: str) -> None:
    """Refuse new rows whose (source, id) the buffer holds with another target or task.

    Such ids do not name one sample (e.g. positions local to each experience), and replay
    would read one sample for the other. Cost O((N + M) log(N + M)).
    """
    if not len(held) or not len(rows):
        return
    for name in dict.fromkeys(rows.source.tolist()):
        old = np.flatnonzero(held.source == name)
        new = np.flatnonzero(rows.source == name)
        _, i, j = np.intersect1d(held.ids[old], rows.ids[new], return_indices=True)
        if not i.size:
            continue
        a, b = old[i], new[j]
        for column, what in (("targets", "target"), ("task_labels", "task")):
            bad = np.flatnonzero(getattr(held, column)[a] != getattr(rows, column)[b])
            if bad.size:
                k = bad[0]
                raise IdConflictError(
                    f"{owner}.update got sample ({name!r}, {int(held.ids[a[k]])}) with {what} "
                    f"{int(getattr(rows, column)[b[k]])}, but the buffer holds it with {what} "
                    f"{int(getattr(held, column)[a[k]])} ({bad.size} such rows). Ids must name "
                    "one sample of their source across experiences: use indices in the root "
                    "dataset (Experience.from_dataset on a Subset does), or another source name."
                )


def check_state(state: Any, policy: str, owner: str) -> list[tuple[int, int, ExemplarSet, Any]]:
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
        payload = {
            key[len(PAYLOAD_PREFIX) :]: value
            for key, value in cols.items()
            if key.startswith(PAYLOAD_PREFIX)
        }
        rows = ExemplarSet(
            names[codes] if n else np.empty(0, dtype="<U1"),
            *(np.asarray(cols[c], dtype=np.int64) for c in COLUMNS[1:]),
            payload=as_payload(payload, n, "the state's payload", copy=False),
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
    cls = POLICIES[policy]
    params = dict(state["params"])
    if selection_strategy is not None and not cls.takes_selection_strategy:
        raise TypeError(
            f"selection_strategy only applies to a ParametricBuffer; the state is a {policy}."
        )
    buf = cls._from_params(params, selection_strategy, state.get("strategy"))
    buf.load_state_dict(state)
    return buf


def state_digest(state: Mapping[str, Any]) -> str:
    """A blake2b digest of a ``state_dict`` (arrays by bytes, the rest as sorted JSON).

    Two buffers with equal digests hold the same state: ranks compare them before a collective
    step, crash and resume tests compare a loaded buffer with the one an uninterrupted run
    built. Cost O(state size).
    """
    h = hashlib.blake2b(digest_size=16)

    def walk(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            h.update(f"{value.dtype}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).tobytes())
            return "<array>"
        if isinstance(value, Mapping):
            return {str(k): walk(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        return value

    h.update(json.dumps(walk(state), sort_keys=True, default=str).encode())
    return h.hexdigest()

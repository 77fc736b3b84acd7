"""What a buffer sees: candidate rows of one update (``Experience``) and its content
(``ExemplarSet``). Both are plain columns of metadata; samples stay in their sources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._validation import as_int_array, check_int, check_name
from .errors import PayloadMismatchError

__all__ = [
    "Experience",
    "ExemplarSet",
    "COLUMNS",
    "PAYLOAD_PREFIX",
    "as_payload",
    "payload_schema",
    "check_payload_fits",
]

COLUMNS = ("source", "ids", "targets", "task_labels", "experience")
#: state and snapshot columns ``payload.<name>`` hold the payload column ``<name>``.
PAYLOAD_PREFIX = "payload."
_PAYLOAD_KINDS = "biuf"  # bool, int, uint, float: what a zarr array and a tensor both hold


def as_payload(payload: Any, n: int, owner: str, *, copy: bool = True) -> dict[str, np.ndarray]:
    """Per-row payload columns ``{name: array [n, ...]}`` as numpy arrays, checked.

    Values are numpy arrays or torch tensors (detached, moved to CPU) of a bool, int, uint or
    float dtype whose first dimension is ``n``; names follow the one name rule
    (``check_name``). ``copy`` (default) copies each array, so later in-place changes of
    the caller's tensors do not reach the buffer. Cost O(payload size).

    Raises:
        TypeError: ``payload`` is not a mapping, a value is not an array, or of another dtype.
        ValueError: a name breaks the name rule.
        PayloadMismatchError: a value's first dimension is not ``n``.
    """
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise TypeError(
            f"The 'payload' parameter of {owner} must be a mapping of names to arrays [n, ...] "
            f"or None. Got {type(payload).__name__} instead."
        )
    out = {}
    for name, value in payload.items():
        try:
            check_name(name, "payload", owner)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{err} (payload names follow the buffer and source name rule)"
            ) from err
        out[name] = _payload_array(name, value, n, owner, copy)
    return out


def _payload_array(name: str, value: Any, n: int, owner: str, copy: bool) -> np.ndarray:
    what = f"The payload column {name!r} of {owner}"
    if isinstance(value, torch.Tensor):
        try:
            value = value.detach().cpu().numpy()
        except TypeError as err:  # bfloat16 and other dtypes numpy lacks
            raise TypeError(
                f"{what} must have a dtype numpy knows. Got {value.dtype} instead: cast it "
                "(e.g. .float())."
            ) from err
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{what} must be a numpy array or a torch tensor. Got {type(value).__name__} instead."
        )
    if value.dtype.kind not in _PAYLOAD_KINDS:
        raise TypeError(
            f"{what} must hold bool, int, uint or float values. Got dtype {value.dtype} instead."
        )
    if value.ndim == 0 or value.shape[0] != n:
        raise PayloadMismatchError(
            f"{what} must have one row per sample: shape [{n}, ...]. Got shape "
            f"{list(value.shape)} instead."
        )
    return np.array(value, order="C", copy=True) if copy else np.ascontiguousarray(value)


def payload_schema(payload: Mapping[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, trailing shape)}``: what two sets of rows must share to be merged."""
    return {k: (str(v.dtype), tuple(v.shape[1:])) for k, v in payload.items()}


def _schema_text(schema: Mapping[str, tuple[str, tuple[int, ...]]]) -> str:
    if not schema:
        return "no payload"
    return ", ".join(
        f"{k}: {d}[n, {', '.join(map(str, s))}]" if s else f"{k}: {d}[n]"
        for k, (d, s) in sorted(schema.items())
    )


def check_payload_fits(held: ExemplarSet, rows: ExemplarSet, owner: str) -> None:
    """Refuse new rows whose payload (names, dtypes, trailing shapes) differs from the held
    exemplars' (rows without payload to a buffer with one, and the converse, included).

    An empty buffer or an empty update accepts any payload. Raises
    :class:`~memstore.errors.PayloadMismatchError`. Cost O(number of payload columns).
    """
    if not len(held) or not len(rows):
        return
    mine, theirs = payload_schema(held.payload), payload_schema(rows.payload)
    if mine != theirs:
        raise PayloadMismatchError(
            f"{owner}.update got rows with payload ({_schema_text(theirs)}), but the buffer's "
            f"exemplars hold ({_schema_text(mine)}). Every exemplar carries the same payload "
            "columns: give each Experience the same names, dtypes and trailing shapes (cast "
            "with .astype / .to), or start a new buffer."
        )


def _source_column(source: Any, n: int, owner: str) -> np.ndarray:
    """One source name per row; every name follows the one name rule (``check_name``)."""
    if isinstance(source, str):
        check_name(source, "source", owner)
        return np.full(n, source, dtype=f"<U{max(1, len(source))}")
    arr = np.asarray(source)
    if arr.ndim != 1 or arr.shape[0] != n or arr.dtype.kind not in "UO":
        raise ValueError(
            f"The 'source' parameter of {owner} must be a str or {n} str values. "
            f"Got {source!r:.80} instead."
        )
    arr = arr.astype(np.str_)
    for name in np.unique(arr).tolist():  # a few distinct names, not one check per row
        check_name(name, "source", owner)
    return arr


@dataclass(frozen=True, eq=False)
class ExemplarSet:
    """Columns of a buffer's content, in buffer order (numpy arrays of one length).

    ``source`` names the source of each exemplar, ``ids`` its sample id there; ``experience``
    is the index of the experience it came from. ``payload`` holds per-exemplar arrays given
    with the rows (``Experience(payload=...)``, e.g. DER logits): ``payload[name][i]``
    belongs to exemplar ``i``; ``take`` and ``concat`` carry it, so every policy keeps it
    aligned through updates, resizes and re-selection.
    """

    source: np.ndarray
    ids: np.ndarray
    targets: np.ndarray
    task_labels: np.ndarray
    experience: np.ndarray
    payload: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self)
        payload = {k: np.asarray(v) for k, v in self.payload.items()}
        bad = {k: v.shape for k, v in payload.items() if v.ndim == 0 or v.shape[0] != n}
        if bad:
            raise PayloadMismatchError(
                f"ExemplarSet payload columns must have {n} rows (one per exemplar). Got "
                f"shapes {bad} instead."
            )
        object.__setattr__(self, "payload", payload)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __repr__(self) -> str:
        extra = f", payload={sorted(self.payload)}" if self.payload else ""
        return f"ExemplarSet(len={len(self)}, sources={sorted(set(self.source.tolist()))}{extra})"

    @classmethod
    def empty(cls) -> ExemplarSet:
        z = np.empty(0, dtype=np.int64)
        return cls(np.empty(0, dtype="<U1"), z, z.copy(), z.copy(), z.copy())

    @classmethod
    def concat(cls, parts: list[ExemplarSet]) -> ExemplarSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        schema = payload_schema(parts[0].payload)
        for part in parts[1:]:
            if payload_schema(part.payload) != schema:
                raise PayloadMismatchError(
                    f"Cannot concatenate exemplars with payload ({_schema_text(schema)}) and "
                    f"({_schema_text(payload_schema(part.payload))}): every row must carry "
                    "the same payload columns."
                )
        payload = {k: np.concatenate([p.payload[k] for p in parts]) for k in schema}
        columns = (np.concatenate([getattr(p, c) for p in parts]) for c in COLUMNS)
        return cls(*columns, payload=payload)

    def take(self, index: np.ndarray) -> ExemplarSet:
        """The rows at ``index`` (payload rows with them). O(len(index) · row size)."""
        index = np.asarray(index, dtype=np.int64)
        payload = {k: v[index] for k, v in self.payload.items()}
        return ExemplarSet(*(getattr(self, c)[index] for c in COLUMNS), payload=payload)

    def columns(self) -> dict[str, np.ndarray]:
        """The metadata columns (``COLUMNS``); the payload columns are ``payload``."""
        return {c: getattr(self, c) for c in COLUMNS}

    def equals(self, other: ExemplarSet) -> bool:
        """Same rows in the same order, payload included (names, dtypes, shapes, values)."""
        return (
            len(self) == len(other)
            and all(np.array_equal(getattr(self, c), getattr(other, c)) for c in COLUMNS)
            and payload_schema(self.payload) == payload_schema(other.payload)
            and all(np.array_equal(v, other.payload[k]) for k, v in self.payload.items())
        )


def _unwrap_subset(dataset: Any) -> tuple[Any, np.ndarray | None]:
    """Resolve nested ``torch.utils.data.Subset`` to (root dataset, root indices)."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        idx = np.asarray(dataset.indices, dtype=np.int64)
        indices = idx if indices is None else idx[indices]
        dataset = dataset.dataset
    return dataset, indices


def _is_view(dataset: Any) -> bool:
    """A dataset whose positions are not ids of one root: a concatenation, an Avalanche view."""
    module = type(dataset).__module__ or ""
    return isinstance(dataset, torch.utils.data.ConcatDataset) or module.split(".")[0] == (
        "avalanche"
    )


@dataclass(frozen=True, eq=False)
class Experience:
    """The candidates of one buffer update.

    Args:
        targets: class label per candidate row.
        ids: sample id of each row in its source (default ``0..N-1``). Ids must be unique.
        task_labels: an int for all rows, or one per row.
        source: the name of the source the ids refer to.
        index: the experience number (used as ``experience`` column and as group key of
            per-experience grouping); ``None`` lets the buffer number updates itself.
        data: where inputs are read for feature-based selection: ``data[i]`` is row ``i``'s
            item. Not needed for reservoir or class-balanced buffers.
        payload: per-row arrays kept with each exemplar, ``{name: array [n, ...]}`` (numpy
            arrays or torch tensors; copied): e.g. the logits DER stores. Row ``i`` of each
            belongs to row ``i`` of the experience; the buffer's
            ``buffer.payload[name][j]`` belongs to its exemplar ``j``. An update must bring
            the payload names, dtypes and trailing shapes the buffer's exemplars hold
            (:class:`~memstore.errors.PayloadMismatchError` otherwise; an empty buffer
            takes any). Bad names, non-arrays, other lengths: a named error, nothing kept.
    """

    targets: np.ndarray
    ids: np.ndarray | None = None
    task_labels: Any = 0
    source: str = "default"
    index: int | None = None
    data: Any = field(default=None, repr=False)
    # An id-addressable view of the whole source (``source_data[id]``), when known: lets
    # old exemplars of the same source be read without passing ``sources=``.
    source_data: Any = field(default=None, repr=False)
    payload: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        owner = "Experience"
        targets = as_int_array(self.targets, "targets", owner)
        n = targets.shape[0]
        ids = (
            np.arange(n, dtype=np.int64)
            if self.ids is None
            else as_int_array(self.ids, "ids", owner, length=n)
        )
        if ids.size and ids.min() < 0:
            raise ValueError(
                f"The 'ids' parameter of {owner} must hold sample ids >= 0 (positions in the "
                f"source). Got {np.unique(ids[ids < 0])[:5].tolist()} instead."
            )
        if n > 1:
            srt = np.sort(ids)
            dup = srt[1:][srt[1:] == srt[:-1]]
            if dup.size:
                raise ValueError(
                    f"The 'ids' parameter of {owner} must hold unique sample ids. "
                    f"Got duplicates {np.unique(dup)[:5].tolist()} instead."
                )
        if isinstance(self.task_labels, (int, np.integer)) and not isinstance(
            self.task_labels, bool
        ):
            tasks = np.full(n, int(self.task_labels), dtype=np.int64)
        else:
            tasks = as_int_array(self.task_labels, "task_labels", owner, length=n)
        check_name(self.source, "source", owner)  # the one rule for buffer and source names
        index = check_int(self.index, "index", owner, minimum=0, allow_none=True)
        if self.data is not None and len(self.data) != n:
            raise ValueError(
                f"The 'data' parameter of {owner} must have one item per row ({n}). "
                f"Got len {len(self.data)} instead."
            )
        payload = as_payload(self.payload, n, owner)
        for value in payload.values():
            value.setflags(write=False)
        object.__setattr__(self, "payload", payload)
        for name, value in (("targets", targets), ("ids", ids), ("task_labels", tasks)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "index", index)
        if self.source_data is None and self.data is not None and self.ids is None:
            object.__setattr__(self, "source_data", self.data)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        source: str = "default",
        index: int | None = None,
        ids: Any = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Experience:
        """Read ``.targets`` (and ``.targets_task_labels`` if present) of a map-style dataset.

        What the ids mean, by kind of dataset:

        * a ``torch.utils.data.Subset`` (nested or not): resolved to its root dataset, ids are
          the root indices, so experiences cut from one dataset share one id space;
        * any other map-style dataset is taken as a root: ids are its positions ``0..N-1``;
        * ``ids=`` given: those ids, whatever the dataset.

        Refused without ``ids=`` (``ValueError``), because positions there are not sample ids
        and experiences would collide in one source: a ``ConcatDataset`` (or a ``Subset`` of
        one), and Avalanche datasets (``AvalancheDataset`` views are subsets and
        concatenations of their own; use :mod:`memstore.avalanche`, which resolves them).

        ``payload`` (see :class:`Experience`): row ``i`` of each array belongs to
        ``dataset[i]``.
        """
        root, root_idx = _unwrap_subset(dataset)
        if ids is None and _is_view(root):
            raise ValueError(
                "The 'dataset' parameter of Experience.from_dataset must be a root dataset or a "
                f"Subset of one when 'ids' is not given. Got {type(root).__name__} (from "
                f"{type(root).__module__}) instead, whose positions are not sample ids: "
                "experiences cut from it would collide. Pass ids= (indices in the root "
                "dataset), or, for Avalanche data, use memstore.avalanche."
            )
        targets = getattr(
            dataset, "targets", None
        )  # shape: allow Avalanche-style attributes of a user dataset
        tasks = getattr(
            dataset, "targets_task_labels", None
        )  # shape: allow Avalanche-style attributes of a user dataset
        if targets is None and root_idx is not None:
            root_targets = getattr(
                root, "targets", None
            )  # shape: allow Avalanche-style attributes of a user dataset
            if root_targets is not None:
                targets = as_int_array(root_targets, "targets", "Experience")[root_idx]
            root_tasks = getattr(
                root, "targets_task_labels", None
            )  # shape: allow Avalanche-style attributes of a user dataset
            if tasks is None and root_tasks is not None:
                tasks = as_int_array(root_tasks, "task_labels", "Experience")[root_idx]
        if targets is None:
            raise TypeError(
                "The 'dataset' parameter of Experience.from_dataset must have a 'targets' "
                f"attribute (class label per sample). Got {type(dataset).__name__} instead."
            )
        source_data = None
        if ids is None and root_idx is not None:
            ids, source_data = root_idx, root
        elif ids is None:
            source_data = dataset
        return cls(
            targets=targets,
            ids=ids,
            task_labels=0 if tasks is None else tasks,
            source=source,
            index=index,
            data=dataset,
            source_data=source_data,
            payload=payload,
        )

    def as_exemplars(self, experience_index: int) -> ExemplarSet:
        n = len(self)
        return ExemplarSet(
            source=_source_column(self.source, n, "Experience"),
            ids=np.asarray(self.ids),
            targets=np.asarray(self.targets),
            task_labels=np.asarray(self.task_labels),
            experience=np.full(n, experience_index, dtype=np.int64),
            payload=self.payload,
        )


def _in_range(dataset: Any, ids: np.ndarray, name: str, owner: str) -> np.ndarray:
    """``ids``, if every one is a sample of ``dataset`` (else a ValueError naming one)."""
    n = len(dataset)
    bad = ids[(ids < 0) | (ids >= n)]
    if bad.size:
        raise ValueError(
            f"{owner}: source {name!r} has no sample with id {int(bad[0])} (it has {n} "
            f"samples; {bad.size} id(s) out of range). The dataset given for {name!r} is "
            "shorter than the ids refer to: pass the dataset the ids were taken from."
        )
    return ids


def resolve_inputs(
    rows: ExemplarSet,
    experience: Experience | None,
    sources: Mapping[str, Any] | None,
    owner: str,
) -> list[tuple[Any, np.ndarray]]:
    """Map exemplar rows to (indexable, positions) pairs to read their inputs from.

    Returns one pair per distinct source, plus the row order needed to put results back:
    ``[(dataset, keys, rows_index)]`` where ``dataset[key]`` is the row's item.
    """
    from .errors import MissingSourceError

    out = []
    for name in dict.fromkeys(rows.source.tolist()):
        sel = np.flatnonzero(rows.source == name)
        if sources is not None and name in sources:
            out.append((sources[name], _in_range(sources[name], rows.ids[sel], name, owner), sel))
        elif (
            experience is not None
            and name == experience.source
            and (experience.source_data is not None)
        ):
            data = experience.source_data
            out.append((data, _in_range(data, rows.ids[sel], name, owner), sel))
        elif experience is not None and name == experience.source and experience.data is not None:
            # Only rows of this experience are addressable by position.
            order = np.argsort(experience.ids, kind="stable")
            pos = np.searchsorted(experience.ids, rows.ids[sel], sorter=order)
            pos = np.minimum(pos, len(order) - 1)
            found = experience.ids[order[pos]] == rows.ids[sel]
            if not found.all():
                raise MissingSourceError(
                    f"{owner} needs the inputs of {int((~found).sum())} exemplars of source "
                    f"{name!r} that are not in this experience (e.g. id "
                    f"{int(rows.ids[sel][~found][0])}). Pass sources={{{name!r}: dataset}}."
                )
            out.append((experience.data, order[pos], sel))
        else:
            raise MissingSourceError(
                f"{owner} needs the inputs of exemplars of source {name!r} for feature-based "
                f"selection, but it was not provided. Pass sources={{{name!r}: dataset}} "
                "(a dataset indexable by sample id)."
            )
    return out

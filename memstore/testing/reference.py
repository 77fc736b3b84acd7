"""A plain re-statement of the selection semantics memstore reproduces.

Written from ``docs/SEMANTICS.md`` (Avalanche 0.6.0 ``storage_policy``,
including the "memstore decides" deviations) as small loops over Python lists of rows, with
no numpy and nothing shared with ``memstore``: the tests compare memstore's buffers against
these classes on random streams, so this file favours being obviously right over being fast.

Random numbers are drawn exactly as the reference does: one ``torch.Generator`` seeded with
the buffer's ``seed`` (equal to the global stream after ``torch.manual_seed(seed)``), one
``torch.rand(n)`` per reservoir update, ``torch.randperm(n)`` per random selection.
"""

from __future__ import annotations

from math import inf
from typing import NamedTuple

import torch

__all__ = [
    "Row",
    "Exp",
    "make_rows",
    "with_payloads",
    "group_lengths",
    "group_by_first_appearance",
    "herding_order",
    "herding_loop",
    "closest_to_center_order",
    "RefReservoir",
    "RefReservoirBuffer",
    "RefExperienceBalanced",
    "RefClassBalanced",
    "RefParametric",
    "random_stream",
    "assert_state_equal",
    "assert_run_state_equal",
]


class Row(NamedTuple):
    """One exemplar: where it comes from, its metadata, and its payload (an extra column,
    e.g. a row of logits as a tuple of floats; ``()`` when the stream has none)."""

    source: str
    id: int
    target: int
    task: int
    experience: int
    payload: tuple = ()


class Exp(NamedTuple):
    """The candidates of one update, as plain lists (``payloads``: one tuple per row)."""

    source: str
    ids: list[int]
    targets: list[int]
    tasks: list[int]
    index: int | None = None
    payloads: list[tuple] | None = None


def make_rows(exp: Exp, experience: int) -> list[Row]:
    return [
        Row(
            exp.source,
            exp.ids[i],
            exp.targets[i],
            exp.tasks[i],
            experience,
            () if exp.payloads is None else exp.payloads[i],
        )
        for i in range(len(exp.ids))
    ]


def with_payloads(ops: list[tuple[str, object]], payload_of) -> list[tuple[str, object]]:
    """``ops`` of :func:`random_stream` with every update's rows given ``payload_of(source,
    id)`` (a tuple) as payload: the extra column whose alignment the tests check."""
    out: list[tuple[str, object]] = []
    for kind, arg in ops:
        if kind == "update":
            arg = arg._replace(payloads=[payload_of(arg.source, i) for i in arg.ids])
        out.append((kind, arg))
    return out


def group_lengths(
    max_size: int, keys: list[int], adaptive: bool = True, total: int | None = None
) -> dict[int, int]:
    """Length of each group; the remainder goes to the first groups in ascending key order."""
    keys = sorted(keys)
    n = len(keys)
    if adaptive:
        lengths = [max_size // n] * n if n else []
        rem = max_size - sum(lengths)
        for i in range(rem if n else 0):
            lengths[i] += 1
    else:
        if n > total:
            raise ValueError(f"{n} groups, more than the declared {total}")
        lengths = [max_size // total] * n
    return dict(zip(keys, lengths, strict=True))


def group_by_first_appearance(values: list[int], rows: list[Row]) -> dict[int, list[Row]]:
    groups: dict[int, list[Row]] = {}
    for value, row in zip(values, rows, strict=True):
        if value not in groups:
            groups[value] = []
        groups[value].append(row)
    return groups


# -- selection orders ---------------------------------------------------------------------------
def herding_order(features: torch.Tensor) -> list[int]:
    """Avalanche's herding loop, literally (float32, full ordering, first index on ties)."""
    return herding_loop(features, len(features))


def herding_loop(
    features: torch.Tensor,
    stop: int,
    start: int = 0,
    selected: list[int] | None = None,
    current_center: torch.Tensor | None = None,
) -> list[int]:
    """Picks ``start``..``stop`` of Avalanche's loop, resumed from its state at ``start``
    (``selected`` picks so far and its running ``current_center``); the benchmark times it."""
    selected_indices = [] if selected is None else list(selected)
    center = features.mean(dim=0)
    if current_center is None:
        current_center = center * 0
    for i in range(start, stop):
        candidate_centers = current_center * i / (i + 1) + features / (i + 1)
        distances = pow(candidate_centers - center, 2).sum(dim=1)
        distances[selected_indices] = inf
        new_index = distances.argmin().tolist()
        selected_indices.append(new_index)
        current_center = candidate_centers[new_index]
    return selected_indices[len(selected or []) :]


def closest_to_center_order(features: torch.Tensor) -> list[int]:
    """Squared distance to the mean, ascending; ties by lower index (stable sort)."""
    center = features.mean(dim=0)
    distances = pow(features - center, 2).sum(dim=1)
    return torch.argsort(distances, stable=True).tolist()


# -- reservoir family ---------------------------------------------------------------------------
class RefReservoir:
    """Reservoir sampling: new rows first, then old; weights sorted descending (stable)."""

    def __init__(self, max_size: int, generator: torch.Generator) -> None:
        self.max_size = max_size
        self.generator = generator
        self.rows: list[Row] = []
        self.weights: list[float] = []

    def add(self, rows: list[Row]) -> None:
        new_weights = torch.rand(len(rows), generator=self.generator).tolist()
        all_weights = new_weights + self.weights
        all_rows = rows + self.rows
        positions = list(range(len(all_rows)))
        positions.sort(key=lambda p: -all_weights[p])  # Python's sort is stable
        keep = positions[: self.max_size]
        self.rows = [all_rows[p] for p in keep]
        self.weights = [all_weights[p] for p in keep]

    def resize(self, new_size: int) -> None:
        self.max_size = new_size
        self.rows = self.rows[:new_size]
        self.weights = self.weights[:new_size]


class RefReservoirBuffer:
    def __init__(self, max_size: int, seed: int = 0) -> None:
        self.group = RefReservoir(max_size, torch.Generator().manual_seed(seed))
        self.num_updates = 0

    @property
    def rows(self) -> list[Row]:
        return self.group.rows

    def update(self, exp: Exp) -> None:
        index = exp.index if exp.index is not None else self.num_updates
        self.group.add(make_rows(exp, index))
        self.num_updates += 1

    def resize(self, new_size: int) -> None:
        self.group.resize(new_size)


class _RefBalanced:
    def __init__(self, max_size: int, adaptive: bool, total: int | None, seed: int) -> None:
        self.max_size = max_size
        self.adaptive = adaptive
        self.total = total
        self.generator = torch.Generator().manual_seed(seed)
        self.groups: dict[int, RefReservoir] = {}
        self.num_updates = 0

    @property
    def rows(self) -> list[Row]:
        out: list[Row] = []
        for group in self.groups.values():
            out += group.rows
        return out

    def lengths(self, keys: list[int]) -> dict[int, int]:
        return group_lengths(self.max_size, keys, self.adaptive, self.total)

    def group_lengths(self) -> dict[int, int]:
        return {key: group.max_size for key, group in self.groups.items()}

    def resize(self, new_size: int) -> None:
        self.max_size = new_size
        lengths = self.lengths(list(self.groups))
        for key, group in self.groups.items():
            group.resize(lengths[key])


class RefExperienceBalanced(_RefBalanced):
    def update(self, exp: Exp) -> None:
        key = exp.index if exp.index is not None else self.num_updates
        lengths = self.lengths([*self.groups, key])
        group = RefReservoir(lengths[key], self.generator)
        group.add(make_rows(exp, key))
        self.groups[key] = group
        for k, g in self.groups.items():
            g.resize(lengths[k])
        self.num_updates += 1


class RefClassBalanced(_RefBalanced):
    def update(self, exp: Exp) -> None:
        index = exp.index if exp.index is not None else self.num_updates
        self.num_updates += 1
        rows = make_rows(exp, index)
        if not rows:
            return
        by_class = group_by_first_appearance([r.target for r in rows], rows)
        seen = list(self.groups) + [c for c in by_class if c not in self.groups]
        lengths = self.lengths(seen)
        for cls, class_rows in by_class.items():
            if cls in self.groups:
                self.groups[cls].add(class_rows)  # with its old max_size
                self.groups[cls].resize(lengths[cls])
            else:
                group = RefReservoir(lengths[cls], self.generator)
                group.add(class_rows)
                self.groups[cls] = group
        for key, group in self.groups.items():
            group.resize(lengths[key])


# -- parametric ---------------------------------------------------------------------------------
class RefParametric:
    """ParametricBuffer: re-selection on every update and resize.

    ``features`` maps (source, id) to the feature vector the model gives that sample (only
    needed for 'herding' and 'closest').
    """

    def __init__(
        self,
        max_size: int,
        groupby: str | None,
        strategy: str = "random",
        seed: int = 0,
        features: dict[tuple[str, int], list[float]] | None = None,
    ) -> None:
        self.max_size = max_size
        self.groupby = groupby
        self.strategy = strategy
        self.generator = torch.Generator().manual_seed(seed)
        self.features = features
        self.groups: dict[int, list[Row]] = {}
        self.sizes: dict[int, int] = {}
        self.num_updates = 0

    @property
    def rows(self) -> list[Row]:
        out: list[Row] = []
        for rows in self.groups.values():
            out += rows
        return out

    def group_lengths(self) -> dict[int, int]:
        return dict(self.sizes)

    def order(self, rows: list[Row]) -> list[int]:
        if self.strategy == "random":
            return torch.randperm(len(rows), generator=self.generator).tolist()
        if not rows:
            return []
        feats = torch.tensor([self.features[(r.source, r.id)] for r in rows], dtype=torch.float32)
        if self.strategy == "herding":
            return herding_order(feats)
        return closest_to_center_order(feats)

    def select(self, key: int, size: int) -> None:
        rows = self.groups[key]
        order = self.order(rows)
        self.groups[key] = [rows[p] for p in order[:size]]
        self.sizes[key] = size

    def key_of(self, row: Row) -> int:
        if self.groupby is None:
            return 0
        if self.groupby == "class":
            return row.target
        if self.groupby == "task":
            return row.task
        return row.experience

    def update(self, exp: Exp) -> None:
        index = exp.index if exp.index is not None else self.num_updates
        self.num_updates += 1
        rows = make_rows(exp, index)
        new_groups = group_by_first_appearance([self.key_of(r) for r in rows], rows)
        if not rows and self.groupby in (None, "experience"):
            # Avalanche's _make_groups: {0: data} / {experience: data}, even when data is empty.
            new_groups = {0 if self.groupby is None else index: []}
        seen = list(self.groups) + [k for k in new_groups if k not in self.groups]
        lengths = group_lengths(self.max_size, seen)
        for key, group_rows in new_groups.items():
            if key in self.groups:
                self.groups[key] = self.groups[key] + group_rows  # old rows, then new rows
                self.select(key, self.sizes[key])
                self.select(key, lengths[key])
            else:
                self.groups[key] = group_rows
                self.select(key, lengths[key])
        for key in self.groups:
            self.select(key, lengths[key])

    def resize(self, new_size: int) -> None:
        self.max_size = new_size
        if not self.groups:
            return
        lengths = group_lengths(new_size, list(self.groups))
        for key in self.groups:
            self.select(key, lengths[key])


# -- helpers for the tests: random streams and exact state comparison ----------------------------
def random_stream(
    rng,
    num_ops: int,
    *,
    sources: dict[str, int],
    max_rows: int = 12,
    num_classes: int = 5,
    num_tasks: int = 3,
    indices: str = "none",
    allow_empty: bool = True,
    resize_prob: float = 0.25,
    max_resize: int = 30,
) -> list[tuple[str, object]]:
    """Ops ``("update", Exp)`` / ``("resize", n)`` with globally unique (source, id) pairs.

    ``rng`` is a ``numpy.random.Generator``; ``sources`` maps names to their lengths;
    ``indices`` is ``"none"`` (buffers number updates), ``"sequential"`` or ``"shuffled"``.
    """
    unused = {name: [int(i) for i in rng.permutation(n)] for name, n in sources.items()}
    num_updates = num_ops
    index_pool = [int(i) for i in rng.permutation(3 * num_updates + 3)]
    ops: list[tuple[str, object]] = []
    count = 0
    for _ in range(num_ops):
        if ops and rng.random() < resize_prob:
            ops.append(("resize", int(rng.integers(1, max_resize + 1))))
            continue
        name = str(rng.choice(list(sources)))
        n = int(rng.integers(0 if allow_empty else 1, max_rows + 1))
        n = min(n, len(unused[name]))
        ids, unused[name] = unused[name][:n], unused[name][n:]
        targets = [int(t) for t in rng.integers(0, num_classes, size=n)]
        if rng.random() < 0.5:
            tasks = [int(rng.integers(0, num_tasks))] * n
        else:
            tasks = [int(t) for t in rng.integers(0, num_tasks, size=n)]
        index = {"none": None, "sequential": count, "shuffled": index_pool[count]}[indices]
        ops.append(("update", Exp(name, ids, targets, tasks, index)))
        count += 1
    return ops


def assert_state_equal(a, b, path: str = "state") -> None:
    """Exact equality of two state dicts: same keys, arrays equal in dtype, shape and values."""
    import numpy as np

    if isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict) and isinstance(b, dict), f"{path}: {type(a)} vs {type(b)}"
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_state_equal(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), f"{path}: types differ"
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} vs {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} vs {b.shape}"
        assert np.array_equal(a, b), f"{path}: values differ"
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{path}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_state_equal(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} vs {b!r}"


def assert_run_state_equal(a, b, path: str = "run_state") -> None:
    """Exact equality of two run states (``Store.run_state``): same types everywhere (tuple
    vs list, torch vs numpy), keys in the same order, tensors and arrays equal in dtype,
    shape and bytes (bfloat16 and NaN included), NaN floats equal to NaN."""
    import numpy as np

    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(
            a.view(torch.uint8) if a.dim() else a, b.view(torch.uint8) if b.dim() else b
        ), path
    elif isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_run_state_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_run_state_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, path

"""Where the rows of an Avalanche dataset come from: (root dataset, index in it).

An experience's ``AvalancheDataset`` is a chain of subsets and concatenations (Avalanche's
``FlatData`` levels, ``torch.utils.data.Subset`` and ``ConcatDataset``) over the datasets the
benchmark was built from. Following the chain down gives each row its *root* — the first
dataset that is none of those — and its index there, so experiences cut from one benchmark
share one id space whatever subsets, shuffles or online splits made them.

The chain is also where the transforms live: every Avalanche level may hold transform
groups. :class:`RootView` rebuilds, over any root ids, the transform levels the experience
applies to that root, so old exemplars are read from the root with the experience's
transforms and with their own recorded targets and task labels.

Avalanche has no public API for its dataset tree; this is the one module that reads its
private attributes (``_flat_data``, ``_datasets``, ``_indices``, ``_cumulative_sizes``, the
transform groups), each marked where it does.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.utils import make_avalanche_dataset
from avalanche.benchmarks.utils.classification_dataset import TaskAwareClassificationDataset
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.benchmarks.utils.flat_data import FlatData
from avalanche.benchmarks.utils.transform_groups import EmptyTransformGroups

__all__ = ["RootView", "ResolvedRows", "empty_dataset", "resolve_rows", "root_name"]

# Avalanche's private FlatData class that carries transform groups, found without importing
# its private name.
_WITH_TRANSFORMS = type(AvalancheDataset([])._flat_data)  # shape: allow Avalanche's tree


@dataclass
class RootView:
    """A root dataset and the transform levels an experience applies over it (top first)."""

    root: Any
    levels: list[tuple[Any, Any]] = field(default_factory=list)
    group: str = "train"

    def dataset(self, ids: np.ndarray, targets: np.ndarray | None, tasks: np.ndarray) -> Any:
        """An ``AvalancheDataset`` of ``root[ids]`` with the transforms, targets and tasks."""
        data = self._transformed(torch.utils.data.Subset(self.root, [int(i) for i in ids]))
        attributes = [
            DataAttribute([int(t) for t in tasks], "targets_task_labels", use_in_getitem=True)
        ]
        if targets is not None:
            attributes.insert(0, DataAttribute([int(t) for t in targets], "targets"))
        return TaskAwareClassificationDataset([data], data_attributes=attributes)

    def reader(self) -> Any:
        """The whole root with the transforms, ``reader[id]`` (for feature extraction)."""
        return self._transformed(self.root)

    def _transformed(self, data: Any) -> Any:
        for frozen, groups in reversed(self.levels):
            data = make_avalanche_dataset(
                data,
                transform_groups=copy.copy(groups),
                frozen_transform_groups=copy.copy(frozen),
            )
        return data.with_transforms(self.group) if self.levels else data


def empty_dataset() -> Any:
    """An empty task-aware classification dataset (the buffer before any update)."""
    return TaskAwareClassificationDataset([])


@dataclass
class ResolvedRows:
    """Per row of a dataset: which root (``views[root_of_row[i]]``) and the index there."""

    views: list[RootView]
    root_of_row: np.ndarray
    ids: np.ndarray


def _as_index_array(indices: Any) -> np.ndarray:
    if isinstance(indices, np.ndarray):
        return indices.astype(np.int64, copy=False)
    return np.fromiter((int(i) for i in indices), dtype=np.int64, count=len(indices))


def _transform_level(node: Any) -> tuple[Any, Any] | None:
    frozen = node._frozen_transform_groups  # shape: allow Avalanche's transform levels
    groups = node._transform_groups  # shape: allow Avalanche's transform levels
    if isinstance(frozen, EmptyTransformGroups) and isinstance(groups, EmptyTransformGroups):
        return None
    return frozen, groups


def _children(node: Any, pos: np.ndarray) -> tuple[list[Any], np.ndarray, np.ndarray, Any]:
    """(children, child of each row, index in that child, transform level) of one node."""
    if isinstance(node, FlatData):
        indices = node._indices  # shape: allow Avalanche's dataset tree
        if indices is not None:
            pos = _as_index_array(indices)[pos]
        children = list(node._datasets)  # shape: allow Avalanche's dataset tree
        cum = np.asarray(node._cumulative_sizes, dtype=np.int64)  # shape: allow its tree
        level = _transform_level(node) if isinstance(node, _WITH_TRANSFORMS) else None
    elif isinstance(node, torch.utils.data.Subset):
        children = [node.dataset]
        pos = np.asarray(node.indices, dtype=np.int64)[pos]
        cum, level = np.array([len(node.dataset)], dtype=np.int64), None
    else:  # ConcatDataset
        children = list(node.datasets)
        cum, level = np.asarray(node.cumulative_sizes, dtype=np.int64), None
    which = np.searchsorted(cum, pos, side="right")
    offsets = np.concatenate([[0], cum[:-1]]).astype(np.int64)
    return children, which, pos - offsets[which] if pos.size else pos, level


def _is_chain(node: Any) -> bool:
    return isinstance(
        node, (FlatData, torch.utils.data.Subset, torch.utils.data.ConcatDataset)
    ) and not isinstance(node, AvalancheDataset)


def resolve_rows(dataset: Any) -> ResolvedRows:
    """Resolve every row of ``dataset`` to (root, index in root). Cost O(rows · depth)."""
    views: list[RootView] = []
    root_of_row = np.zeros(len(dataset), dtype=np.int64)
    ids = np.zeros(len(dataset), dtype=np.int64)
    group = "train"
    top = dataset
    if isinstance(dataset, AvalancheDataset):
        top = dataset._flat_data  # shape: allow Avalanche's dataset tree
        level = _transform_level(top)
        group = level[1].current_group if level is not None else group
    # Work list of (node, rows of the dataset, their positions in node, levels above).
    work = [(top, np.arange(len(dataset), dtype=np.int64), np.arange(len(dataset)), [])]
    while work:
        node, rows, pos, levels = work.pop()
        if isinstance(node, AvalancheDataset):
            node = node._flat_data  # shape: allow Avalanche's dataset tree
        if not _is_chain(node):
            found = [i for i, v in enumerate(views) if v.root is node]
            if found:
                k = found[0]
            else:
                views.append(RootView(node, levels, group))
                k = len(views) - 1
            root_of_row[rows], ids[rows] = k, pos
            continue
        children, which, local, level = _children(node, pos)
        below = levels if level is None else [*levels, level]
        for c in np.unique(which).tolist():
            sel = which == c
            work.append((children[c], rows[sel], local[sel], below))
    return ResolvedRows(views, root_of_row, ids)


def _digest(h: Any, item: Any) -> None:
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, (tuple, list)):
        for x in item:
            _digest(h, x)
    elif isinstance(item, dict):
        for k in sorted(item, key=str):
            h.update(str(k).encode())
            _digest(h, item[k])
    elif isinstance(item, np.ndarray):
        h.update(f"{item.dtype}{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, (bytes, str, int, float, bool, np.generic)):
        h.update(repr(item).encode())
    else:
        try:
            arr = np.asarray(item)
        except Exception:  # an item numpy cannot read: its type only
            arr = None
        if arr is not None and arr.dtype != object:
            _digest(h, arr)
        else:
            h.update(type(item).__name__.encode())


def root_name(root: Any) -> str:
    """A source name for a root that is the same in every process: ``Type-len-digest``.

    The digest hashes the root's first, middle and last items (O(1) reads), so two roots of
    one type and length but different content get different names.
    """
    n = len(root)
    h = hashlib.blake2b(digest_size=6)
    for i in sorted({0, n // 2, n - 1}) if n else []:
        _digest(h, root[i])
    return f"{type(root).__name__}-{n}-{h.hexdigest()}"

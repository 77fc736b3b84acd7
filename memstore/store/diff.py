"""What changed in a buffer between two commits (``Store.diff``, ``memstore diff``).

An exemplar is a ``(source name, id)`` pair; the exemplars *added* from commit ``a`` to
commit ``b`` are those of ``b`` not in ``a`` (a set difference), *removed* the reverse. The
result is JSON-able (a ``dict`` of lists, str, int and ``None``):

```
{"buffer": "replay",
 "a": {"seq": 0, "id": "...", "time": "...", "message": "...", "sizes": {"rows": 39, ...}},
 "b": {...},                                     # the two commits, as Store.log lists them
 "added":   [["a", 3], ["b", 17], ...],          # [source, id], sorted by source then id
 "removed": [...],
 "groups": {5: {"size": [4, 3], "max_size": [4, 3],   # [at a, at b]; None where absent
                "added": [[source, id], ...], "removed": [...]}, ...},
 "params": {"policy": None | [class at a, class at b],
            "strategy": None | [strategy at a, strategy at b],  # {"class", "params"} or None
            "changed": {param: [at a, at b], ...}},   # None where a side lacks the param
 "sources": {"added": [name, ...], "removed": [name, ...],
             "fingerprints": {name: [at a, at b], ...}}}   # recorded fingerprint changes
```

``groups`` holds every group of either commit, keyed by the group key the buffer records
(class, task or experience id; JSON turns the keys into strings): ``b``'s groups in ``b``'s
order, then those only ``a`` had, in ``a``'s order. Per group the difference is of
``(group, source, id)``, so an exemplar that changed group (only possible when the policy or
its ``groupby`` changed) is removed from one group and added to another there, while the
top-level lists do not mention it. ``policy`` / ``strategy`` are ``None`` when unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import checks
from .history import History, commit_of

__all__ = ["diff_commits"]


def diff_commits(history: History, name: str, a: int, b: int) -> dict[str, Any]:
    """The changes from commit ``a`` to commit ``b`` of buffer ``name`` (schema above).

    Commits are seqs as ``Store.log`` lists them; a missing or pruned one is a
    :class:`~memstore.errors.BufferNotFoundError`, a damaged one a
    :class:`~memstore.errors.CorruptStoreError`.

    Cost: reads and checks both snapshots; O((n_a + n_b) log(n_a + n_b)) in their rows,
    vectorised (Python work only per group and per output pair).
    """
    a = checks.int_at_least(a, "a", "Store.diff", 0)
    b = checks.int_at_least(b, "b", "Store.diff", 0)
    manifest_a, state_a = history.checked(name, a, "Store.diff")
    manifest_b, state_b = history.checked(name, b, "Store.diff")
    names = sorted(set(manifest_a["source_names"]) | set(manifest_b["source_names"]))
    cols_a, cols_b = _codes(state_a, names), _codes(state_b, names)
    added = _sorted_pairs(_minus(cols_b[1:], cols_a[1:]), cols_b[1:], names)
    removed = _sorted_pairs(_minus(cols_a[1:], cols_b[1:]), cols_a[1:], names)
    return {
        "buffer": name,
        "a": commit_of(manifest_a).__dict__,
        "b": commit_of(manifest_b).__dict__,
        "added": added,
        "removed": removed,
        "groups": _groups(manifest_a, cols_a, manifest_b, cols_b, names),
        "params": _params(manifest_a, manifest_b),
        "sources": _sources(manifest_a, manifest_b),
    }


def _codes(state: Mapping[str, Any], names: list[str]) -> tuple[np.ndarray, ...]:
    """``(group, source code, id)`` columns, source codes indexing the sorted ``names``."""
    cols = state["columns"]
    lut = np.searchsorted(np.asarray(names), np.asarray(state["source_names"], dtype=str))
    code = lut.astype(np.int64)[np.asarray(cols["source"], dtype=np.int64)]
    return (
        np.asarray(cols["group"], dtype=np.int64),
        code,
        np.asarray(cols["ids"], dtype=np.int64),
    )


def _rows(cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """The rows of ``cols`` as one opaque (void) value each, for set membership."""
    stacked = np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.int64)
    return stacked.view(np.dtype((np.void, 8 * len(cols)))).ravel()


def _minus(x: tuple[np.ndarray, ...], y: tuple[np.ndarray, ...]) -> np.ndarray:
    """Mask of the rows of ``x`` that are not rows of ``y``."""
    if not len(x[0]):
        return np.zeros(0, dtype=bool)
    return ~np.isin(_rows(x), _rows(y))


def _order(cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """Indices sorting ``cols`` lexicographically (first column first), duplicates dropped."""
    order = np.lexsort(cols[::-1])
    if len(order) > 1:
        srt = np.stack([c[order] for c in cols])
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = (srt[:, 1:] != srt[:, :-1]).any(axis=0)
        order = order[keep]
    return order


def _format(codes: np.ndarray, ids: np.ndarray, names: list[str]) -> list[list[Any]]:
    src = np.asarray(names, dtype=object)[codes] if len(codes) else []
    return [[s, i] for s, i in zip(list(src), ids.tolist(), strict=True)]


def _sorted_pairs(mask: np.ndarray, cols: tuple[np.ndarray, ...], names: list[str]) -> list:
    code, ids = cols[0][mask], cols[1][mask]
    order = _order((code, ids))
    return _format(code[order], ids[order], names)


def _per_group(mask: np.ndarray, cols: tuple[np.ndarray, ...], names: list[str]) -> dict:
    """``{group key: [[source, id], ...]}`` of the masked rows, each list sorted."""
    picked = tuple(c[mask] for c in cols)
    order = _order(picked)
    group, code, ids = (c[order] for c in picked)
    keys, starts = np.unique(group, return_index=True)
    bounds = np.append(starts, len(group))
    return {
        k: _format(code[s:e], ids[s:e], names)
        for k, s, e in zip(keys.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    }


def _groups(
    manifest_a: Mapping[str, Any],
    cols_a: tuple[np.ndarray, ...],
    manifest_b: Mapping[str, Any],
    cols_b: tuple[np.ndarray, ...],
    names: list[str],
) -> dict[int, dict[str, Any]]:
    added = _per_group(_minus(cols_b, cols_a), cols_b, names)
    removed = _per_group(_minus(cols_a, cols_b), cols_a, names)
    recorded = []
    for parsed in (manifest_a, manifest_b):
        g = parsed["groups"]
        recorded.append(
            {k: (n, m) for k, n, m in zip(g["keys"], g["sizes"], g["max_sizes"], strict=True)}
        )
    keys = list(recorded[1]) + [k for k in recorded[0] if k not in recorded[1]]
    return {
        k: {
            "size": [r[k][0] if k in r else 0 for r in recorded],
            "max_size": [r[k][1] if k in r else None for r in recorded],
            "added": added.get(k, []),
            "removed": removed.get(k, []),
        }
        for k in keys
    }


def _params(manifest_a: Mapping[str, Any], manifest_b: Mapping[str, Any]) -> dict[str, Any]:
    def change(x: Any, y: Any) -> list[Any] | None:
        return None if x == y else [x, y]

    pa, pb = manifest_a["params"], manifest_b["params"]
    keys = list(pa) + [k for k in pb if k not in pa]
    return {
        "policy": change(manifest_a["policy"], manifest_b["policy"]),
        "strategy": change(manifest_a.get("strategy"), manifest_b.get("strategy")),
        "changed": {k: [pa.get(k), pb.get(k)] for k in sorted(keys) if pa.get(k) != pb.get(k)},
    }


def _sources(manifest_a: Mapping[str, Any], manifest_b: Mapping[str, Any]) -> dict[str, Any]:
    na, nb = set(manifest_a["source_names"]), set(manifest_b["source_names"])
    ra, rb = manifest_a.get("sources", {}), manifest_b.get("sources", {})
    fingerprints = {}
    for src in sorted(na & nb):
        fa = ra.get(src, {}).get("fingerprint")
        fb = rb.get(src, {}).get("fingerprint")
        if fa != fb:
            fingerprints[src] = [fa, fb]
    return {"added": sorted(nb - na), "removed": sorted(na - nb), "fingerprints": fingerprints}

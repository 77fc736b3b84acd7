"""Feature-based selection across ranks: groups have owners; rows travel to them only.

For a :class:`~memstore.policies.ParametricBuffer` whose strategy needs features (herding,
closest-to-center): (1) every rank gathers each rank's group summary — ``{key: [rows,
smallest id]}``, a few bytes per group — so all ranks know every group's size and the order
in which a single process meets the groups (first appearance in ascending id); (2) each group
is assigned an owner rank (largest groups first, to the least-loaded rank); (3) each rank
computes the features of the rows it holds and sends each row's metadata (id, target, task)
and features, as int64 words (see :mod:`.wire`), to its group's owner only (``gather``); the
owner sorts them into canonical order (ascending id — the order a single-process update of
the union sees) and computes its groups' old exemplars' features from ``sources``; (4) the
owner runs, per group, the selections ``ParametricBuffer.update`` runs (old size, then the
new length, then the final re-selection); (5) the kept rows — at most ``max_size`` in all:
old positions, or the new rows' metadata and holder rank — are gathered by every rank;
(6) the payload bytes of the kept new rows only are gathered from the ranks that hold them,
and every rank installs the new groups with ``load_state_dict``. No rank receives the
metadata of rows outside its own groups: per update a rank receives O(rows of its groups +
world × kept rows of one owner), not O(all rows). The result — payload included — equals a
single-process update of the canonical union when features of a sample do not depend on the
batch it is computed in. Ids held by two ranks are refused before any of this, by
:func:`memstore.distributed.disjoint.check_ids_disjoint` in ``update``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore.experiences import PAYLOAD_PREFIX, ExemplarSet, Experience, resolve_inputs
from memstore.policies import ParametricBuffer
from memstore.policies.base import first_appearance_groups

from .comm import agree, all_gather_rows, gather_rows_to
from .wire import payload_words, words_payload

__all__ = ["feature_update", "assign_owners", "selection_sequence"]

_OWNER = "memstore.distributed.update"


def assign_owners(sizes: dict[int, int], world: int) -> dict[int, int]:
    """Group key -> owner rank: largest groups first, each to the least-loaded rank (lowest
    rank on ties). Deterministic; balances the O(k·N·d) selection work by rows."""
    load = np.zeros(world, dtype=np.int64)
    owners = {}
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        r = int(np.argmin(load))
        owners[key] = r
        load[r] += sizes[key]
    return owners


def selection_sequence(strategy: Any, features: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Positions kept after selecting, in turn, the first ``size`` of each of ``sizes`` (each
    selection runs on the previous one's result, as ``ParametricBuffer`` does)."""
    order = np.arange(features.shape[0], dtype=np.int64)
    for size in sizes:
        picked = strategy.select(
            len(order), features=features[order], generator=None, k=min(size, len(order))
        )
        order = order[picked]
    return order


def _features(strategy: Any, rows: ExemplarSet, experience: Experience | None, sources: Any):
    if len(rows) == 0:
        return None
    out = None
    for dataset, keys, positions in resolve_inputs(rows, experience, sources, _OWNER):
        feats = np.asarray(strategy.compute_features(dataset, keys), dtype=np.float32)
        if out is None:
            out = np.empty((len(rows), feats.shape[1]), dtype=np.float32)
        out[positions] = feats
    return out


def _keys(buffer: ParametricBuffer, targets, tasks, index: int) -> np.ndarray:
    if buffer.groupby is None:
        return np.zeros(len(targets), dtype=np.int64)
    if buffer.groupby == "class":
        return targets
    if buffer.groupby == "task":
        return tasks
    return np.full(len(targets), index, dtype=np.int64)


def _summary(keys: np.ndarray, ids: np.ndarray) -> dict[int, list[int]]:
    """``{key: [rows, smallest id]}`` of this rank's rows (``ids`` ascending): what the other
    ranks need to size, order and assign the groups."""
    uniq, first, count = np.unique(keys, return_index=True, return_counts=True)
    return {int(k): [int(c), int(ids[f])] for k, f, c in zip(uniq, first, count, strict=True)}


def _first_appearance(summaries: list[dict[int, list[int]]]) -> list[int]:
    """The keys of all ranks' rows in the order a single process meets them in the canonical
    union (ascending id): by each key's smallest id (ties, only with repeated ids: by key)."""
    smallest: dict[int, int] = {}
    for summary in summaries:
        for key, (_, low) in summary.items():
            smallest[key] = min(smallest.get(key, low), low)
    return sorted(smallest, key=lambda k: (smallest[k], k))


def _kept_block(key: int, sel: np.ndarray, n_old: int, meta: np.ndarray, holder: np.ndarray):
    """The kept rows of one group in selection order, as int64 rows (key, old position or -1,
    id, target, task, holder rank; the last four -1 for an old row)."""
    out = np.full((len(sel), 6), -1, dtype=np.int64)
    out[:, 0] = key
    old = sel < n_old
    out[old, 1] = sel[old]
    new = sel[~old] - n_old
    out[~old, 2:5] = meta[new, :3]
    out[~old, 5] = holder[new]
    return out


def feature_update(
    buffer: ParametricBuffer, experience: Experience, rows: ExemplarSet, sources: Any, group: Any
) -> None:
    """The feature-based path of :func:`memstore.distributed.update` (see the module doc)."""
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    strategy = buffer.selection_strategy
    state = buffer.state_dict()
    index = int(experience.index if experience.index is not None else state["num_updates"])
    order = np.argsort(rows.ids, kind="stable")  # my rows in canonical order
    meta = np.stack([rows.ids, rows.targets, rows.task_labels], axis=1).astype(np.int64)[order]
    keys = _keys(buffer, meta[:, 1], meta[:, 2], index)
    summaries = agree(None, _summary(keys, meta[:, 0]), group, _OWNER)
    new_keys = _first_appearance(summaries)
    if not new_keys and buffer.groupby in (None, "experience"):
        new_keys = [0 if buffer.groupby is None else index]  # an empty experience's group
    held = dict(buffer.buffer_groups)
    every = list(dict.fromkeys([*held, *new_keys]))
    lengths = dict(zip(sorted(every), buffer.get_group_lengths(len(every)), strict=True))
    old = {k: g.buffer for k, g in held.items()}
    per_rank = np.array([[s.get(k, [0])[0] for k in every] for s in summaries], dtype=np.int64)
    sizes = {k: len(old.get(k, ())) + int(n) for k, n in zip(every, per_rank.sum(0), strict=True)}
    owners = assign_owners(sizes, world)
    # rows each rank sends to each owner, known to all from the summaries
    sent = per_rank @ np.eye(world, dtype=np.int64)[[owners[k] for k in every]]
    uniq, inverse = np.unique(keys, return_inverse=True)
    row_owner = np.array([owners[int(k)] for k in uniq], dtype=np.int64)[inverse.reshape(-1)]
    error, feats = None, None
    try:
        feats = _features(strategy, rows.take(order), experience, sources)
    except Exception as err:
        error = err
    dims = agree(error, -1 if feats is None else int(feats.shape[1]), group, _OWNER)
    dim = max(dims + [0])
    if feats is None:
        feats = np.zeros((0, dim), dtype=np.float32)
    block = np.concatenate([meta, payload_words({"f": feats}, len(feats))], axis=1)
    mine, from_rank = block[:0], np.empty(0, dtype=np.int64)
    for dst in range(world):
        got = gather_rows_to(
            block[row_owner == dst], sent[:, dst].tolist(), dst, group, f"{_OWNER} (rows to owners)"
        )
        if got is not None:
            mine, from_rank = got, np.repeat(np.arange(world), sent[:, dst])
    error, kept = None, np.zeros((0, 6), dtype=np.int64)
    try:
        # rows arrived by sender, each in canonical order: merge into canonical order
        canon = np.argsort(mine[:, 0], kind="stable")
        table, holder = mine[canon], from_rank[canon]
        table_f = words_payload(table[:, 3:], {"f": feats})["f"]
        new_pos = dict(first_appearance_groups(_keys(buffer, table[:, 1], table[:, 2], index)))
        parts = [kept]
        for key in every:
            if owners[key] != rank:
                continue
            pos = new_pos.get(key, np.empty(0, dtype=np.int64))
            old_f = _features(strategy, old[key], experience, sources) if key in old else None
            f_parts = [f for f in (old_f, table_f[pos] if len(pos) else None) if f is not None]
            f = np.concatenate(f_parts) if f_parts else np.zeros((0, dim), dtype=np.float32)
            if key in held and key in new_pos:
                seq = [held[key].max_size, lengths[key], lengths[key]]
            else:
                seq = [lengths[key]] * (2 if key in new_pos else 1)
            sel = selection_sequence(strategy, f, seq)
            parts.append(_kept_block(key, sel, len(old.get(key, ())), table[pos], holder[pos]))
        kept = np.concatenate(parts)
    except Exception as err:
        error = err
    counts = agree(error, len(kept), group, _OWNER)
    kept = all_gather_rows(kept, counts, group, f"{_OWNER} (kept rows)")
    payload = _kept_payload(rows, order, meta[:, 0], kept, world, group)
    by_key = dict(first_appearance_groups(kept[:, 0]))  # each key's rows in selection order
    groups = []
    for key in every:
        at = by_key.get(key, np.empty(0, dtype=np.int64))
        entries = kept[at]
        new = entries[:, 1] < 0
        n_new = int(new.sum())
        new_rows = ExemplarSet(
            np.full(n_new, experience.source),
            entries[new, 2],
            entries[new, 3],
            entries[new, 4],
            np.full(n_new, index, dtype=np.int64),
            payload={k: v[at[new]] for k, v in payload.items()},
        )
        held_rows = old.get(key, ExemplarSet.empty())
        take = entries[:, 1].copy()  # old rows keep their position; kept new rows follow
        take[new] = len(held_rows) + np.arange(n_new)
        groups.append((key, lengths[key], ExemplarSet.concat([held_rows, new_rows]).take(take)))
    install(buffer, state, groups)


def _kept_payload(
    rows: ExemplarSet,
    order: np.ndarray,
    sorted_ids: np.ndarray,
    kept: np.ndarray,
    world: int,
    group: Any,
) -> dict[str, np.ndarray]:
    """The payload of the kept rows (``kept`` as :func:`_kept_block` lays them out; old rows
    get zero words, unused), gathered from the ranks that hold them (``sorted_ids``: this
    rank's ids ascending, ``order`` their positions in ``rows``). Only these rows' payload
    bytes cross the wire: at most ``max_size`` rows per update; none without payload (every
    rank has the same schema, agreed before)."""
    import torch.distributed as dist

    if not rows.payload:
        return {}
    rank = dist.get_rank(group)
    new = np.flatnonzero(kept[:, 1] < 0)
    holder = kept[new, 5]
    local = order[np.searchsorted(sorted_ids, kept[new[holder == rank], 2])]
    sent = np.bincount(holder, minlength=world).tolist()
    mine = rows.take(local)
    words = all_gather_rows(
        payload_words(mine.payload, len(mine)), sent, group, f"{_OWNER} (payload)"
    )
    out = np.zeros((len(kept), words.shape[1]), dtype=np.int64)
    out[new[np.argsort(holder, kind="stable")]] = words  # rows arrive by holder rank
    return words_payload(out, rows.payload)


def install(buffer: ParametricBuffer, state: dict[str, Any], groups: list) -> None:
    """Load ``groups`` [(key, max_size, rows)] into ``buffer`` as its state after one update."""
    rows = ExemplarSet.concat([r for _, _, r in groups])
    names, codes = np.unique(rows.source, return_inverse=True)
    columns = {
        c: np.asarray(v, dtype=np.int64).copy() for c, v in rows.columns().items() if c != "source"
    }
    columns["source"] = codes.astype(np.int32).reshape(-1)
    columns.update({PAYLOAD_PREFIX + k: np.array(v, copy=True) for k, v in rows.payload.items()})
    columns["group"] = np.concatenate(
        [np.full(len(r), k, dtype=np.int64) for k, _, r in groups] or [np.empty(0, np.int64)]
    )
    new_state = dict(state)
    new_state.update(
        num_updates=int(state["num_updates"]) + 1,
        source_names=[str(n) for n in names],
        columns=columns,
        groups={
            "keys": np.array([k for k, _, _ in groups], dtype=np.int64),
            "max_sizes": np.array([s for _, s, _ in groups], dtype=np.int64),
        },
    )
    buffer.load_state_dict(new_state)

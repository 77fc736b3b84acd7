"""Feature-based selection across ranks: groups have owners; features travel to them only.

For a :class:`~memstore.policies.ParametricBuffer` whose strategy needs features (herding,
closest-to-center): (1) the rows' metadata is gathered on every rank (ids, targets, task
labels), so every rank knows every group's contents in canonical order — old exemplars, then
new rows in ascending id; (2) each group is assigned an owner rank (largest groups first, to
the least-loaded rank); (3) each rank computes the features of the rows it holds and sends
each group's to its owner (``gather``), the owner computes its groups' old exemplars from
``sources``; (4) the owner runs, per group, the selections ``ParametricBuffer.update`` runs
(old size, then the new length, then the final re-selection); (5) the kept positions —
at most ``max_size`` ints — are gathered by every rank; (6) the payload bytes of the kept new
rows only (at most ``max_size`` rows in all, packed as int64 words, see :mod:`.wire`) are
gathered from the ranks that hold them, and every rank installs the new groups with
``load_state_dict``. The result — payload included — equals a single-process update of the
canonical union when features of a sample do not depend on the batch it is computed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore.experiences import PAYLOAD_PREFIX, ExemplarSet, Experience, resolve_inputs
from memstore.policies import ParametricBuffer
from memstore.policies.base import first_appearance_groups

from .comm import CollectiveError, agree, all_gather_rows, all_gather_small, gather_rows_to
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


def check_disjoint(ids: np.ndarray) -> None:
    """Refuse (on every rank alike: all see the same union) ids that two ranks both hold."""
    srt = np.sort(ids)
    dup = srt[1:][srt[1:] == srt[:-1]]
    if dup.size:
        raise CollectiveError(
            f"{_OWNER}: ranks passed the same sample ids {np.unique(dup)[:5].tolist()} "
            f"({dup.size} repeats). Each rank must pass a disjoint part of the experience "
            "(e.g. its DistributedSampler shard, or whole shards)."
        )


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


def feature_update(
    buffer: ParametricBuffer, experience: Experience, rows: ExemplarSet, sources: Any, group: Any
) -> None:
    """The feature-based path of :func:`memstore.distributed.update` (see the module doc)."""
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    strategy = buffer.selection_strategy
    state = buffer.state_dict()
    index = experience.index if experience.index is not None else int(state["num_updates"])
    counts = agree(None, len(rows), group, _OWNER)
    block = np.stack([rows.ids, rows.targets, rows.task_labels], axis=1).astype(np.int64)
    gathered = all_gather_rows(block, counts, group, f"{_OWNER} (rows)")
    from_rank = np.repeat(np.arange(world), counts)
    canon = np.argsort(gathered[:, 0], kind="stable")
    union = gathered[canon]
    check_disjoint(union[:, 0])
    keys = _keys(buffer, union[:, 1], union[:, 2], int(index))
    by_group = first_appearance_groups(keys)
    if not by_group and buffer.groupby in (None, "experience"):
        by_group = [(0 if buffer.groupby is None else int(index), np.empty(0, dtype=np.int64))]
    held = dict(buffer.buffer_groups)
    every = list(dict.fromkeys([*held, *(k for k, _ in by_group)]))
    lengths = dict(zip(sorted(every), buffer.get_group_lengths(len(every)), strict=True))
    new_pos = dict(by_group)
    old = {k: g.buffer for k, g in held.items()}
    sizes = {k: len(old.get(k, ())) + len(new_pos.get(k, ())) for k in every}
    owners = assign_owners(sizes, world)
    # canonical position -> (owner); features of my rows go to their group's owner
    row_owner = np.empty(len(union), dtype=np.int64)
    for k, pos in by_group:
        row_owner[pos] = owners[k]
    mine_canon = np.flatnonzero(from_rank[canon] == rank)  # my rows, in canonical order
    my_local = canon[mine_canon] - int(np.sum(counts[:rank]))  # their positions in `rows`
    error, feats = None, None
    try:
        feats = _features(strategy, rows.take(my_local), experience, sources)
    except Exception as err:
        error = err
    dims = agree(error, -1 if feats is None else int(feats.shape[1]), group, _OWNER)
    dim = max(dims + [0])
    if feats is None:
        feats = np.zeros((0, dim), dtype=np.float32)
    table = None
    # how many rows each rank sends to each owner: known to all from the metadata
    sent = np.zeros((world, world), dtype=np.int64)
    np.add.at(sent, (from_rank[canon], row_owner), 1)
    for dst in range(world):
        to_dst = row_owner[mine_canon] == dst
        n_to = sent[:, dst].tolist()
        got = gather_rows_to(feats[to_dst], n_to, dst, group, f"{_OWNER} (features)")
        if got is not None:
            # rows arrive by source rank, each in canonical order: map back to canonical
            senders = [
                np.flatnonzero((from_rank[canon] == r) & (row_owner == dst)) for r in range(world)
            ]
            received_pos = np.concatenate(senders) if senders else np.empty(0, np.int64)
            table = np.zeros((len(union), dim), dtype=np.float32)
            table[received_pos] = got
    error, kept = None, {}
    try:
        for key in every:
            if owners[key] != rank:
                continue
            pos = new_pos.get(key, np.empty(0, dtype=np.int64))
            old_f = _features(strategy, old[key], experience, sources) if key in old else None
            parts = [f for f in (old_f, table[pos] if len(pos) else None) if f is not None]
            f = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
            if key in held and key in new_pos:
                seq = [held[key].max_size, lengths[key], lengths[key]]
            else:
                seq = [lengths[key]] * (2 if key in new_pos else 1)
            kept[key] = selection_sequence(strategy, f, seq).tolist()
    except Exception as err:
        error = err
    agree(error, None, group, _OWNER)
    results: dict[int, np.ndarray] = {}
    for part in all_gather_small(kept, group, f"{_OWNER} (selected ids)"):
        results.update({k: np.asarray(v, dtype=np.int64) for k, v in part.items()})
    # canonical positions of the kept new rows, per group in selection order
    picked = {}
    for key in every:
        pos, sel = new_pos.get(key, np.empty(0, dtype=np.int64)), results[key]
        picked[key] = pos[sel[sel >= len(old.get(key, ()))] - len(old.get(key, ()))]
    kept_pos = np.sort(np.concatenate([np.empty(0, np.int64), *picked.values()]))
    payload = _kept_payload(rows, kept_pos, from_rank[canon], canon, counts, group)
    groups = []
    for key in every:
        at, sel = picked[key], results[key]
        where = np.searchsorted(kept_pos, at)
        new_rows = ExemplarSet(
            np.full(len(at), experience.source),
            union[at, 0],
            union[at, 1],
            union[at, 2],
            np.full(len(at), index, dtype=np.int64),
            payload={k: v[where] for k, v in payload.items()},
        )
        held_rows = old.get(key, ExemplarSet.empty())
        order = sel.copy()  # old rows keep their position; kept new rows are numbered after
        order[sel >= len(held_rows)] = len(held_rows) + np.arange(len(at))
        contents = ExemplarSet.concat([held_rows, new_rows])
        groups.append((key, lengths[key], contents.take(order)))
    install(buffer, state, groups)


def _kept_payload(
    rows: ExemplarSet,
    kept_pos: np.ndarray,
    holder: np.ndarray,
    canon: np.ndarray,
    counts: list[int],
    group: Any,
) -> dict[str, np.ndarray]:
    """The payload of the kept new rows (canonical positions ``kept_pos``, sorted), gathered
    from the ranks that hold them (``holder``: rank per canonical position). Only these rows'
    payload bytes cross the wire: at most ``max_size`` rows per update."""
    import torch.distributed as dist

    rank, world = dist.get_rank(group), len(counts)
    by_rank = holder[kept_pos]
    mine = kept_pos[by_rank == rank]  # canonical order
    local = rows.take(canon[mine] - int(np.sum(counts[:rank])))
    sent = np.bincount(by_rank, minlength=world).tolist()
    words = all_gather_rows(
        payload_words(local.payload, len(local)), sent, group, f"{_OWNER} (payload)"
    )
    # rows arrive by rank, each in canonical order: put them in canonical order
    arrived = np.concatenate(
        [np.empty(0, np.int64), *(kept_pos[by_rank == r] for r in range(world))]
    )
    return words_payload(words[np.argsort(arrived, kind="stable")], rows.payload)


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

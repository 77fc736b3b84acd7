"""Sample ids disjoint across ranks: one exact collective check over every id of an update.

:func:`memstore.distributed.update` builds the union of the rows all ranks pass; an id two
ranks both hold would be one sample counted twice (a single-process ``Experience`` of that union
is refused). Checking only the rows that reach the union misses repeats when ranks filter rows
locally first (``draws="hash"`` sends only each rank's top candidates), so the check looks at
every id: each id goes to the rank chosen by a fixed hash of it (``splitmix64``), so all copies of
an id meet on one rank, which finds repeats in its partition by sorting; the ranks then agree on
one verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore.policies.reservoir import splitmix64

from .comm import CollectiveError, agree, all_to_all_rows, rank_and_size

__all__ = ["check_ids_disjoint", "id_owners"]

#: how many repeated ids an error names.
_NAMED = 5


def id_owners(ids: np.ndarray, world: int) -> np.ndarray:
    """The rank that checks each id: ``splitmix64(id) mod world`` (fixed, uniform over ranks
    whatever the ids' layout). Cost O(n) vectorised."""
    key = splitmix64(np.asarray(ids, dtype=np.int64).astype(np.uint64))
    return (key % np.uint64(world)).astype(np.int64)


def _repeats(ids: np.ndarray, holders: np.ndarray) -> tuple[int, list[list[Any]]]:
    """(number of ids held more than once, the smallest few as [id, [holder ranks]]).

    One unstable sort (the hot path); the holders are looked up only when ids repeat."""
    srt = np.sort(ids)
    repeated = np.unique(srt[1:][srt[1:] == srt[:-1]])
    # at most _NAMED ids: a short loop, on the failure path only, for the message
    named = [[int(i), np.unique(holders[ids == i]).tolist()] for i in repeated[:_NAMED]]
    return int(repeated.size), named


def check_ids_disjoint(ids: np.ndarray, group: Any, owner: str) -> None:
    """Refuse, on every rank alike, ids that more than one rank holds (or one rank twice).

    A collective: every rank of ``group`` (``None``: the world) calls it with its ids (int64,
    ``>= 0``: sample ids of one source). Raises the same
    :class:`~memstore.distributed.CollectiveError` on every rank, naming the number of repeated
    ids and the smallest few with the ranks holding them; changes nothing.

    Cost per rank holding n ids: each id sent once (8 bytes, one ``all_to_all_single``, no
    padding: 8·n bytes) plus two small status messages (``world`` counts per rank, then the
    verdict); O(n) to hash and bucket its ids, O(m log m) to sort the m it checks (m ≈ n: the
    hash spreads ids evenly). Measured: 1M ids over 2 gloo ranks, 0.04–0.22 s and 4 MB sent per
    rank (load ~6), against 1.2–1.5 s for the whole hash-draws update.
    """
    rank, world = rank_and_size(group, owner)
    error, send = None, None
    try:
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(
                f"{owner}: the ids to check must be a 1-D integer array. Got dtype {ids.dtype}"
                f", shape {ids.shape} instead."
            )
        dest = id_owners(ids, world)
        # ranks as the smallest unsigned type: numpy's stable sort is then a radix sort, O(n)
        order = np.argsort(dest.astype(np.min_scalar_type(world - 1)), kind="stable")
        ids = ids.astype(np.int64, copy=False)[order]
        send = np.bincount(dest, minlength=world).tolist()
    except Exception as err:  # reported to every rank by agree
        error = err
    counts = agree(error, send, group, owner)
    receive = [c[rank] for c in counts]
    got = all_to_all_rows(ids, send, receive, group, f"{owner} (id check)")
    holders = np.repeat(np.arange(world, dtype=np.int64), receive)
    reports = agree(None, _repeats(got, holders), group, owner)
    total = sum(n for n, _ in reports)
    if total:
        named = sorted(x for _, part in reports for x in part)[:_NAMED]
        listed = ", ".join(f"{i} (ranks {r})" for i, r in named)
        raise CollectiveError(
            f"{owner}: sample ids must be disjoint across ranks; found {total} "
            f"{'id' if total == 1 else 'ids'} held more than once: {listed}"
            f"{', ...' if total > len(named) else ''}. Each rank must pass a disjoint part of "
            "the experience (e.g. its DistributedSampler shard, or whole shards); every rank "
            "raises this error and no rank changed its buffer."
        )

"""Sharded work across ranks: whole shards of a ``ShardSource`` per rank, and one feature
cache filled by all ranks, each writing only the chunks it owns.

Shard ``s`` belongs to rank ``s % world_size``: a rank reads only its own tar files, and an
experience cut from contiguous shards (``ShardSource.experiences(by_shards=...)``) spreads
over the ranks. Feature-cache chunk ``c`` (``CHUNK_ROWS`` ids) belongs to rank
``c % world_size``: zarr writers must own whole chunks, so ranks filling one cache on shared
storage (a local folder, S3) never write the same chunk; the chunk claims
(:mod:`memstore.features.claims`) are then never contended.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore._validation import as_int_array, check_int, param_error
from memstore.experiences import Experience
from memstore.features.cache import CHUNK_ROWS
from memstore.selection import FeatureBasedExemplarsSelectionStrategy
from memstore.sources.shards import ShardSource

from .comm import agree, rank_and_size

__all__ = [
    "rank_and_world",
    "shard_part",
    "owned_chunk_ids",
    "shard_chunk_owners",
    "fill_feature_cache",
]


def rank_and_world(rank: int | None, world_size: int | None, owner: str) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else those of the default process group."""
    if rank is None or world_size is None:
        r, w = rank_and_size(None, owner)
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    world_size = check_int(world_size, "world_size", owner, minimum=1)
    rank = check_int(rank, "rank", owner, minimum=0)
    if rank >= world_size:
        raise ValueError(
            f"The 'rank' parameter of {owner} must be below world_size ({world_size}). "
            f"Got {rank} instead."
        )
    return rank, world_size


def shard_part(
    experience: Experience,
    source: ShardSource,
    rank: int | None = None,
    world_size: int | None = None,
) -> Experience:
    """The rows of ``experience`` that lie in this rank's shards (shard ``s`` → rank
    ``s % world_size``), for :func:`memstore.distributed.update`.

    The parts of all ranks are disjoint and cover the experience; each rank reads only its own
    shards. Cost O(rows) (the source's ``shards`` array; no shard is read).
    """
    owner = "memstore.distributed.shard_part"
    if not isinstance(source, ShardSource):
        raise param_error("source", owner, "a ShardSource", type(source).__name__, kind=TypeError)
    if not isinstance(experience, Experience):
        what, got = "a memstore.Experience", type(experience).__name__
        raise param_error("experience", owner, what, got, kind=TypeError)
    rank, world = rank_and_world(rank, world_size, owner)
    ids = np.asarray(experience.ids)
    if ids.size and ids.max() >= len(source):
        raise ValueError(
            f"{owner}: the experience has ids up to {int(ids.max())} but {source.name!r} has "
            f"{len(source)} samples. Pass the source the experience was cut from."
        )
    mine = np.flatnonzero(source.shards[ids] % world == rank)
    tasks = np.asarray(experience.task_labels)
    return Experience(
        targets=np.asarray(experience.targets)[mine],
        ids=ids[mine],
        task_labels=tasks[mine],
        source=experience.source,
        index=experience.index,
        source_data=experience.source_data if experience.source_data is not None else source,
    )


def owned_chunk_ids(
    ids: np.ndarray, rank: int, world_size: int, chunk_owners: np.ndarray | None = None
) -> np.ndarray:
    """The ids among ``ids`` whose feature-cache chunk (``id // CHUNK_ROWS``) ``rank`` owns,
    sorted and unique: chunk ``c`` belongs to ``chunk_owners[c]`` if given (e.g.
    :func:`shard_chunk_owners`), else to rank ``c % world_size``."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    chunks = ids // CHUNK_ROWS
    owner = chunks % world_size if chunk_owners is None else np.asarray(chunk_owners)[chunks]
    return ids[owner == rank]


def shard_chunk_owners(source: ShardSource, world_size: int) -> np.ndarray:
    """Per feature-cache chunk, the rank owning the shard of its first id (shard ``s`` → rank
    ``s % world_size``), so that a rank extracting the chunks it owns reads its own shards —
    only its own when shard sizes are multiples of ``CHUNK_ROWS``."""
    starts = np.arange(0, len(source), CHUNK_ROWS)
    return (np.asarray(source.shards)[starts] % world_size).astype(np.int64)


def fill_feature_cache(
    strategy: FeatureBasedExemplarsSelectionStrategy,
    dataset: Any,
    ids: Any = None,
    *,
    chunk_owners: np.ndarray | None = None,
    group: Any = None,
) -> int:
    """Compute the features of ``dataset[ids]`` (default: every sample) into the strategy's
    feature cache, each rank the chunks it owns; a collective. Returns the ids this rank
    computed or found (its share).

    Ranks may pass the same ids or each its own part. The rank holding the smallest id to
    compute creates the cache entry (one row), then every rank fills its chunks; when this
    returns on any rank, every rank has finished, so ``compute_features`` (and
    :func:`memstore.distributed.update`) then only read. Resumable: rows already cached are
    not recomputed. ``chunk_owners`` as for :func:`owned_chunk_ids`. A failure on any rank raises
    :class:`~memstore.distributed.CollectiveError` on all. Cost: the extraction of
    ``len(ids) / world_size`` rows per rank, three small collectives.
    """
    owner = "memstore.distributed.fill_feature_cache"
    rank, world = rank_and_size(group, owner)
    error, mine = None, np.empty(0, dtype=np.int64)
    try:
        if not isinstance(strategy, FeatureBasedExemplarsSelectionStrategy):
            what, got = "a feature-based selection strategy", type(strategy).__name__
            raise param_error("strategy", owner, what, got, kind=TypeError)
        if strategy.feature_cache is None:
            raise ValueError(
                f"The 'strategy' parameter of {owner} must have a feature_cache (a Store "
                "open on every rank). Got feature_cache=None instead."
            )
        every = (
            np.arange(len(dataset), dtype=np.int64)
            if ids is None
            else as_int_array(ids, "ids", owner)
        )
        mine = owned_chunk_ids(every, rank, world, chunk_owners)
    except Exception as err:
        error = err
    # One rank creates the entry (one row) before anyone else writes: the one holding the
    # smallest id any rank will compute (ranks may pass different ids, e.g. their own parts;
    # their shares are disjoint, so exactly one rank holds it).
    firsts = agree(error, int(mine[0]) if mine.size else None, group, owner)
    error = None
    try:
        held = [f for f in firsts if f is not None]
        if mine.size and int(mine[0]) == min(held):
            strategy.compute_features(dataset, mine[:1])
    except Exception as err:
        error = err
    agree(error, None, group, owner)
    error = None
    try:
        if mine.size:
            strategy.compute_features(dataset, mine)
    except Exception as err:
        error = err
    agree(error, None, group, owner)
    return int(mine.size)

"""Whole shards per rank (the gloo test of two ranks filling one feature cache is in
test_distributed.py, inside its one process group)."""

from __future__ import annotations

import numpy as np
import pytest

from memstore import distributed as mdist
from memstore.sources.shards import ShardSource, write_shards


def test_shard_part_gives_each_rank_whole_shards(tmp_path):
    x = np.arange(257 * 2, dtype=np.float32).reshape(257, 2)
    out = write_shards(
        x, str(tmp_path / "s" / "train-%04d.tar"), targets=np.arange(257) % 4, maxcount=50
    )
    source = ShardSource(out.spec, name="train", progress=False)
    exp = source.experiences(by_shards=2)[1]
    parts = [mdist.shard_part(exp, source, rank=r, world_size=3) for r in range(3)]
    assert np.array_equal(np.sort(np.concatenate([p.ids for p in parts])), exp.ids)
    for r, part in enumerate(parts):
        assert set((source.shards[part.ids] % 3).tolist()) <= {r}
        assert np.array_equal(part.targets, source.targets[part.ids])
        assert part.index == exp.index and part.source == "train"
    with pytest.raises(ValueError, match="'rank' parameter of memstore.distributed.shard_part"):
        mdist.shard_part(exp, source, rank=3, world_size=3)


def test_chunk_owners_follow_shards_when_shards_are_whole_chunks(tmp_path):
    from memstore.features.cache import CHUNK_ROWS

    n = 3 * CHUNK_ROWS + 10
    x = np.zeros((n, 1), dtype=np.float32)
    out = write_shards(
        x, str(tmp_path / "s" / "t-%04d.tar"), targets=np.zeros(n, np.int64), maxcount=CHUNK_ROWS
    )
    source = ShardSource(out.spec, name="t", progress=False)
    owners = mdist.shard_chunk_owners(source, 2)
    assert owners.tolist() == [0, 1, 0, 1]
    mine = mdist.owned_chunk_ids(np.arange(n), 1, 2, owners)
    assert set((source.shards[mine] % 2).tolist()) == {1}
    assert mine.size == CHUNK_ROWS + 10  # chunks 1 and 3

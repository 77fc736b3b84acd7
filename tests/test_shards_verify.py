"""Issue 8, item 11 (shards) and 10: ``reindex="verify"`` checks every shard's full content
against hashes recorded at index time; the default check (size, first and last 64 KiB) misses
an edit in the middle; a directory is not a shard."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from memstore.sources.shards import ShardSource, write_shards


class FakeStore:
    """The two methods ShardSource uses, backed by a dict."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[dict, dict]] = {}

    def write_source_index(self, name, record, arrays):
        self.saved[name] = (
            pickle.loads(pickle.dumps(record)),
            {k: np.array(v, copy=True) for k, v in arrays.items()},
        )

    def read_source_index(self, name):
        return self.saved.get(name)


@pytest.fixture
def big(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3, 5)).astype(np.float32)
    y = rng.integers(0, 7, 600)
    out = write_shards(x, str(tmp_path / "train-%04d.tar"), targets=y, maxcount=300)
    assert all(os.path.getsize(p) > 256 << 10 for p in out.paths)  # beyond head + tail
    return x, y, out


def _edit_target(src: ShardSource, path: str, i: int) -> int:
    """Change sample ``i``'s target digit in place (same size, middle of the shard)."""
    where = int(src.index.offsets[i, src.members.index("cls")])
    with open(path, "r+b") as f:
        f.seek(where)
        old = int(f.read(1))
        new = (old + 1) % 7
        f.seek(where)
        f.write(str(new).encode())
    return new


def test_verify_finds_an_edit_in_the_middle_that_the_default_misses(big):
    _x, y, out = big
    store = FakeStore()
    first = ShardSource(out.spec, store=store, name="t", reindex="verify", progress=False)
    record = store.saved["t"][0]
    assert len(record["shard_content_hashes"]) == 2 and all(record["shard_content_hashes"])
    again = ShardSource(out.spec, store=store, name="t", reindex="verify", progress=False)
    assert again.indexed_shards == ()  # content unchanged: the index is reused
    new = _edit_target(first, out.paths[0], 150)
    stale = ShardSource(out.spec, store=store, name="t", progress=False)
    assert stale.indexed_shards == () and stale.targets[150] == y[150]  # the default's limit
    with pytest.warns(UserWarning, match=r"train-0000\.tar.*re-indexing"):
        fresh = ShardSource(out.spec, store=store, name="t", reindex="verify", progress=False)
    assert fresh.indexed_shards == (0,) and fresh.targets[150] == new
    assert fresh.fingerprint() != first.fingerprint()


def test_verify_on_an_index_without_content_hashes_rescans_every_shard(big):
    _x, _y, out = big
    store = FakeStore()
    ShardSource(out.spec, store=store, name="t", progress=False)
    assert store.saved["t"][0]["shard_content_hashes"] == [None, None]
    with pytest.warns(UserWarning, match="no content hash"):
        src = ShardSource(out.spec, store=store, name="t", reindex="verify", progress=False)
    assert src.indexed_shards == (0, 1) and all(store.saved["t"][0]["shard_content_hashes"])
    # the default keeps hashes it cannot recompute for unchanged shards
    ShardSource(out.spec, store=store, name="t", progress=False)
    assert all(store.saved["t"][0]["shard_content_hashes"])


def test_bad_reindex_and_a_directory_are_refused(big, tmp_path):
    _x, _y, out = big
    with pytest.raises(ValueError, match="'reindex'"):
        ShardSource(out.spec, reindex="always", progress=False)
    with pytest.raises(TypeError, match="'reindex'"):
        ShardSource(out.spec, reindex=1, progress=False)
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(ValueError, match="adir.*directory"):
        ShardSource(str(folder), progress=False)
    with pytest.raises(ValueError, match="adir.*directory"):
        ShardSource([out.paths[0], str(folder)], progress=False)

"""Issue 8, item 8: the feature cache is part of the store. Every chunk carries checksums,
every read checks them, ``verify`` covers the cache, damage is a ``CorruptStoreError`` naming
the file, and ``cached_features`` recomputes damaged chunks instead of returning them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import memstore
from memstore.cli import main as cli_main
from memstore.features.cache import CHUNK_ROWS
from memstore.features.extract import cached_features, extract_features
from memstore.testing.models import CountingModel, make_source

N = 3 * CHUNK_ROWS + 123


@pytest.fixture
def filled(tmp_path):
    url = str(tmp_path / "m.zarr")
    store = memstore.open_store(url)
    src = make_source(N)
    want = cached_features(CountingModel(), "feat", src, np.arange(N), store)
    [key] = store.feature_caches()
    return url, key, src, want


def _entry(url: str, key: str) -> str:
    return os.path.join(url, "features", key)


def _flip(path: str, at: int | None = None) -> None:
    data = bytearray(open(path, "rb").read())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x40
    open(path, "wb").write(bytes(data))


CHUNK_DAMAGES = {
    "delete values": lambda p: os.remove(os.path.join(p, "values", "c", "1", "0")),
    "flip values": lambda p: _flip(os.path.join(p, "values", "c", "1", "0")),
    "truncate values": lambda p: open(os.path.join(p, "values", "c", "1", "0"), "r+b").truncate(7),
    "delete sums (a cache written before checksums)": lambda p: os.remove(
        os.path.join(p, "sums", "1")
    ),
    "flip sums": lambda p: _flip(os.path.join(p, "sums", "1"), at=30),
    "bad json sums": lambda p: open(os.path.join(p, "sums", "1"), "w").write("{"),
    "delete done": lambda p: os.remove(os.path.join(p, "done", "c", "1")),
    "flip done": lambda p: _flip(os.path.join(p, "done", "c", "1")),
    "zero values": lambda p: open(os.path.join(p, "values", "c", "1", "0"), "r+b").write(
        b"\0" * os.path.getsize(os.path.join(p, "values", "c", "1", "0"))
    ),
}


@pytest.mark.parametrize("damage", sorted(CHUNK_DAMAGES))
def test_damaged_chunk_is_named_by_read_and_verify_and_recomputed(filled, damage):
    url, key, src, want = filled
    CHUNK_DAMAGES[damage](_entry(url, key))
    store = memstore.open_store(url)
    cache = store.open_feature_cache(key)
    ids = np.arange(CHUNK_ROWS, CHUNK_ROWS + 10)
    with pytest.raises(memstore.CorruptStoreError, match=f"features/{key}/.*chunk 1"):
        cache.read(ids)
    assert cache.damaged_chunks() == [1]
    problems = store.verify()
    assert [p.path for p in problems if p.severity == "error"] and all(
        f"features/{key}" in p.path for p in problems
    )
    np.testing.assert_array_equal(cache.read(np.arange(10)), want[:10])  # others still good
    model = CountingModel()
    with pytest.warns(UserWarning, match="damaged"):
        got = cached_features(model, "feat", src, np.arange(N), store)
    assert model.rows == 10 or model.rows <= CHUNK_ROWS  # only the damaged chunk recomputed
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert store.verify() == []
    assert cache.damaged_chunks() == []


def test_mark_missing_makes_damaged_rows_missing(filled):
    url, key, _src, _want = filled
    _flip(os.path.join(_entry(url, key), "values", "c", "2", "0"))
    cache = memstore.open_store(url).open_feature_cache(key)
    assert cache.damaged_chunks() == [2]
    cache.mark_missing([2])
    assert cache.damaged_chunks() == []
    missing = cache.missing(np.arange(N))
    np.testing.assert_array_equal(missing, np.arange(2 * CHUNK_ROWS, 3 * CHUNK_ROWS))
    assert cache.num_done() == N - CHUNK_ROWS


METADATA_DAMAGES = {
    "group zarr.json bad json": ("zarr.json", lambda p: open(p, "w").write("{not json")),
    "group zarr.json deleted": ("zarr.json", os.remove),
    "values zarr.json bad json": ("values/zarr.json", lambda p: open(p, "w").write("[")),
    "values zarr.json as group": (
        "values/zarr.json",
        lambda p: open(p, "w").write(json.dumps({"zarr_format": 3, "node_type": "group"})),
    ),
    "done zarr.json deleted": ("done/zarr.json", os.remove),
    "done zarr.json wrong shape": (
        "done/zarr.json",
        lambda p: open(p, "w").write(
            open(p).read().replace(f"[{N}]", f"[{N - 1}]").replace(f"{N}]", f"{N - 1}]")
        ),
    ),
    "group zarr.json an array": (
        "zarr.json",
        lambda p: open(p, "w").write(
            open(os.path.join(os.path.dirname(p), "done/zarr.json")).read()
        ),
    ),
}


@pytest.mark.parametrize("damage", sorted(METADATA_DAMAGES))
def test_damaged_metadata_is_a_named_corrupt_store_error(filled, damage, capsys):
    url, key, src, _want = filled
    name, act = METADATA_DAMAGES[damage]
    act(os.path.join(_entry(url, key), name))
    store = memstore.open_store(url)
    with pytest.raises(memstore.CorruptStoreError, match=f"features/{key}"):
        c = store.open_feature_cache(key)
        c.read(np.arange(5))
    problems = store.verify()
    assert any(f"features/{key}" in p.path for p in problems if p.severity == "error")
    assert cli_main(["inspect", url]) == 2  # one line, no traceback
    assert f"features/{key}" in capsys.readouterr().err
    with pytest.raises(memstore.CorruptStoreError):
        cached_features(CountingModel(), "feat", src, np.arange(5), store)


def test_fresh_fill_has_no_problems_and_reads_verify(filled):
    url, key, src, want = filled
    store = memstore.open_store(url)
    assert store.verify() == []
    cache = store.open_feature_cache(key)
    np.testing.assert_array_equal(cache.read(np.arange(N)), want)
    np.testing.assert_allclose(
        want, extract_features(CountingModel(), "feat", src, np.arange(N)), rtol=1e-6, atol=1e-6
    )


def test_bad_writes_are_refused_and_change_nothing(tmp_path):
    store = memstore.open_store(str(tmp_path / "m.zarr"))
    cache = store.feature_cache("k", CHUNK_ROWS, 2)
    with pytest.raises(ValueError, match="unique.*0"):
        cache.write(np.r_[np.zeros(2, int), np.arange(2, CHUNK_ROWS)], np.ones((CHUNK_ROWS, 2)))
    with pytest.raises(ValueError, match=r"\[0, 4096\).*\[4096\]"):
        cache.write([1, CHUNK_ROWS], np.ones((2, 2)))
    assert cache.num_done() == 0 and cache.missing([0, 1]).tolist() == [0, 1]
    with pytest.raises(KeyError, match="no features for ids"):
        cache.read([0])

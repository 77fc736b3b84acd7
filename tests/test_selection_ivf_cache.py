"""A persisted IVF index (memstore/selection/ivf_cache.py): reused on re-selection with the
same key (the features are not read again, the picks are the same), rebuilt for another key,
and never used when damaged — rebuilt with a warning, or a CorruptStoreError on request."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import memstore
from memstore.errors import CorruptStoreError
from memstore.selection.faiss_ivf import approximate_herding_order
from memstore.selection.ivf_cache import IndexCache

N, D, K = 3000, 8, 60
OPTS = dict(nlist=20, nprobe=4, exact_below=0)


class CountingReader:
    """A chunked reader that counts its reads."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.shape, self.dtype, self.reads = values, values.shape, values.dtype, 0

    def __getitem__(self, key: slice) -> np.ndarray:
        self.reads += 1
        return self.values[key]


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, D)) + rng.integers(0, 4, size=(N, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def fresh(feats):
    return approximate_herding_order(feats, K, **OPTS)


def test_index_is_reused_without_reading_the_features(tmp_path, feats, fresh):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    cache = IndexCache(group, "features-v1")
    first = CountingReader(feats)
    np.testing.assert_array_equal(
        approximate_herding_order(first, K, index_cache=cache, **OPTS), fresh
    )
    assert first.reads > 0 and "ivf_index" in group
    again = CountingReader(feats)
    np.testing.assert_array_equal(
        approximate_herding_order(again, K, index_cache=cache, **OPTS), fresh
    )
    assert again.reads == 0
    other = CountingReader(feats)  # another key: rebuilt (and replaced) without a warning
    approximate_herding_order(other, K, index_cache=IndexCache(group, "features-v2"), **OPTS)
    assert other.reads > 0 and group["ivf_index"].attrs["key"] == "features-v2"


def _damage(group):
    arr = group["ivf_index"]
    middle = arr.shape[0] // 2
    arr[middle] = np.uint8(arr[middle] ^ 0x5A)


def test_a_damaged_index_is_rebuilt_with_a_warning(tmp_path, feats, fresh):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    cache = IndexCache(group, "v1")
    approximate_herding_order(feats, K, index_cache=cache, **OPTS)
    _damage(group)
    reader = CountingReader(feats)
    with pytest.warns(UserWarning, match="ivf_index is damaged .*checksum.*Rebuilding"):
        picks = approximate_herding_order(reader, K, index_cache=cache, **OPTS)
    np.testing.assert_array_equal(picks, fresh)
    assert reader.reads > 0
    again = CountingReader(feats)  # the rebuilt index was saved whole
    np.testing.assert_array_equal(
        approximate_herding_order(again, K, index_cache=cache, **OPTS), fresh
    )
    assert again.reads == 0


def test_a_damaged_index_is_a_named_error_on_request(tmp_path, feats):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    approximate_herding_order(feats, K, index_cache=IndexCache(group, "v1"), **OPTS)
    _damage(group)
    with pytest.raises(CorruptStoreError, match="ivf_index is damaged"):
        approximate_herding_order(
            feats, K, index_cache=IndexCache(group, "v1", on_damage="raise"), **OPTS
        )
    group["ivf_index"].resize((100,))  # truncated
    with pytest.raises(CorruptStoreError, match="100 bytes"):
        approximate_herding_order(
            feats, K, index_cache=IndexCache(group, "v1", on_damage="raise"), **OPTS
        )


def test_checksums_sha256_and_the_former_blake2b(tmp_path, feats, fresh):
    """New indexes carry a SHA-256 checksum; one saved with the former blake2b checksum still
    loads (the algorithm is named in the checksum); an unknown algorithm is damage."""
    import hashlib

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    cache = IndexCache(group, "v1")
    approximate_herding_order(feats, K, index_cache=cache, **OPTS)
    arr = group["ivf_index"]
    data = np.asarray(arr[:]).tobytes()
    assert arr.attrs["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    arr.attrs["checksum"] = "blake2b:" + hashlib.blake2b(data, digest_size=16).hexdigest()
    reader = CountingReader(feats)
    np.testing.assert_array_equal(
        approximate_herding_order(reader, K, index_cache=cache, **OPTS), fresh
    )
    assert reader.reads == 0
    arr.attrs["checksum"] = "md5:" + hashlib.md5(data).hexdigest()
    with pytest.raises(CorruptStoreError, match="unknown checksum 'md5:"):
        approximate_herding_order(
            feats, K, index_cache=IndexCache(group, "v1", on_damage="raise"), **OPTS
        )


def test_the_feature_cache_holds_the_index(tmp_path, feats, fresh):
    store = memstore.open_store(str(tmp_path / "m.zarr"))
    entry = store.feature_cache("k", N, D)
    entry.write(np.arange(N), feats)
    cache = IndexCache.in_feature_cache(entry, "k")
    np.testing.assert_array_equal(
        approximate_herding_order(entry.values, K, index_cache=cache, **OPTS), fresh
    )
    reopened = store.open_feature_cache("k")
    assert "ivf_index" in reopened.group["index"]
    assert reopened.problems() == []


def test_bad_index_cache_arguments():
    with pytest.raises(TypeError, match="index_cache"):
        approximate_herding_order(
            np.zeros((10, 2), np.float32), 2, index_cache="here", exact_below=0
        )
    with pytest.raises(ValueError, match="on_damage"):
        IndexCache(None, "k", on_damage="ignore")

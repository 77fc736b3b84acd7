"""The store's feature cache: same features as direct extraction, computed once, resumable
after a crash, keyed by source and model weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import memstore
from memstore.features.cache import CHUNK_ROWS
from memstore.features.extract import cached_features, extract_features
from memstore.testing.models import CountingModel
from memstore.testing.models import make_source as make_counting_source

N = 3 * CHUNK_ROWS + 123  # a partial last chunk


def make_source(n: int = N) -> memstore.ArraySource:
    return make_counting_source(n)


@pytest.fixture
def store(tmp_path):
    return memstore.open_store(str(tmp_path / "m.zarr"))


def test_cached_equals_direct_and_computes_each_sample_once(store):
    src, model = make_source(), CountingModel()
    keys = np.random.default_rng(1).permutation(N)[: N // 2]
    direct = extract_features(model, "feat", src, keys, batch_size=500)
    model.rows = 0
    first = cached_features(model, "feat", src, keys, store, batch_size=500)
    # Other batches (ids in ascending order) may round a GEMM differently in the last bit.
    np.testing.assert_allclose(first, direct, rtol=1e-6, atol=1e-6)
    assert model.rows == len(keys)
    model.rows = 0
    everything = cached_features(model, "feat", src, np.arange(N), store, batch_size=500)
    assert model.rows == N - len(keys)  # only the missing half was computed
    assert np.array_equal(everything[keys], first)  # what was cached is served as is
    np.testing.assert_allclose(
        everything, extract_features(model, "feat", src, np.arange(N)), rtol=1e-6, atol=1e-6
    )
    [key] = store.feature_caches()
    assert store.open_feature_cache(key).num_done() == N


def test_other_weights_use_another_entry(store):
    src = make_source(500)
    a = cached_features(CountingModel(seed=0), "feat", src, np.arange(500), store)
    b = cached_features(CountingModel(seed=1), "feat", src, np.arange(500), store)
    assert len(store.feature_caches()) == 2 and not np.array_equal(a, b)


def test_float16_cache(store):
    src, model = make_source(300), CountingModel()
    got = cached_features(model, "feat", src, np.arange(300), store, dtype="float16")
    want = extract_features(model, "feat", src, np.arange(300))
    assert got.dtype == np.float32
    assert np.array_equal(got, want.astype(np.float16).astype(np.float32))


_CHILD = textwrap.dedent(
    """
    import os
    import numpy as np
    import memstore
    from memstore.features.extract import cached_features
    from memstore.testing.models import CountingModel, make_source

    forward = CountingModel.forward

    def dying(self, x):  # same class and weights, so the same cache entry
        if self.rows >= {die_after}:
            os._exit(9)  # abrupt: no cleanup, no flush
        return forward(self, x)

    CountingModel.forward = dying
    store = memstore.open_store({url!r})
    src = make_source({n})
    cached_features(CountingModel(), "feat", src, np.arange({n}), store, batch_size=512)
    """
)


def test_killed_extraction_resumes_where_it_stopped(tmp_path):
    url = str(tmp_path / "m.zarr")
    die_after = 2 * CHUNK_ROWS + 1024  # dies inside the third chunk
    script = _CHILD.format(url=url, die_after=die_after, n=N)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    store = memstore.open_store(url)
    [key] = store.feature_caches()
    done = store.open_feature_cache(key).num_done()
    assert 2 * CHUNK_ROWS <= done < N  # whole chunks before the crash survived
    model, src = CountingModel(), make_source()
    resumed = cached_features(model, "feat", src, np.arange(N), store, batch_size=512)
    assert model.rows == N - done
    uninterrupted = memstore.open_store(str(tmp_path / "other.zarr"))
    want = cached_features(
        CountingModel(), "feat", src, np.arange(N), uninterrupted, batch_size=512
    )
    assert np.array_equal(resumed, want)
    assert store.verify() == []


def test_parametric_buffer_with_cache_equals_without(store):
    src = make_source(2000)
    exps = [
        memstore.Experience(
            targets=src.targets[i::2], ids=np.arange(2000)[i::2], source="s", index=i
        )
        for i in range(2)
    ]
    plain = memstore.ParametricBuffer(
        60, "class", memstore.HerdingSelectionStrategy(CountingModel(), "feat")
    )
    model = CountingModel()
    cached = memstore.ParametricBuffer(
        60, "class", memstore.HerdingSelectionStrategy(model, "feat", feature_cache=store)
    )
    for e in exps:
        plain.update(e, sources={"s": src})
        cached.update(e, sources={"s": src})
    assert cached.buffer.equals(plain.buffer)
    assert model.rows == 2000  # old exemplars came from the cache on the second update


def test_cache_shape_mismatch_and_bad_arguments(store):
    cache = store.feature_cache("k", 100, 4)
    assert cache.shape == (100, 4)
    with pytest.raises(ValueError, match=r"holds \(100, 4\)"):
        store.feature_cache("k", 100, 5)
    with pytest.raises(ValueError, match="'dtype'"):
        store.feature_cache("k2", 10, 2, dtype="int8")
    with pytest.raises(TypeError, match="'feature_cache'"):
        memstore.HerdingSelectionStrategy(CountingModel(), "feat", feature_cache="not a store")


def test_feature_cache_seam_is_the_declared_protocol(store):
    """Strategies accept anything implementing FeatureCacheStore, and nothing less."""
    from memstore.features.cache import FeatureCacheStore

    assert isinstance(store, FeatureCacheStore)

    class Delegate:  # not a Store: only the two methods of the protocol
        def __init__(self, inner):
            self.inner, self.opened = inner, []

        def open_feature_cache(self, key):
            self.opened.append(key)
            return self.inner.open_feature_cache(key)

        def feature_cache(self, key, n, d, dtype="float32", attrs=None):
            return self.inner.feature_cache(key, n, d, dtype, attrs)

    class OpenOnly:
        def open_feature_cache(self, key):
            return None

    with pytest.raises(TypeError, match="FeatureCacheStore"):
        memstore.HerdingSelectionStrategy(CountingModel(), "feat", feature_cache=OpenOnly())
    delegate = Delegate(store)
    strategy = memstore.HerdingSelectionStrategy(CountingModel(), "feat", feature_cache=delegate)
    src = make_source(500)
    feats = strategy.compute_features(src, np.arange(500))
    assert delegate.opened and store.feature_caches() == delegate.opened
    np.testing.assert_array_equal(feats, strategy.compute_features(src, np.arange(500)))


def test_read_only_store_refuses_to_create_a_cache(tmp_path):
    url = str(tmp_path / "m.zarr")
    memstore.open_store(url)
    ro = memstore.open_store(url, mode="r")
    with pytest.raises(memstore.ReadOnlyStoreError):
        ro.feature_cache("k", 10, 2)


def test_cache_records_what_it_holds(store):
    src = make_source(100)
    src.name = "digits"
    cached_features(CountingModel(), "feat", src, np.arange(100), store)
    [key] = store.feature_caches()
    attrs = dict(store.open_feature_cache(key).group.attrs)
    assert attrs == {"source": "digits", "layer": "feat", "n": 100}

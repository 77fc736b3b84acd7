"""Selection at scale (memstore/selection/: faiss_ivf, herding, closest, readers): FAISS
herding, chunked readers, exact chunked.

Quality: on a seeded Gaussian mixture the approximate herding error stays within 5% of exact
herding's. The error oscillates by ±15% from one pick to the next even for exact herding, so
the 5% bound is on its mean over picks k/2..k; the value at k itself gets a 25% bound and must
beat k random rows tenfold. Equality: a zarr array (chunks (4096, d), float16 / float32) gives
the same picks as the in-memory array; exact chunked herding equals ``herding_order``.
"""

from __future__ import annotations

import faiss  # noqa: F401  (before torch)
import numpy as np
import pytest
import torch
import zarr

from memstore import ClosestToCenterSelectionStrategy, HerdingSelectionStrategy
from memstore.selection.closest import chunked_closest_order, closest_to_center_order
from memstore.selection.faiss_ivf import approximate_herding_order, default_nlist, default_nprobe
from memstore.selection.herding import exact_herding_chunked, herding_order
from memstore.testing.quality import herding_errors, herding_objective

N, D, COMPONENTS, K = 60_000, 32, 20, 1_000


def mixture(n: int, d: int, components: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((components, d)).astype(np.float32) * 2.0
    spreads = rng.uniform(0.5, 1.5, size=components).astype(np.float32)
    label = rng.integers(0, components, n)
    noise = rng.standard_normal((n, d), dtype=np.float32) * spreads[label, None]
    return centers[label] + noise


def to_zarr(path, values: np.ndarray) -> zarr.Array:
    arr = zarr.create_array(
        store=str(path), shape=values.shape, chunks=(4096, values.shape[1]), dtype=values.dtype
    )
    arr[:] = values
    return zarr.open_array(str(path), mode="r")


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    return mixture(N, D, COMPONENTS, seed=0)


@pytest.fixture(scope="module")
def exact_picks(feats) -> np.ndarray:
    return herding_order(feats, K)


@pytest.fixture(scope="module")
def approx_picks(feats) -> np.ndarray:
    return approximate_herding_order(feats, K)


# --------------------------------------------------------------------------- approximate herding


def test_approximate_herding_is_within_5_percent_of_exact(feats, exact_picks, approx_picks):
    exact = herding_errors(feats, exact_picks)
    approx = herding_errors(feats, approx_picks)
    window = slice(K // 2, K)
    assert approx[window].mean() <= 1.05 * exact[window].mean()
    assert approx[-1] <= 1.25 * exact[-1]
    rand = np.random.default_rng(0).choice(N, size=K, replace=False)
    assert approx[-1] < herding_objective(feats, rand) / 10
    assert herding_objective(feats, approx_picks) == pytest.approx(approx[-1], rel=1e-12)


def test_approximate_herding_picks_are_unique_and_deterministic(feats, approx_picks):
    assert approx_picks.dtype == np.int64 and approx_picks.shape == (K,)
    assert np.unique(approx_picks).size == K
    assert approx_picks.min() >= 0 and approx_picks.max() < N
    again = approximate_herding_order(feats, K)
    np.testing.assert_array_equal(again, approx_picks)
    # the default parameters are what the call used
    explicit = approximate_herding_order(
        feats, K, nlist=default_nlist(N), nprobe=default_nprobe(default_nlist(N)), seed=0
    )
    np.testing.assert_array_equal(explicit, approx_picks)


def test_first_approximate_pick_is_the_exact_nearest_to_the_mean(feats, approx_picks):
    # t = center at pick 0, and the IVF lists nearest the center hold its nearest row.
    center = feats.astype(np.float64).mean(axis=0)
    assert approx_picks[0] == np.argmin(((feats - center) ** 2).sum(axis=1))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_zarr_reader_gives_the_same_results_as_the_array(tmp_path, feats, dtype):
    values = feats.astype(dtype)
    reader = to_zarr(tmp_path / "f.zarr", values)
    assert reader.chunks == (4096, D)
    k = 300
    np.testing.assert_array_equal(
        approximate_herding_order(reader, k), approximate_herding_order(values, k)
    )
    np.testing.assert_array_equal(
        chunked_closest_order(reader, k), chunked_closest_order(values, k)
    )
    picks = np.arange(0, N, 7)
    assert herding_objective(reader, picks) == herding_objective(values, picks)
    small = to_zarr(tmp_path / "small.zarr", values[:3000])
    np.testing.assert_array_equal(
        exact_herding_chunked(small, 100, chunk_rows=1000),
        exact_herding_chunked(values[:3000], 100, chunk_rows=1000),
    )


def test_probed_lists_exhausted_search_widens(feats):
    # Every row of a tiny index, one probed list: later picks find their lists emptied.
    x = feats[:1500, :8]
    picks = approximate_herding_order(x, 1500, nlist=30, nprobe=1, exact_below=0)
    np.testing.assert_array_equal(np.sort(picks), np.arange(1500))


@pytest.mark.parametrize("nlist", [1, 7])
def test_probing_every_list_is_the_greedy_nearest_unpicked_row(feats, nlist):
    """With every list probed the IVF search is exhaustive, so each pick must be the unpicked
    row nearest ``t = (i+1)·mean − Σ picked`` — checked by brute force in numpy (float32
    distances as the search computes them). This pins the removal of picks from their lists
    (the last entry moved into the freed slot): no picked row returns, none is lost."""
    x = np.ascontiguousarray(feats[:2000, :8])
    k = 600
    picks = approximate_herding_order(x, k, nlist=nlist, nprobe=nlist, exact_below=0)
    center = x.sum(axis=0, dtype=np.float64) / len(x)
    unpicked = np.ones(len(x), dtype=bool)
    picked_sum = np.zeros(x.shape[1])
    expected = []
    for i in range(k):
        t = ((i + 1) * center - picked_sum).astype(np.float32)
        dist = ((x - t) ** 2).sum(axis=1, dtype=np.float32)
        dist[~unpicked] = np.inf
        j = int(np.argmin(dist))
        expected.append(j)
        unpicked[j] = False
        picked_sum += x[j]
    np.testing.assert_array_equal(picks, expected)


def test_small_groups_fall_back_to_exact_herding(feats):
    x = feats[:5000]
    np.testing.assert_array_equal(approximate_herding_order(x, 400), herding_order(x, 400))
    np.testing.assert_array_equal(
        approximate_herding_order(x[:, :4], 5000), herding_order(x[:, :4], 5000)
    )


def test_k_zero_and_strategy_integration(feats):
    assert approximate_herding_order(feats, 0).shape == (0,)
    assert chunked_closest_order(feats, 0).shape == (0,)
    model = torch.nn.Sequential(torch.nn.Identity())
    herding = HerdingSelectionStrategy(model, "0", approximate=True, nlist=100, nprobe=3)
    np.testing.assert_array_equal(
        herding.make_sorted_indices_from_features(feats, k=50),
        approximate_herding_order(feats, 50, nlist=100, nprobe=3),
    )
    closest = ClosestToCenterSelectionStrategy(model, "0", approximate=True)
    np.testing.assert_array_equal(
        closest.make_sorted_indices_from_features(feats, k=50),
        chunked_closest_order(feats, 50),
    )


# ---------------------------------------------------------------------------- closest-to-center


def test_approximate_closest_recall_against_exact(feats):
    exact = closest_to_center_order(feats, K)
    approx = chunked_closest_order(feats, K)
    assert approx.dtype == np.int64 and np.unique(approx).size == K
    assert np.intersect1d(exact, approx).size / K >= 0.95


def test_approximate_closest_is_the_stable_top_k_of_its_distances():
    x = mixture(5000, 8, 5, seed=3)
    x[4000:4100] = x[100:200]  # exact ties: the lower index must come first
    center = torch.from_numpy((x.sum(axis=0, dtype=np.float64) / len(x)).astype(np.float32))
    dist = torch.pow(torch.from_numpy(x) - center, 2).sum(dim=1).numpy()
    expected = np.lexsort((np.arange(len(x)), dist))
    for k, chunk_rows in [(700, 5000), (4999, 5000), (5000, 8192)]:
        np.testing.assert_array_equal(
            chunked_closest_order(x, k, chunk_rows=chunk_rows), expected[:k]
        )
    # smaller blocks: the running top-k merge keeps the same set in the same order
    np.testing.assert_array_equal(chunked_closest_order(x, 700, chunk_rows=333), expected[:700])


# ------------------------------------------------------------------------ exact chunked herding


@pytest.mark.parametrize("chunk_rows", [997, 4096, 65536])
def test_exact_chunked_equals_herding_order(chunk_rows):
    x = mixture(3000, 12, 6, seed=1)
    x[2000:2050] = x[10:60]  # duplicated rows: exact ties resolved like the reference
    x[2500] = x[2000]
    np.testing.assert_array_equal(
        exact_herding_chunked(x, 3000, chunk_rows=chunk_rows), herding_order(x, 3000)
    )


def test_exact_chunked_equals_herding_order_at_scale(feats, exact_picks):
    np.testing.assert_array_equal(exact_herding_chunked(feats, K, chunk_rows=8192), exact_picks)


def test_exact_chunked_from_zarr_float32_equals_herding_order(tmp_path):
    # The reader's mean is torch's float32 mean streamed block by block (memstore.selection.
    # center), herding_order's is torch's own: the picks are identical.
    x = mixture(9000, 16, 8, seed=2)
    reader = to_zarr(tmp_path / "x.zarr", x)
    np.testing.assert_array_equal(exact_herding_chunked(reader, 500), herding_order(x, 500))


# ----------------------------------------------------------------------- objective and errors


def test_herding_errors_and_objective_match_numpy(feats):
    picks = np.array([5, 17, 5_000, 40_000, 3, 59_999])
    center = feats.astype(np.float64).mean(axis=0)
    expected = [
        np.linalg.norm(feats[picks[:j]].astype(np.float64).mean(axis=0) - center)
        for j in range(1, len(picks) + 1)
    ]
    np.testing.assert_allclose(herding_errors(feats, picks, chunk_rows=4096), expected, rtol=1e-9)
    assert herding_objective(feats, picks) == pytest.approx(expected[-1], rel=1e-9)


# ------------------------------------------------------------------------------- validation


def test_invalid_arguments_are_refused(tmp_path, feats):
    with pytest.raises(TypeError, match="'features' parameter of approximate_herding_order"):
        approximate_herding_order(object(), 3)
    with pytest.raises(ValueError, match="must be 2-D"):
        chunked_closest_order(np.zeros(10, dtype=np.float32), 3)
    with pytest.raises(TypeError, match="must be numeric"):
        exact_herding_chunked(np.array([["a"]]), 1)
    with pytest.raises(ValueError, match=r"'k' parameter .* at most the number of rows \(60000\)"):
        approximate_herding_order(feats, N + 1)
    with pytest.raises(ValueError, match="'k' parameter"):
        exact_herding_chunked(feats, -1)
    with pytest.raises(TypeError, match="'k' parameter"):
        chunked_closest_order(feats, 2.5)
    with pytest.raises(ValueError, match="'nlist' parameter .* at most the number of rows"):
        approximate_herding_order(feats[:100], 3, nlist=101, exact_below=0)
    with pytest.raises(ValueError, match="'nprobe' parameter"):
        approximate_herding_order(feats, 3, nprobe=0)
    with pytest.raises(ValueError, match="'picks' parameter of herding_objective"):
        herding_objective(feats, [0, N])
    with pytest.raises(ValueError, match="non-empty"):
        herding_errors(feats, [])
    bad = feats[:6000].copy()
    bad[4321, 3] = np.nan
    with pytest.raises(ValueError, match=r"finite. Got NaN/inf in rows \[4321\]"):
        approximate_herding_order(bad, 3, exact_below=0, nlist=10)
    with pytest.raises(ValueError, match=r"rows \[4321\]"):
        exact_herding_chunked(to_zarr(tmp_path / "bad.zarr", bad), 3)


def test_strategies_read_a_zarr_reader_in_approximate_mode(tmp_path, feats, approx_picks):
    """The strategy passes a chunked reader through instead of loading it whole."""
    arr = to_zarr(tmp_path / "f.zarr", feats)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    herd = HerdingSelectionStrategy(model, "0", approximate=True)
    k = len(approx_picks)
    assert herd.make_sorted_indices_from_features(arr, k=k).tolist() == approx_picks.tolist()
    close = ClosestToCenterSelectionStrategy(model, "0", approximate=True)
    assert close.make_sorted_indices_from_features(arr, k=50).tolist() == (
        closest_to_center_order(feats, 50).tolist()
    )
    with pytest.raises(ValueError, match="'k'"):
        herd.make_sorted_indices_from_features(arr, k=len(feats) + 1)


class BlockReader:
    """A chunked reader that serves at most ``limit`` rows per read and counts its reads."""

    def __init__(self, values: np.ndarray, limit: int) -> None:
        self.values, self.limit, self.reads = values, limit, 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def dtype(self):
        return self.values.dtype

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.start is None or key.stop is None:
            raise TypeError(f"BlockReader serves row slices a:b only, not {key!r}")
        if key.stop - key.start > self.limit:
            raise MemoryError(f"BlockReader refuses {key.stop - key.start} rows in one read")
        self.reads += 1
        return self.values[key]


def test_exact_strategies_route_a_reader_through_the_bounded_memory_paths():
    """Exact mode reads a chunked reader block by block (never whole), same picks."""
    from memstore.selection.readers import DEFAULT_CHUNK_ROWS

    x = mixture(2 * DEFAULT_CHUNK_ROWS + 5000, 8, 6, seed=3)
    blocks = -(-len(x) // DEFAULT_CHUNK_ROWS)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    herd = HerdingSelectionStrategy(model, "0")
    reader = BlockReader(x, limit=DEFAULT_CHUNK_ROWS)
    with pytest.raises(MemoryError):  # the reader really refuses a whole read
        reader[0 : len(x)]
    k = 40
    picks = herd.make_sorted_indices_from_features(reader, k=k)
    np.testing.assert_array_equal(picks, herding_order(x, k))
    assert reader.reads == (1 + k) * blocks  # ‖x‖² and the mean, then one pass per pick
    close = ClosestToCenterSelectionStrategy(model, "0")
    reader = BlockReader(x, limit=DEFAULT_CHUNK_ROWS)
    picks = close.make_sorted_indices_from_features(reader, k=300)
    np.testing.assert_array_equal(picks, closest_to_center_order(x, 300))
    assert reader.reads == 2 * blocks  # the mean, then the distances
    with pytest.raises(ValueError, match="'k' parameter of HerdingSelectionStrategy"):
        herd.make_sorted_indices_from_features(BlockReader(x, 10), k=len(x) + 1)
    with pytest.raises(ValueError, match="HerdingSelectionStrategy must be 2-D"):
        herd.make_sorted_indices_from_features(BlockReader(x[:, 0], 10), k=1)

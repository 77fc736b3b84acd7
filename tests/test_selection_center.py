"""torch's float32 mean, reproduced bit for bit in one pass (memstore.selection.center).

Every assertion is equality of bits with ``torch.mean`` itself, over shapes that exercise
each part of torch's cascade: the one-cascade column groups and the ``row_sum`` tail
columns, chunk sizes 2^4 and 2^5 (N above 2^19), leftover rows (N mod 4), several levels,
blocks of any size, and two threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memstore.selection.center as center
from memstore.selection.center import TorchMean, fast_mean_available, reader_mean, torch_mean
from memstore.selection.closest import (
    chunked_closest_order,
    closest_to_center_order,
    reference_distances,
)
from memstore.selection.herding import exact_herding_chunked, herding_order

pytestmark = pytest.mark.skipif(
    fast_mean_available() == 0, reason="the mean kernel does not reproduce torch here"
)


def _torch(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).mean(dim=0).numpy()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.int32), b.view(np.int32))


class Reader:
    """A chunked reader that is not an ndarray (shape and slicing only)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape = x, x.shape

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.x[key]


SHAPES = [
    (16385, 2),  # d < W: groups of 4 columns (none here), every column in row_sum's lanes
    (20003, 7),  # one group of 4, three tail columns; N mod 4 = 3 leftover rows
    (33001, 37),  # 4·W + 5 tail columns
    (9001, 47),  # 4·W + one vector of W + 7 scalars
    (70001, 100),
    (4099, 128),  # every column in the one-cascade groups
    (530001, 3),  # N > 2^19: chunks of 2^5 rows; N/4 > 2^17
    (2100003, 1 + 32),  # three levels full, a fourth one used
]


@pytest.mark.parametrize("n,d", SHAPES, ids=[f"{n}x{d}" for n, d in SHAPES])
def test_torch_mean_has_torchs_bits(n, d):
    rng = np.random.default_rng(n + d)
    x = (rng.standard_normal((n, d), dtype=np.float32) * 3 + 1.7).astype(np.float32)
    assert _same_bits(torch_mean(x), _torch(x))


@pytest.mark.parametrize("cuts", [[1], [3, 5, 6], [4095, 4096, 8000], [16]])
def test_blocks_of_any_size_give_the_same_bits(cuts):
    x = np.random.default_rng(2).standard_normal((20011, 37), dtype=np.float32)
    acc = TorchMean(*x.shape, fast_mean_available())
    for a, b in zip([0, *cuts], [*cuts, len(x)], strict=True):
        acc.add(x[a:b])
    assert _same_bits(acc.result(), _torch(x))


@pytest.mark.parametrize("cuts", [[5, 13, 21, 4000], [8, 16, 4096], [7]])
def test_groups_of_rows_start_anywhere_in_a_block(cuts):
    """The one-cascade columns are summed eight aligned rows at a time; blocks that start or
    end inside such a group (and the norms taken on the way) change no bit."""
    x = np.random.default_rng(5).standard_normal((4099, 64), dtype=np.float32) * 2
    x[2049] *= 3
    acc = TorchMean(*x.shape, fast_mean_available(), norms=True)
    for a, b in zip([0, *cuts], [*cuts, len(x)], strict=True):
        acc.add(x[a:b])
    assert _same_bits(acc.result(), _torch(x))
    assert acc.max_norm2 == pytest.approx(
        float((x.astype(np.float64) ** 2).sum(1).max()), rel=1e-13
    )


def test_two_threads_give_torchs_bits_too():
    x = np.random.default_rng(3).standard_normal((300001, 100), dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert fast_mean_available() in (0, 8) and _same_bits(torch_mean(x), _torch(x))
    finally:
        torch.set_num_threads(threads)


def test_the_probe_tells_the_vector_width_apart():
    # Every other width gives other bits on some probe array, so the probe decides.
    width = fast_mean_available()
    for w in (w for w in (4, 8, 16) if w != width):
        differ = []
        for x in center.probe_arrays():
            acc = TorchMean(*x.shape, w)
            acc.add(x)
            differ.append(not _same_bits(acc.result(), _torch(x)))
        assert any(differ), w


def test_without_the_kernel_torch_mean_is_torch(monkeypatch):
    monkeypatch.setitem(center._VERDICT, "width", 0)
    x = np.random.default_rng(5).standard_normal((70001, 9), dtype=np.float32)
    assert _same_bits(torch_mean(x), _torch(x))
    assert not center.stream_mean(*x.shape).exact  # a Float64Mean
    # the chunked fallback: a float64 mean rounded to float32
    expected = x.astype(np.float64).mean(axis=0).astype(np.float32)
    np.testing.assert_array_equal(reader_mean(Reader(x), 4096, "test"), expected)
    # chunked herding over an in-RAM float32 array still takes torch's own mean
    m = _mirrored(2, 6000, 12)
    np.testing.assert_array_equal(
        exact_herding_chunked(m, 200, chunk_rows=1999), herding_order(m, 200)
    )


def test_small_and_strided_inputs_are_torchs_own():
    x = np.random.default_rng(6).standard_normal((300, 40), dtype=np.float32)
    assert _same_bits(torch_mean(x), _torch(x))
    big = np.random.default_rng(7).standard_normal((20000, 64), dtype=np.float32)
    strided = big[:, ::2]
    assert _same_bits(torch_mean(strided), torch.from_numpy(strided).mean(dim=0).numpy())


def test_torch_mean_refuses_bad_blocks():
    acc = TorchMean(10, 4, 8)
    with pytest.raises(ValueError, match="float32"):
        acc.add(np.zeros((2, 4), dtype=np.float64))
    with pytest.raises(ValueError, match=r"\[m, 4\]"):
        acc.add(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[m, 4\]"):
        acc.add(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        acc.add([[0.0] * 4])
    acc.add(np.zeros((6, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="more than the 10 rows"):
        acc.add(np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="6 of 10 rows"):
        acc.result()


def _mirrored(seed: int, n: int, d: int) -> np.ndarray:
    """Rows in pairs ``p ± v`` about a point near the mean: each pair's distance tie is
    decided by the last bits of the center, so a float64-rounded center reorders them."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 3.0, d).astype(np.float32)
    v = rng.standard_normal((n // 2, d)).astype(np.float32)
    x = np.concatenate([p + v, p - v]).astype(np.float32)
    return np.ascontiguousarray(x[rng.permutation(len(x))])


def test_chunked_closest_from_a_reader_is_the_reference_order():
    x = _mirrored(0, 40000, 16)
    ref_center = torch.from_numpy(x).mean(dim=0)
    old_center = torch.from_numpy(x.astype(np.float64).mean(axis=0).astype(np.float32))
    expected = np.argsort(reference_distances(torch.from_numpy(x), ref_center), kind="stable")
    old = np.argsort(reference_distances(torch.from_numpy(x), old_center), kind="stable")
    assert not np.array_equal(old[:2000], expected[:2000])  # the old center did reorder here
    got = chunked_closest_order(Reader(x), 2000, chunk_rows=3001)
    np.testing.assert_array_equal(got, expected[:2000])
    np.testing.assert_array_equal(closest_to_center_order(x, 2000), expected[:2000])


def test_chunked_herding_from_a_reader_is_herding_order():
    x = _mirrored(1, 6000, 12)
    np.testing.assert_array_equal(
        exact_herding_chunked(Reader(x), 300, chunk_rows=1999), herding_order(x, 300)
    )


@pytest.mark.parametrize("n, d, kernel", [(20000, 37, True), (3000, 512, True), (50, 7, False)])
def test_the_mean_and_the_largest_row_norm_come_from_one_read(monkeypatch, n, d, kernel):
    from memstore.selection.center import mean_and_max_norm2

    if not kernel:
        monkeypatch.setitem(center._VERDICT, "width", 0)  # torch.mean and a second read
    x = np.random.default_rng(d).standard_normal((n, d), dtype=np.float32) * 3
    x[n // 3] *= 4  # one row far longer than the rest
    mean, norm2 = mean_and_max_norm2(x)
    assert _same_bits(mean, _torch(x))
    exact = (x.astype(np.float64) ** 2).sum(axis=1)  # the squares are exact in float64
    assert int(np.argmax(exact)) == n // 3
    assert norm2 == pytest.approx(exact.max(), rel=1e-13)
    assert norm2 >= np.einsum("ij,ij->i", x, x).max() * (1 - 1e-6)  # the float32 sums' max
    with pytest.raises(ValueError, match="without norms=True"):
        _ = TorchMean(n, d, 8).max_norm2


def test_an_infinite_feature_gives_an_infinite_largest_norm():
    """The norm kernel reassociates its sum but keeps inf (no ``ninf``): herding's callers
    refuse the bound on an inf norm rather than trust a finite one."""
    from memstore.selection.center import mean_and_max_norm2

    x = np.random.default_rng(3).standard_normal((3000, 64), dtype=np.float32)
    x[1234, 17] = np.inf
    _, norm2 = mean_and_max_norm2(x)
    assert norm2 == np.inf

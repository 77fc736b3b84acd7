"""Closest-to-center in RAM: a bounded fused distance pass, then the reference's expression on
the few rows that can rank in the first k — the order is the reference's exactly.

Adversarial data: duplicate rows, rows one float32 ulp apart (near-ties at the k-th
boundary), a large offset (cancellation in x − c), and a distance kernel that lies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memstore.selection.closest as closest
from memstore.selection.closest import bounded_distances, closest_to_center_order
from memstore.testing.reference import closest_to_center_order as reference_order


def _sets():
    rng = np.random.default_rng(11)
    gauss = rng.standard_normal((3000, 64)).astype(np.float32)
    base = rng.standard_normal((200, 32)).astype(np.float32)
    ulp = np.nextafter(base, np.float32(np.inf)) - base
    ties = np.concatenate([base, base, base + ulp, base - ulp, base[::-1], base])
    offset = (1e4 + 1e-2 * rng.standard_normal((2000, 48))).astype(np.float32)
    grid = rng.integers(-1, 2, size=(2500, 8)).astype(np.float32)  # many exact ties
    relu = np.maximum(rng.standard_normal((2000, 130)), 0).astype(np.float32)
    return [
        ("gauss", gauss),
        ("ulp-ties", ties),
        ("offset", offset),
        ("grid", grid),
        ("relu", relu),
    ]


@pytest.mark.parametrize("kind,x", _sets(), ids=[k for k, _ in _sets()])
def test_order_is_the_reference_at_every_k(kind, x):
    expected = reference_order(torch.from_numpy(x))
    for k in (1, 7, len(x) // 10, len(x) // 2, len(x) - 1, len(x)):
        assert closest_to_center_order(x, k).tolist() == expected[:k], k


def test_only_rows_near_the_boundary_are_rescored(monkeypatch):
    x = np.random.default_rng(2).standard_normal((20000, 32)).astype(np.float32)
    seen = []
    original = closest.reference_distances
    monkeypatch.setattr(
        closest, "reference_distances", lambda r, c: seen.append(len(r)) or original(r, c)
    )
    assert closest_to_center_order(x, 100).tolist() == reference_order(torch.from_numpy(x))[:100]
    assert len(seen) == 1 and 100 <= seen[0] < 300


def test_bounded_distances_are_within_their_bound():
    x = (1e3 + np.random.default_rng(5).standard_normal((500, 100))).astype(np.float32)
    c = x.mean(axis=0)
    approx = bounded_distances(x, c).astype(np.float64)
    exact = ((x.astype(np.float64) - c.astype(np.float64)) ** 2).sum(axis=1)
    g = 102 * 2.0**-24
    assert np.all(np.abs(approx - exact) <= g * exact / (1 - g) + 1e-30)


@pytest.mark.parametrize("n", [1, 7, 8, 803])
def test_the_distance_kernel_keeps_each_row_to_its_own_bound(n):
    """Eight rows at a time and the tail rows one by one: each row's float32 sum within
    ``γ_{d+2}`` of its own exact distance (a row mixed up with another is far outside)."""
    from memstore.selection._center_kernels import squared_distances

    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, 100)) * rng.uniform(0.5, 50, (n, 1)) + 1e3).astype(np.float32)
    c = x.mean(axis=0)
    out = np.empty(n, dtype=np.float32)
    squared_distances(x, c, out)
    exact = ((x.astype(np.float64) - c.astype(np.float64)) ** 2).sum(axis=1)
    g = 102 * 2.0**-24
    assert np.all(np.abs(out - exact) <= g * exact / (1 - g) + 1e-30)
    x[n // 2, 3] = np.inf
    assert bounded_distances(x, c) is None


def test_a_kernel_outside_its_bound_falls_back_to_the_reference(monkeypatch):
    x = np.random.default_rng(8).standard_normal((3000, 16)).astype(np.float32)
    expected = reference_order(torch.from_numpy(x))[:50]
    honest = closest.bounded_distances

    def lying(features, center):
        out = honest(features, center)
        out[np.argsort(out)[:40]] *= np.float32(1.001)  # wrong, yet all stay candidates
        return out

    monkeypatch.setattr(closest, "bounded_distances", lying)
    assert closest_to_center_order(x, 50).tolist() == expected


def test_non_float32_and_empty_inputs():
    x = np.random.default_rng(1).standard_normal((300, 8))
    expected = reference_order(torch.from_numpy(x))[:20]
    assert closest_to_center_order(x, 20).tolist() == expected
    assert closest_to_center_order(x.astype(np.float32), 0).shape == (0,)

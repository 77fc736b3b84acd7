"""Selection strategies: herding and closest-to-center return the reference's picks exactly
(float32, ties and near-ties included); random selection is the buffer generator's permutation.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from memstore import (
    ClosestToCenterSelectionStrategy,
    HerdingSelectionStrategy,
    RandomExemplarsSelectionStrategy,
)
from memstore.testing.reference import closest_to_center_order, herding_order

MODEL = torch.nn.Sequential(OrderedDict(feat=torch.nn.Identity(), head=torch.nn.Linear(1, 1)))
HERDING = HerdingSelectionStrategy(MODEL, "feat")
CLOSEST = ClosestToCenterSelectionStrategy(MODEL, "feat")


def reference_order(name: str, features: np.ndarray) -> list[int]:
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return herding_order(x) if name == "herding" else closest_to_center_order(x)


def strategy(name: str):
    return HERDING if name == "herding" else CLOSEST


def test_reference_unit_case():
    features = [[0.0], [4.0], [5.0]]
    assert herding_order(torch.tensor(features)) == [1, 0, 2]
    assert closest_to_center_order(torch.tensor(features)) == [1, 2, 0]
    for feats in (torch.tensor(features), np.array(features, dtype=np.float32)):
        herd = HERDING.make_sorted_indices_from_features(feats)
        close = CLOSEST.make_sorted_indices_from_features(feats)
        assert herd.tolist() == [1, 0, 2] and close.tolist() == [1, 2, 0]
        assert isinstance(herd, np.ndarray) and herd.dtype == np.int64
        assert isinstance(close, np.ndarray) and close.dtype == np.int64
    assert HERDING.make_sorted_indices_from_features(features, k=2).tolist() == [1, 0]
    assert CLOSEST.make_sorted_indices_from_features(features, k=1).tolist() == [1]
    assert HERDING.make_sorted_indices_from_features(features, k=0).tolist() == []


def _feature_sets():
    """Random sets with the shapes that break naive fast herding: exact ties, duplicate rows,
    near-ties at float32 resolution, large offsets, one dimension, many dimensions."""
    rng = np.random.default_rng(0)
    out = []
    for n, d in ((1, 1), (2, 3), (7, 1), (30, 4), (60, 16), (40, 64), (200, 8), (150, 3)):
        out.append(("normal", rng.standard_normal((n, d)).astype(np.float32)))
        out.append(("ints", rng.integers(-2, 3, size=(n, d)).astype(np.float32)))
    base = rng.standard_normal((10, 8)).astype(np.float32)
    out.append(("duplicates", np.concatenate([base, base, base[::-1]])))
    ulp = np.nextafter(base, np.float32(np.inf)) - base
    out.append(("ulp-apart", np.concatenate([base, base + ulp, base - ulp])))
    out.append(("offset", (1000 + 1e-3 * rng.standard_normal((50, 6))).astype(np.float32)))
    out.append(("tiny", (1e-20 * rng.standard_normal((30, 5))).astype(np.float32)))
    out.append(("huge", (1e15 * rng.standard_normal((30, 5))).astype(np.float32)))
    sym = rng.standard_normal((12, 3)).astype(np.float32)
    out.append(("symmetric", np.concatenate([sym, -sym])))
    out.append(("constant", np.ones((9, 4), dtype=np.float32)))
    out.append(("grid", np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)))
    return out


@pytest.mark.parametrize("name", ["herding", "closest"])
@pytest.mark.parametrize("kind,features", _feature_sets(), ids=[k for k, _ in _feature_sets()])
def test_orders_equal_reference(name, kind, features):
    expected = reference_order(name, features)
    got = strategy(name).make_sorted_indices_from_features(features)
    assert got.tolist() == expected
    for k in sorted({0, 1, len(features) // 3, len(features) - 1, len(features)}):
        if k >= 0:
            prefix = strategy(name).make_sorted_indices_from_features(features, k=k)
            assert prefix.tolist() == expected[:k], f"k={k}"


@settings(max_examples=50, deadline=None)
@given(
    features=st.integers(1, 25).flatmap(
        lambda n: st.integers(1, 5).flatmap(
            lambda d: hnp.arrays(
                np.float32,
                (n, d),
                elements=st.one_of(
                    st.integers(-3, 3).map(float),
                    st.floats(-100, 100, width=32, allow_subnormal=False),
                ),
            )
        )
    ),
    name=st.sampled_from(["herding", "closest"]),
    data=st.data(),
)
def test_orders_equal_reference_on_any_features(features, name, data):
    expected = reference_order(name, features)
    k = data.draw(st.integers(0, len(features)))
    got = strategy(name).make_sorted_indices_from_features(features, k=k)
    assert got.tolist() == expected[:k]


@pytest.mark.parametrize("n,k", [(0, 0), (1, 1), (10, 3), (50, 50)])
def test_random_is_the_generator_permutation(n, k):
    g1 = torch.Generator().manual_seed(11)
    g2 = torch.Generator().manual_seed(11)
    got = RandomExemplarsSelectionStrategy().select(n, features=None, generator=g1, k=k)
    assert got.dtype == np.int64
    assert got.tolist() == torch.randperm(n, generator=g2).tolist()[:k]
    assert torch.equal(g1.get_state(), g2.get_state())


def test_strategy_select_checks_features_per_row():
    with pytest.raises(ValueError, match="one feature row per candidate"):
        HERDING.select(3, features=np.zeros((2, 1), dtype=np.float32), k=1)


def _int8_sets():
    rng = np.random.default_rng(5)
    out = [(k, f) for k, f in _feature_sets() if k != "huge"]  # huge: falls back anyway
    out.append(("gauss-3000x64", rng.standard_normal((3000, 64)).astype(np.float32)))
    out.append(("relu-3000x64", np.maximum(rng.standard_normal((3000, 64)), 0).astype(np.float32)))
    out.append(("odd-d-500x100", rng.standard_normal((500, 100)).astype(np.float32)))
    return out


@pytest.mark.parametrize("kind,features", _int8_sets(), ids=[k for k, _ in _int8_sets()])
def test_int8_first_pass_keeps_the_reference_picks(kind, features):
    """Large inputs score rows from an int8 copy first; force that path on every size."""
    from memstore.selection.herding import herding_order as fast_herding

    k = min(len(features), 120)
    x = np.ascontiguousarray(features, np.float32)
    expected = herding_order(torch.from_numpy(x))
    assert fast_herding(x, k, kernel="torch-int8").tolist() == expected[:k]


@pytest.mark.parametrize("seed", range(6))
def test_reference_pick_has_the_reference_expressions_bits(seed):
    # The candidates' distances, computed by the reference's own torch expression, against
    # reference_pick's numpy steps: the same pick, and the same distances bit for bit.
    from memstore.selection.herding import reference_pick

    rng = np.random.default_rng(seed)
    d = [3, 64, 100, 512, 7, 1000][seed]
    rows = (rng.standard_normal((9, d)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    rows[4] = rows[1]  # an exact tie: the first wins
    center = rows.mean(axis=0) + np.float32(1e-3)
    for i in (0, 1, 5, 199, 12_345):
        cur = (center + rng.standard_normal(d).astype(np.float32) * 0.1).astype(np.float32)
        ct, rt, ce = torch.from_numpy(cur), torch.from_numpy(rows), torch.from_numpy(center)
        expected = pow(ct * i / (i + 1) + rt / (i + 1) - ce, 2).sum(dim=1)
        assert reference_pick(cur, rows, i, center) == int(torch.argmin(expected))
        step = np.float32(i + 1)
        ours = (rows / step + cur * np.float32(i) / step - center) ** 2
        assert torch.equal(torch.from_numpy(ours).sum(dim=1), expected)
    assert reference_pick(center, rows[4:5], 3, center) == 0


def test_separated_pick_decides_only_what_the_reference_would():
    # Near-tie candidates at relative gaps around the bound: whenever the distances are
    # bounded apart the pick is the reference's own; duplicates are left to its sums.
    from memstore.selection.rounding import separated_pick

    rng = np.random.default_rng(5)
    decided = 0
    for _ in range(400):
        d = int(rng.choice([7, 128, 512]))
        center = rng.standard_normal(d).astype(np.float32)
        cur = (center + rng.standard_normal(d).astype(np.float32) * 0.2).astype(np.float32)
        base = rng.standard_normal(d).astype(np.float32)
        rows = np.stack([base, base, base])
        rows[1:] += (rng.standard_normal((2, d)) * 10.0 ** rng.uniform(-6, -1)).astype(np.float32)
        i = int(rng.integers(0, 500))
        ct, rt, ce = torch.from_numpy(cur), torch.from_numpy(rows), torch.from_numpy(center)
        expected = int(torch.argmin(pow(ct * i / (i + 1) + rt / (i + 1) - ce, 2).sum(dim=1)))
        got = separated_pick(cur, rows, i, center)
        assert got in (-1, expected)
        decided += got >= 0
    assert 50 < decided < 400  # both outcomes occur in this range of gaps
    same = np.stack([base, base])
    assert separated_pick(cur, same, 3, center) == -1  # exact duplicates: the sums decide
    far = np.stack([center, center + 5])
    assert separated_pick(center, far, 0, center) == 0
    assert separated_pick(center, far[::-1].copy(), 0, center) == 1
    far[0, 0] = np.inf  # an overflowing distance loses, as in the reference
    assert separated_pick(center, far, 0, center) == 1
    far[1, 0] = np.inf  # two of them: not bounded apart
    assert separated_pick(center, far, 0, center) == -1

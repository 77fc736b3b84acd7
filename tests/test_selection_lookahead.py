"""The VNNI pass's look-ahead: columns of the likely next picks computed in the same read, so
one pass can decide several picks — the same picks as the reference, each score within its
grown bound, and really fewer passes than picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memstore.selection import herding, scores
from memstore.selection.rounding import advance_center, row_error
from memstore.selection.scores import VnniScores, vnni_usable
from memstore.testing.reference import herding_loop

pytestmark = pytest.mark.skipif(not vnni_usable(1, 64), reason="no AVX-512 VNNI here")


def _data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "duplicates":  # exact ties: the reference's expression decides among them
        return np.concatenate([x[: n // 2], x[: n // 2]])
    if kind == "grid":  # integer rows: many equal scores
        return rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    return x


def _spy(monkeypatch, plan: tuple[int, int]) -> list:
    """Force a plan (query digits, look-ahead rows) in every VnniScores herding builds; the
    list gets them."""
    built = []

    class Spy(VnniScores):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, plan=plan)
            built.append(self)

    monkeypatch.setattr("memstore.selection.kernels.VnniScores", Spy)
    return built


# Passes measured for these inputs, plans (2, 4) / (2, 1) / (1, 1): gauss 70 / 81 / 83, relu
# 68 / 81 / 80, duplicates 141 each, grid 78 / 82 / 82 of 150 picks. Duplicates chain least:
# every exact tie goes back to Python (the reference's expression), and a pass follows.
@pytest.mark.parametrize("plan", [(2, 4), (2, 1), (1, 1)])
@pytest.mark.parametrize(
    "kind, passes", [("gauss", 100), ("relu", 100), ("duplicates", 150), ("grid", 100)]
)
def test_look_ahead_gives_the_reference_picks_in_fewer_passes(monkeypatch, kind, passes, plan):
    x = _data(kind, 1200, 96, seed=1)
    built = _spy(monkeypatch, plan)
    expected = herding_loop(torch.from_numpy(x), 150)
    assert herding.herding_order(x, 150, kernel="vnni-int8").tolist() == expected
    assert built[0]._digits.shape[0] == sum(plan)  # the query's digits, then the rows
    assert built[0].passes < passes  # look-ahead decided picks without a pass


def test_without_look_ahead_every_pick_takes_a_pass(monkeypatch):
    x = _data("gauss", 1200, 96, seed=2)
    built = _spy(monkeypatch, (1, 0))
    expected = herding_loop(torch.from_numpy(x), 60)
    assert herding.herding_order(x, 60, kernel="vnni-int8").tolist() == expected
    assert built[0]._digits.shape[0] == 1  # one query digit: these rows sit in cache
    settled = 60 - built[0].passes  # picks the reference's expression settled in Python
    assert 0 <= settled < 60


@pytest.mark.parametrize("kind", ["gauss", "relu"])
def test_moved_scores_stay_within_their_grown_bound(kind):
    from memstore.selection._int8_kernels import ahead_error, int8_pass
    from memstore.selection._lookahead_kernels import add_column, ahead_digits, moved_query

    x = _data(kind, 700, 80, seed=3)
    c32 = torch.from_numpy(x).mean(dim=0).numpy()
    xmax = float(np.sqrt((x.astype(np.float64) ** 2).sum(axis=1).max())) * 1.001
    s = VnniScores(x, c32, xmax, plan=(2, 4))
    y = x.astype(np.float64) - c32.astype(np.float64)
    c64 = c32.astype(np.float64)
    rng = np.random.default_rng(4)
    cur = x[rng.choice(700, 7, replace=False)].mean(axis=0).astype(np.float32)
    for i in (7, 8, 9):  # three moves in a row, as one pass may take
        tp = i * (c64 - cur.astype(np.float64))
        if i == 7:  # a fresh pass with the four rows of smallest score as look-ahead
            s.scores(tp, float(np.linalg.norm(tp)))
            est = s._est  # padded: the look-ahead moves every row
            rows = np.argsort(est[:700], kind="stable")[:4]
            s._ahead[:] = rows
            ahead_digits(s.qb, s._ahead, s._digits, 2)
            int8_pass(s.qb, s._digits, s.padded_offset, s._sums)
            coef = s._coef
        p = int(s._ahead[i - 7])  # moves by each of the look-ahead rows in turn
        s_p = 0.5 * s.scale2[p]
        advance_center(cur, x[p], i)
        tq = np.empty_like(tp)
        tn, dn = moved_query(tp, np.sqrt(tp @ tp), tq, cur, c64, i + 1, s_p, s._digits[2 + i - 7])
        assert np.array_equal(tq, (i + 1) * (c64 - cur.astype(np.float64)))
        add_column(est, s._sums[2 + i - 7], s.scale2, s_p)
        coef = ahead_error(coef, np.sqrt(tp @ tp), dn, tn, s.ymax, s.res2max, s.yh2max)
        exact = (y**2).sum(axis=1) - 2 * (y @ tq)
        gap = np.abs(est[:700].astype(np.float64) - exact)
        bound = row_error(s.res2, s.yh2, *coef)
        assert np.all(gap <= bound), i
        assert gap.max() > bound.max() * 1e-3  # the bound is not vacuous
        assert est[p] < np.inf and np.all(est[700:] == np.inf)  # padding never scores


def test_the_probe_takes_the_plan_of_least_pass_time_per_pick(monkeypatch):
    x = _data("gauss", 600, 64, seed=5)
    c32 = x.mean(axis=0)
    s = VnniScores(x, c32, 30.0, plan=(1, 0))
    assert min(s.pass_seconds(w) for w in (1, 2, 3, 6)) > 0 and s.guess_seconds() > 0
    with pytest.raises(ValueError, match=r"width must be one of \[1, 2, 3, 6\], got 4"):
        s.pass_seconds(4)
    with pytest.raises(ValueError, match=r"plan must be one of .*, got \(2, 2\)"):
        VnniScores(x, c32, 30.0, plan=(2, 2))
    # the measured times weighed by the passes each plan takes per pick: make one plan win
    for weights, plan in (
        ({0: 1e-9, 1: 1.0, 4: 1.0}, (1, 0)),  # no look-ahead
        ({0: 1.0, 1: 1.0, 4: 1e-9}, (2, 4)),  # four rows
    ):
        monkeypatch.setattr(scores, "PASSES_PER_PICK", weights)
        monkeypatch.setattr(scores, "_PLAN_VERDICT", {})
        assert VnniScores(x, c32, 30.0).best_plan() == plan
        built = VnniScores(x, c32, 30.0)
        assert (built.query_digits, built.look_ahead) == plan
        assert built._digits.shape[0] == sum(plan)
        assert list(scores._PLAN_VERDICT) == [(38 * 16 * 64).bit_length()]  # 38 blocks
        assert scores._PLAN_VERDICT[(38 * 16 * 64).bit_length()] == plan  # cached


def test_the_guess_is_the_smallest_moved_score_among_the_smallest_rows():
    from memstore.selection._int8_kernels import argmin32
    from memstore.selection._lookahead_kernels import near_rows, predicted_rows

    x = _data("gauss", 3000, 128, seed=6)
    c32 = x.mean(axis=0)
    s = VnniScores(x, c32, 40.0, plan=(2, 1))
    rng = np.random.default_rng(7)
    est = (rng.standard_normal(3000) * 50 + 400).astype(np.float32)
    est[rng.choice(3000, 40, replace=False)] = np.inf  # picked rows: never near
    gap, near = np.zeros(1), np.empty(64, dtype=np.int64)
    block_min = np.empty(-(-3000 // 64), dtype=np.int32)
    argmin32(est, block_min)
    m = near_rows(est, block_min, gap, near)
    assert 16 <= m <= 64 and np.isfinite(gap[0])
    assert sorted(near[:m].tolist()) == sorted(np.argsort(est, kind="stable")[:m].tolist())
    assert near_rows(est, block_min, gap, near) == m  # the kept gap is found again at once
    est[near[0]] = np.inf  # picked since argmin32: its block's bound is only lower, still
    assert near_rows(est, block_min, gap, near) in (m - 1, m)  # a bound; one row fewer
    assert np.all(est[near[: m - 1]] < np.inf)
    sq = s.padded_sq.copy()
    sq[near[3]] = np.inf  # a row picked in Python, whose score is still finite
    p = int(np.argmax(est < np.inf))
    out, moved = np.zeros(1, dtype=np.int64), np.empty(64, dtype=np.float32)
    m = near_rows(est, block_min, gap, near)
    predicted_rows(est, block_min, sq, s.qb, s.padded_offset, s.scale2, p, gap, near, moved, out)
    q = s.qb.transpose(0, 2, 1, 3).reshape(-1, 128)[:3000]  # row-major int8 codes
    scale = 0.5 * s.scale2[:3000]
    rows = np.array([j for j in near[:m] if sq[j] < np.inf])
    exact = est[rows] + 2 * scale[rows] * scale[p] * (q[rows].astype(np.int64) @ q[p])
    assert out[0] == rows[np.argmin(exact)]

"""The AVX-512 VNNI first pass of exact herding: exact integer sums, a rigorous bound, the
fused pick loop equal to the reference, and the fallbacks (no VNNI, a bound too loose)."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from memstore.selection import herding
from memstore.selection.kernels import make_scores
from memstore.selection.scores import Float32Scores, Int8Scores, VnniScores, vnni_usable
from memstore.testing.reference import herding_loop

needs_vnni = pytest.mark.skipif(not vnni_usable(1, 64), reason="no AVX-512 VNNI here")


def _quantized(x: np.ndarray, per_line: int = 1) -> tuple[np.ndarray, ...]:
    from memstore.selection._int8_kernels import quantize_rows

    n, d = x.shape
    lines, dpad = -(-n // per_line), -(-d // 64) * 64
    dest = np.zeros((lines, dpad // 4, per_line), dtype=np.int32)
    sq, scales, res = (np.empty(n, dtype=np.float32) for _ in range(3))
    offset = np.empty(n, dtype=np.int64)
    center = x.mean(axis=0)
    quantize_rows(x, center, dest, sq, scales, res, offset)
    q = dest.view(np.int8).reshape(lines, dpad // 4, per_line, 4).transpose(0, 2, 1, 3)
    return center, q.reshape(lines * per_line, dpad)[:n], sq, scales, res, offset, dest


def _blocked(q: np.ndarray) -> np.ndarray:
    """Row-major int8 rows in dot2x16's layout [B, D/4, 16, 4] (zero rows after N)."""
    n, d = q.shape
    pad = np.zeros((-(-n // 16) * 16, d), dtype=np.int8)
    pad[:n] = q
    return np.ascontiguousarray(pad.reshape(-1, 16, d // 4, 4).transpose(0, 2, 1, 3))


@needs_vnni
@pytest.mark.parametrize("d", [64, 2048])
@pytest.mark.parametrize("rows", [32, 43])  # whole blocks of 16 rows, and a part block
def test_vnni_sums_are_exact_at_the_extremes(d, rows):
    from memstore.selection._int8_kernels import row_sums

    rng = np.random.default_rng(0)
    q = rng.choice(np.array([-127, 127, 0, 1], dtype=np.int8), size=(rows, d))
    q[0] = 127
    q[rows - 1] = -127
    a = rng.integers(0, 256, d, dtype=np.uint8)
    b = np.full(d, 255, dtype=np.uint8)
    out = np.full((rows + 1, 2), -1, dtype=np.int32)
    row_sums(_blocked(q), rows, np.stack([a, b]), out)
    expected = q.astype(np.int64) @ np.stack([a, b]).T.astype(np.int64)
    assert np.array_equal(out[:rows], expected)
    assert out[rows - 1, 1] == -127 * 255 * d
    assert list(out[rows]) == [-1, -1]  # nothing written past the rows asked for


@needs_vnni
def test_both_layouts_hold_the_same_quantised_rows():
    x = np.random.default_rng(5).standard_normal((37, 70)).astype(np.float32)
    row_major, blocked = _quantized(x, 1), _quantized(x, 16)
    for a, b in zip(row_major[:6], blocked[:6], strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(_blocked(row_major[1]).view(np.int32).ravel(), blocked[6].ravel())


@needs_vnni
def test_quantized_rows_keep_their_promises():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 100)).astype(np.float32) * 3
    x[7] = x.mean(axis=0)  # a ~zero row after centring
    center, q, sq, scales, res, offset, _ = _quantized(x)
    y = x - center
    assert np.abs(q).max() <= 127 and not q[:, 100:].any()  # padding stays zero
    bf16 = torch.from_numpy(scales).bfloat16().float().numpy()
    assert np.array_equal(bf16, scales)  # bf16 values, so the torch kernel can share them
    assert np.all(scales * 127 >= np.abs(y).max(axis=1))
    assert np.array_equal(offset, 128 * q.sum(axis=1, dtype=np.int64))
    resid = y.astype(np.float64) - q[:, :100] * scales[:, None].astype(np.float64)
    assert np.allclose(res, (resid**2).sum(axis=1), rtol=1e-5, atol=1e-30)
    assert np.allclose(sq, (y.astype(np.float64) ** 2).sum(axis=1), rtol=1e-5)


@needs_vnni
@pytest.mark.parametrize("kind", ["vnni-int8", "torch-int8"])
def test_int8_scores_stay_within_their_bound(kind):
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((500, 96)), -0.3).astype(np.float32)
    c32 = torch.from_numpy(x).mean(dim=0).numpy()
    xmax = float(np.sqrt((x.astype(np.float64) ** 2).sum(axis=1).max())) * 1.001
    scorer = make_scores(torch.from_numpy(x), c32, xmax, 100, kind)
    assert type(scorer) is {"vnni-int8": VnniScores, "torch-int8": Int8Scores}[kind]
    y = x.astype(np.float64) - c32.astype(np.float64)
    for scale in (0.0, 1e-3, 1.0, 40.0):
        tp = rng.standard_normal(96) * scale
        est, shift = scorer.scores(tp, float(np.linalg.norm(tp)))
        exact = (y**2).sum(axis=1) - 2 * (y @ tp)
        gap = np.abs(est.astype(np.float64) + shift - exact)
        assert np.all(gap <= scorer.err(np.arange(500))), scale
        assert gap.max() > 0 or scale == 0.0  # the estimate is really approximate


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_loop_gives_the_reference_picks_through_ties(seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(-2, 3, size=(120, 40)).astype(np.float32)
    x = np.concatenate([base, base, base[::-1]])  # exact duplicates: the reference decides
    expected = herding_loop(torch.from_numpy(x), 150)
    assert herding.herding_order(x, 150, kernel="vnni-int8").tolist() == expected


@needs_vnni
def test_a_loose_bound_switches_to_the_float32_pass(monkeypatch):
    # Two groups of 400 rows, ±u plus noise far below int8 resolution: from the second pick
    # on, a whole group lies within the int8 bound of the best, more than the 256 allowed.
    rng = np.random.default_rng(3)
    u = rng.standard_normal(32)
    signs = np.where(np.arange(800) % 2 == 0, 1.0, -1.0)[:, None]
    x = (signs * u / np.linalg.norm(u) + 1e-4 * rng.standard_normal((800, 32))).astype(np.float32)
    built = []

    def float32_scores(*args):
        built.append(args[0].shape)
        return Float32Scores(*args)

    monkeypatch.setattr(herding, "Float32Scores", float32_scores)
    expected = herding_loop(torch.from_numpy(x), 30)
    assert herding.herding_order(x, 30, kernel="vnni-int8").tolist() == expected
    assert built == [(800, 32)]


def test_vnni_is_refused_where_numba_targets_another_cpu(monkeypatch):
    x = np.random.default_rng(4).standard_normal((50, 8)).astype(np.float32)
    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    assert not vnni_usable(50, 8)
    scorer = make_scores(torch.from_numpy(x), x.mean(axis=0), 10.0, 20, "vnni-int8")
    assert isinstance(scorer, Float32Scores)
    assert herding.herding_order(x, 20, kernel="vnni-int8").tolist() == herding_loop(
        torch.from_numpy(x), 20
    )


@needs_vnni
def test_vnni_is_refused_where_int32_sums_could_overflow():
    assert vnni_usable(10, 65_536)  # 65 536 · 255 · 128 < 2^31
    assert not vnni_usable(10, 70_000)
    assert not vnni_usable(10, 0) and not vnni_usable(0, 8)  # nothing to pass over
    x = np.zeros((50, 0), dtype=np.float32)
    assert herding.herding_order(x, 5, kernel="vnni-int8").tolist() == [0, 1, 2, 3, 4]


@needs_vnni
def test_the_default_takes_vnni_from_its_threshold():
    from memstore.selection.kernels import VNNI_MIN_ELEMENTS, VNNI_MIN_K, fastest_kernel

    if fastest_kernel() != "vnni-int8":
        pytest.skip("the probe found another kernel faster here")
    rng = np.random.default_rng(6)
    rows = VNNI_MIN_ELEMENTS // 128
    x = rng.standard_normal((rows, 128)).astype(np.float32)
    c32, xt = x.mean(axis=0), torch.from_numpy(x)
    assert isinstance(make_scores(xt, c32, 30.0, VNNI_MIN_K), VnniScores)
    assert isinstance(make_scores(xt, c32, 30.0, VNNI_MIN_K - 1), Float32Scores)
    small = torch.from_numpy(x[: rows - 1])
    assert isinstance(make_scores(small, c32, 30.0, VNNI_MIN_K), Float32Scores)


@pytest.mark.parametrize("kind", ["vnni-int8", "torch-int8"])
def test_a_kernel_numba_cannot_build_falls_back_to_float32(monkeypatch, kind):
    from numba.core.errors import TypingError

    from memstore.selection import _int8_kernels

    def broken(*args):
        raise TypingError("no such lowering here")

    monkeypatch.setattr(_int8_kernels, "quantize_rows", broken)
    x = np.random.default_rng(7).standard_normal((300, 64)).astype(np.float32)
    scorer = make_scores(torch.from_numpy(x), x.mean(axis=0), 30.0, 50, kind)
    assert isinstance(scorer, Float32Scores)
    expected = herding_loop(torch.from_numpy(x), 50)
    assert herding.herding_order(x, 50, kernel=kind).tolist() == expected


@needs_vnni
@pytest.mark.parametrize("n", [1, 63, 64, 200, 1000])
def test_argmin32_is_the_first_smallest_with_negative_zero_below_zero(n):
    from memstore.selection._int8_kernels import argmin32

    rng = np.random.default_rng(n)

    def argmin(est):
        block_min = np.empty(-(-len(est) // 64), dtype=np.int32)
        j = argmin32(est, block_min)
        keys = est.view(np.int32) ^ ((est.view(np.int32) >> 31) & 0x7FFFFFFF)
        pad = np.full(64 * len(block_min), 0x7FFFFFFF, dtype=np.int32)
        pad[: len(est)] = keys
        assert block_min.tolist() == pad.reshape(-1, 64).min(axis=1).tolist()
        return j

    for at in {0, n // 2, n - 1}:  # in the first block, a middle one, the tail
        est = (rng.random(n) + 1).astype(np.float32)
        est[::3] = np.inf
        est[at] = est[n - 1] = 0.5  # a tie after the first smallest: the first wins
        assert argmin(est) == int(np.argmin(est)) == at
    zeros = np.array([1.0, 0.0, -0.0, -0.0, 0.0] * n, dtype=np.float32)
    assert argmin(zeros) == 2  # -0.0 counts below +0.0
    assert argmin(np.full(n, np.inf, dtype=np.float32)) == 0


@needs_vnni
@pytest.mark.parametrize("d", [1, 7, 64, 513])
def test_float64_rescoring_is_within_its_share_of_the_margin(d):
    # Summed in any order (reassoc): within γ_{d+6}·Σ(|r|+|c|+|t|)² of the exact value (the
    # form of near_tie_margin's float64 term), and an inf stays inf.
    from fractions import Fraction

    from memstore.selection._int8_kernels import float64_score

    rng = np.random.default_rng(d)
    for scale in (1e-3, 1.0, 1e6):
        row = (rng.standard_normal(d) * scale).astype(np.float32)
        center, tp = rng.standard_normal(d) * scale, rng.standard_normal(d) * scale
        exact = sum(
            (Fraction(float(r)) - Fraction(float(c)) - Fraction(float(t))) ** 2
            for r, c, t in zip(row, center, tp, strict=True)
        )
        got = float64_score(row, center, tp)
        gamma = (d + 6) * 2.0**-53 / (1 - (d + 6) * 2.0**-53)
        size = sum(
            (abs(float(r)) + abs(c) + abs(t)) ** 2 for r, c, t in zip(row, center, tp, strict=True)
        )
        assert abs(Fraction(got) - exact) <= Fraction(gamma * size)
    row[d // 2] = np.inf
    assert float64_score(row, center, tp) == np.inf


@needs_vnni
def test_the_sums_check_refuses_a_kernel_off_by_one_in_any_width():
    from memstore.selection import scores
    from memstore.selection._int8_kernels import row_sums

    x = np.random.default_rng(8).standard_normal((300, 80)).astype(np.float32)
    s = VnniScores(x, x.mean(axis=0), 30.0, plan=(1, 0))
    assert scores._VNNI_CHECKED == [True]  # checked once, at the first copy of the process
    s._check_kernel(row_sums, 256)  # the real kernel passes
    for width in (1, 2, 3, 6):

        def off_by_one(qb, n, digits, out, width=width):
            row_sums(qb, n, digits, out)
            if digits.shape[0] == width:
                out[n - 1, width - 1] += 1

        with pytest.raises(RuntimeError, match="integer sums are wrong"):
            s._check_kernel(off_by_one, 256)


@needs_vnni
@pytest.mark.parametrize("cut", [-0.0, 0.0, 0.75, -2.0])
def test_finalists_skip_only_blocks_that_hold_no_candidate(cut):
    from memstore.selection._int8_kernels import argmin32, finalists

    rng = np.random.default_rng(9)
    est = (rng.random(300) + 1).astype(np.float32)
    est[70] = 0.0  # +0.0 alone in its block: est <= -0.0 holds for it too
    est[200], est[201], est[5] = -0.0, 0.5, -1.0
    block_min = np.empty(5, dtype=np.int32)
    argmin32(est, block_min)
    zeros = np.zeros(300, dtype=np.float32)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    out = np.empty(300, dtype=np.int64)
    center, tp = np.zeros(8), np.zeros(8)
    m = finalists(est, block_min, zeros, zeros, (0.0, 0.0, 0.0), cut, cut, x, center, tp,
                  np.inf, 300, out)  # fmt: skip
    assert sorted(out[:m].tolist()) == np.flatnonzero(est <= np.float32(cut)).tolist()


@needs_vnni
@pytest.mark.parametrize("d", [64, 2048])
def test_the_row_dot_is_exact_at_the_extremes(d):
    # One row of the blocked copy against one digit row, by gathers: exact int32 sums at
    # the largest magnitudes (127·255·d), every row of a part block.
    import numba

    from memstore.selection._vnni_dot import row_dot

    @numba.njit
    def dots(qb, digits, n):
        return [row_dot(qb, j, digits) for j in range(n)]

    rng = np.random.default_rng(d)
    q = rng.choice(np.array([-127, 127, 0, 1], dtype=np.int8), size=(43, d))
    q[0], q[42] = 127, -127
    for digits in (rng.integers(0, 256, d, dtype=np.uint8), np.full(d, 255, dtype=np.uint8)):
        expected = q.astype(np.int64) @ digits.astype(np.int64)
        assert dots(_blocked(q), digits, 43) == expected.tolist()
    assert expected[42] == -127 * 255 * d

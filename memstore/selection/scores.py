"""First-pass herding scorers: every row's score with a rigorous error bound, cheaply.

Exact herding (:mod:`.herding`) scores all rows once per pick and re-scores only the rows
that could still be the reference's pick. The scorers here make that first pass:

* :class:`Float32Scores` — one float32 sgemv over the features (the fallback, always exact
  enough: its bound is tight);
* :class:`Int8Scores` — torch's weight-only int8 kernel over a centred int8 copy (private
  torch API, looked up once, guarded and checked on a probe);
* :class:`VnniScores` — AVX-512 VNNI over a blocked int8 copy, exact integer sums (numba code
  in :mod:`._int8_kernels`, only where :func:`vnni_usable`), with the whole pick loop fused
  (:meth:`VnniScores.herd`).

Both int8 scorers share :class:`Int8Rows`, the copy and its per-row bound terms.

:func:`.kernels.make_scores` picks one, by a measured probe at first use
(:func:`.kernels.fastest_kernel`), overridable for tests and benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .readers import row_blocks
from .rounding import (
    U32,
    digits_error,
    float32_threshold,
    gamma,
    int8_common_error,
    row_error,
)

__all__ = [
    "Float32Scores",
    "Int8Rows",
    "Int8Scores",
    "VnniScores",
    "vnni_usable",
    "float32_query",
    "float32_error",
    "int8_kernel_usable",
    "INT8_MIN_ELEMENTS",
    "INT8_MIN_K",
]

# torch's weight-only int8 mat-mul is private API: looked up once, guarded, checked on a probe
# before each use (Int8Scores), with the float32 path as the fallback.
_INT8_KERNEL = getattr(torch, "_weight_int8pack_mm", None)  # shape: allow private torch kernel

_UBF16 = 2.0**-8  # unit roundoff of bfloat16
INT8_MIN_ELEMENTS = 1 << 21  # below ~8 MiB of features a float32 pass is cache-resident
INT8_MIN_K = 64  # building the int8 copy costs ~25 float32 passes; worth it from here
CHAIN = 4  # VNNI look-ahead: at most this many picks per pass (the bound grows with each)
#: The VNNI pass's plans, ``(query digits, look-ahead rows)``: a pass reads the int8 rows once
#: and sums them against ``query digits + look-ahead rows`` digit rows (1, 2, 3 or 6).
PLANS = ((1, 0), (1, 1), (2, 1), (2, 4))
#: Passes per pick with that many look-ahead rows: what the probe weighs a pass's measured
#: time by. Herding 200 of 10 000 Gaussian and relu-like rows counted with
#: ``VnniScores.passes``: one row 0.53–0.54 at d = 512, 0.60–0.62 at d = 128; four rows
#: 0.45 and 0.56–0.58 (the averages here).
PASSES_PER_PICK = {0: 1.0, 1: 0.57, 4: 0.5}
#: A one-digit query's looser bound leaves more rows to re-score, most of all after a move
#: (each a float64 read of a feature row): 10 000×512, plan (1, 1) against (2, 1), cost
#: 9–27 % more per herding here (four same-process timings) for a pass only 5 % narrower.
ONE_DIGIT_COST = 1.2
#: At most this many rows of smallest score (a quarter to all of them) are moved by the last
#: pick to guess the next one (``_int8_kernels.predicted_rows``).
NEAR = 64
WIDTHS = (1, 2, 3, 6)  # digit rows per pass: the plans' sums
_VNNI_CHECKED: list[bool] = []  # process-wide: the VNNI sums matched numpy's once
_HOST_VNNI: list[bool] = []  # process-wide: whether this CPU has AVX-512 VNNI (asked once)
_PLAN_VERDICT: dict[int, tuple[int, int]] = {}  # process-wide: int8 copy size class → plan


# -- first-pass scores (in RAM) ---------------------------------------------------------------
class Float32Scores:
    """Estimates of ``σ'_j = ‖y_j‖² − 2⟨y_j, t'⟩`` (``y = x − center``) by one float32 sgemv.

    ``⟨y, t'⟩ = ⟨x, t'⟩ − ⟨center, t'⟩``: the sgemv reads the features themselves and the
    last term, the same for every row, is returned as ``shift``; only when the mean is large
    against the spread (where that cancellation would cost precision) is a centred float32
    copy made.
    """

    def __init__(self, x32: np.ndarray, c32: np.ndarray, xmax: float) -> None:
        n, d = x32.shape
        self.d, self.c64 = d, c32.astype(np.float64)
        self.cn = float(self.c64 @ self.c64) ** 0.5
        self.sq = np.empty(n, dtype=np.float32)
        for a, b in row_blocks(n, d):
            y = x32[a:b] - c32
            self.sq[a:b] = np.einsum("ij,ij->i", y, y)
        self.ymax = float(self.sq.max() * (1 + gamma(d + 2))) ** 0.5 * (1 + U32)
        self.centred = self.cn > 2 * self.ymax
        self.rows = x32 - c32 if self.centred else x32
        self.rmax = self.ymax * (1 + 2 * U32) if self.centred else xmax

    def exclude(self, rows: Any) -> None:
        """Score ``rows`` +inf from now on (picked rows): ``‖y‖²`` of them becomes +inf."""
        self.sq[rows] = np.inf

    def scores(self, tp: np.ndarray, tn: float) -> tuple[np.ndarray, float]:
        """``est`` (float32, fresh) and ``shift``: ``|est_j + shift − σ'_j| ≤ self.err(j)``
        (+inf for excluded rows)."""
        t32, tn32, ta = float32_query(tp)
        est = self.rows @ t32  # ≈ −2⟨row, t'⟩
        est += self.sq
        self._err = float32_error(self.d, self.ymax, self.rmax, self.cn, tn32, ta, tn)
        return est, 0.0 if self.centred else 2.0 * float(self.c64 @ tp)

    def err(self, rows: Any = None) -> Any:
        """The error bound of the last ``scores`` (the same for every row)."""
        return self._err


def float32_query(tp: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``−2t'`` in float32, ``‖t'‖`` as rounded and the rounding error ``‖t'_32 − t'‖``."""
    t32 = (-2.0 * tp).astype(np.float32)
    t64 = t32.astype(np.float64)
    tn32 = 0.5 * float(t64 @ t64) ** 0.5
    t64 += 2.0 * tp
    return t32, tn32, 0.5 * float(t64 @ t64) ** 0.5


def float32_error(
    d: int, ym: float, rm: float, cn: float, tn32: float, ta: float, tn: float
) -> float:
    """Bound on ``|rows @ t32 + ‖y‖² + shift − σ'|`` (float32), rows of norm <= ``rm``."""
    g = gamma(d + 2)
    bound = (
        (g + 6 * U32) * ym * ym  # ‖y‖² in float32 (y itself rounded once)
        + 2 * (g + U32) * rm * tn32  # the dot products; centred rows rounded once
        + 2 * rm * ta  # t' rounded to float32
        + U32 * (ym * ym + 2 * rm * tn32 * (1 + g))  # adding ‖y‖²
        + 2 * gamma(d + 2, 2.0**-53) * cn * tn  # the shift, in float64
        + 1e-14 * (rm + cn) * tn  # t' itself (float64)
        + d * 2.0**-140  # subnormal products
    )
    return 1.01 * bound + 1e-30


class Int8Rows:
    """An int8 copy of ``y = x − center`` (per-row bf16 scale, rows padded to 64 bytes) and
    the per-row terms of the int8 scorers' bounds: ``‖y_j − ŷ_j‖`` and ``‖ŷ_j‖`` (doubled,
    rounded up), with ``ŷ`` the dequantised row. ``q`` is row-major ``[N, D]``, or with
    ``rows_per_line=16`` blocked ``[⌈N/16⌉, D/4, 64]`` (16 rows × 4 columns per 64-byte
    line, zero rows after ``N``). Building it costs about two float32 passes."""

    def __init__(
        self, x32: np.ndarray, c32: np.ndarray, xmax: float, rows_per_line: int = 1
    ) -> None:
        from ._int8_kernels import quantize_rows  # numba: imported on first use

        n, d = x32.shape
        self.d, self.xmax = d, xmax
        dpad = -(-d // 64) * 64  # the kernels read 64-byte vectors without a tail loop
        lines = -(-n // rows_per_line)
        shape = (n, dpad) if rows_per_line == 1 else (lines, dpad // 4, 4 * rows_per_line)
        self.q = torch.zeros(shape, dtype=torch.int8)  # torch-allocated: 64-byte aligned
        dest = self.q.numpy().view(np.int32).reshape(lines, dpad // 4, rows_per_line)
        # Whole lines of rows, the padding rows never scored (‖y‖² = +inf); sq, scales and
        # offset are views of the first n.
        rows = lines * rows_per_line
        wide = dpad * 128 * 127 >= 2**31  # else 128·Σ_c q_j[c] fits int32 (what VNNI adds to)
        self.padded_sq = np.full(rows, np.inf, dtype=np.float32)
        self.padded_scales = np.ones(rows, dtype=np.float32)
        self.padded_offset = np.zeros(rows, dtype=np.int64 if wide else np.int32)
        self.sq, self.scales = self.padded_sq[:n], self.padded_scales[:n]
        self.offset = self.padded_offset[:n]
        res = np.empty(n, dtype=np.float32)
        x = np.ascontiguousarray(x32, dtype=np.float32)
        quantize_rows(x, np.ascontiguousarray(c32, dtype=np.float32), dest,
                      self.sq, self.scales, res, self.offset)  # fmt: skip
        g = gamma(d + 2)
        self.g = g
        ynorm = np.sqrt(self.sq * np.float32(1 + g))  # ≥ ‖y_j‖ as rounded
        # ‖y_j − ŷ_j‖ (y = x − c was itself rounded once) and ‖ŷ_j‖, rounded up; doubled.
        resb = np.sqrt(res * np.float32(1 + g)) + np.float32(2 * U32) * ynorm
        self.res2 = (resb * np.float32(2.02)).astype(np.float32)
        self.yh2 = ((ynorm + resb) * np.float32(2.02)).astype(np.float32)
        self.ymax = float(self.sq.max() * (1 + g)) ** 0.5 * (1 + U32)
        self.res2max = float(self.res2.max())
        self.yh2max = float(self.yh2.max())
        self._rows = np.empty(n, dtype=np.int64)  # the finalists' buffer

    def exclude(self, rows: Any) -> None:
        """Score ``rows`` +inf from now on (picked rows): ``‖y‖²`` of them becomes +inf."""
        self.sq[rows] = np.inf

    def common_error(self, tn: float, an: float, query: float) -> float:
        """:func:`.rounding.int8_common_error` for these rows."""
        return int8_common_error(
            self.g, self.ymax, self.res2max, self.yh2max, self.d, tn, an, query
        )

    def err(self, rows: Any = None) -> Any:
        """Error bounds of the last ``scores``: of ``rows`` (float64), or their maximum."""
        if rows is None:
            return row_error(self.res2max, self.yh2max, *self._coef)
        return row_error(self.res2[rows], self.yh2[rows], *self._coef)

    def finalists(
        self, est: np.ndarray, thr: float, x32: np.ndarray, c64: np.ndarray, tp: np.ndarray,
        margin: float, limit: int,
    ) -> np.ndarray | None:  # fmt: skip
        """The rows whose lower bound ``est_j − err_j`` (the last ``scores``) is ``<= thr``,
        narrowed to those whose float64 score ``‖x_j − c − t'‖²`` is within ``margin`` of
        the best (ascending); ``None`` if more than ``limit`` pass the bound. Cost: one read
        of ``est`` and the bound terms, then ``d`` float64 products per survivor."""
        from ._int8_kernels import argmin32, finalists

        pre = float32_threshold(thr + self.err())
        block_min = np.empty(-(-est.shape[0] // 64), dtype=np.int32)
        argmin32(est, block_min)  # the blocks' smallest keys, which finalists skips by
        m = finalists(est, block_min, self.res2, self.yh2, self._coef, thr, pre, x32, c64, tp,
                      margin, limit, self._rows)  # fmt: skip
        return None if m < 0 else self._rows[:m].copy()


class Int8Scores(Int8Rows):
    """Estimates of ``σ'_j`` from :class:`Int8Rows` and a bf16 query, by torch's kernel.

    One pass reads a quarter of the float32 bytes. Torch's weight-only int8 kernel
    (``torch._weight_int8pack_mm``) accumulates in float32; whatever its path (float32 or
    bf16 dequantisation, bf16 output), ``|est_j − σ'_j| ≤ 2(‖y_j − ŷ_j‖·‖t'‖ + ‖ŷ_j‖·(‖t' − a‖
    + κ‖a‖))`` plus float32 rounding, with ``a`` the bf16 query and ``κ = 2·u_bf16 +
    2γ_2d``; the bound is per row. The kernel is checked against it on a sample before use.
    """

    def __init__(self, x32: np.ndarray, c32: np.ndarray, xmax: float) -> None:
        super().__init__(x32, c32, xmax)
        n, d = x32.shape
        self.scales2 = torch.from_numpy(2 * self.scales).bfloat16()  # exact: a power of two
        self.kappa = 2 * _UBF16 + 2 * _UBF16 * _UBF16 + 2 * gamma(2 * d + 4)
        self.a = torch.zeros((1, self.q.shape[1]), dtype=torch.bfloat16)
        self._query = self.a[0, :d]  # the bf16 query, written in place by ``scores``
        self._sq_t = torch.from_numpy(self.sq)
        self._est_t = torch.empty(n, dtype=torch.float32)
        m = min(n, 256)
        self._check_kernel(self.q.numpy()[:m, :d], self.scales[:m])

    def _check_kernel(self, q: np.ndarray, scales: np.ndarray) -> None:
        """Refuse a kernel whose output breaks the bound (another torch build, a new path)."""
        probe = np.cos(np.arange(self.d) * 0.7) * (1 + np.arange(self.d) % 3)
        self.a[0, : self.d] = torch.from_numpy(probe)
        a64 = self.a[0, : self.d].double().numpy()
        out = _INT8_KERNEL(self.a, self.q[: len(q)], self.scales2[: len(q)])
        yhat = q.astype(np.float64) * scales[:, None].astype(np.float64)
        exact = 2 * (yhat @ a64)
        bound = 2 * np.linalg.norm(yhat, axis=1) * np.linalg.norm(a64) * self.kappa + 1e-30
        if not np.all(np.abs(out[0].double().numpy() - exact) <= bound):
            raise RuntimeError("int8 kernel outside its error bound")

    def scores(self, tp: np.ndarray, tn: float) -> tuple[np.ndarray, float]:
        """``est`` (float32; overwritten by the next call) and ``shift = 0``:
        ``|est_j − σ'_j| ≤ self.err(j)`` (+inf for excluded rows)."""
        query_t = self._query
        query_t.copy_(torch.from_numpy(tp))  # round to bf16
        a64 = query_t.double().numpy()
        an = float(a64 @ a64) ** 0.5
        a64 -= tp
        query = float(a64 @ a64) ** 0.5 + self.kappa * an  # bf16 query, kernel rounding
        out = _INT8_KERNEL(self.a, self.q, self.scales2)
        torch.sub(self._sq_t, out[0], out=self._est_t)
        self._coef = (tn, query, self.common_error(tn, an * (1 + self.kappa), query))
        return self._est_t.numpy(), 0.0


def int8_kernel_usable(n: int, d: int) -> bool:
    """Whether torch's weight-only int8 kernel exists and can index an ``n×d`` copy."""
    dpad = -(-d // 64) * 64
    return _INT8_KERNEL is not None and n * dpad < 2**31  # the kernel indexes with int32


class VnniScores(Int8Rows):
    """Estimates of ``σ'_j`` from :class:`Int8Rows` and an int8 query, by AVX-512 VNNI
    (``vpdpbusd``: exact int32 dot products, 64 bytes per instruction).

    The query is ``â = s_a·a + s_b·b`` with ``a = rint(t'/s_a)``, ``s_a = max|t'|/127`` and
    ``b`` the same for the remainder (or ``a`` alone), so ``‖t' − â‖ ≲ 2^-16·max|t'|·√d``
    — tighter than the bf16 query of :class:`Int8Scores` — and the integer sums are exact:
    ``|est_j − σ'_j| ≤ 2(‖y_j − ŷ_j‖·‖t'‖ + ‖ŷ_j‖·‖t' − â‖)`` plus float rounding. One pass
    reads the int8 rows once (all digit rows per read): ~0.2× a float32 mat-vec. With
    look-ahead rows it also sums the columns of the likely picks, so :meth:`herd` decides
    several picks per pass. ``plan = (query digits, look-ahead rows)`` is one of
    :data:`PLANS`; by default the one a measured probe finds cheapest per pick here
    (:meth:`best_plan`). Checked against numpy's integer products on a sample at first use
    in the process (the same compiled code serves every copy).
    """

    def __init__(
        self, x32: np.ndarray, c32: np.ndarray, xmax: float, plan: tuple[int, int] | None = None
    ) -> None:
        from ._int8_kernels import argmin32, herd, int8_pass, int8_scores, row_sums
        from ._lookahead_kernels import predicted_rows

        super().__init__(x32, c32, xmax, rows_per_line=16)
        n = x32.shape[0]
        self._kernel, self._herd, self._pass = int8_scores, herd, int8_pass
        self._predict, self._argmin = predicted_rows, argmin32
        self._probe_gap = np.zeros(1)  # guess_seconds' score gap, kept between its calls
        self.qb = self.q.numpy().reshape(self.q.shape[0], self.q.shape[1], 16, 4)
        self.scale2 = 2 * self.padded_scales.astype(np.float64)
        self._est = self.padded_sq.copy()  # the look-ahead's first guess: smallest ‖y‖²
        self._all_digits = np.full((6, 4 * self.q.shape[1]), 128, dtype=np.uint8)
        self._all_sums = np.empty((6, self._est.shape[0]), dtype=np.int32)
        if not _VNNI_CHECKED:  # the same compiled code for any rows: once per process
            self._check_kernel(row_sums, min(n, 256))
            _VNNI_CHECKED.append(True)
        if plan is None:  # measured once per size class (a power of two) and process
            size = self.q.numel().bit_length()
            if size not in _PLAN_VERDICT:
                _PLAN_VERDICT[size] = self.best_plan()
            plan = _PLAN_VERDICT[size]
        if tuple(plan) not in PLANS:
            raise ValueError(f"plan must be one of {list(PLANS)}, got {plan!r}")
        self.query_digits, self.look_ahead = plan  # look_ahead: columns computed per pass
        width = self.query_digits + self.look_ahead
        self._digits, self._sums = self._all_digits[:width], self._all_sums[:width]
        self._ahead = np.zeros(self.look_ahead, dtype=np.int64)
        self._gap = np.zeros(1)  # predicted_rows' score gap, carried from pass to pass
        self.passes = 0  # full passes over the rows so far (fewer than picks: look-ahead)
        c64 = c32.astype(np.float64)
        consts = (self.g, self.ymax, self.res2max, self.yh2max, xmax, float(c64 @ c64) ** 0.5,
                  CHAIN if self.look_ahead else 1, self.query_digits)  # fmt: skip
        self._arrays = (self.qb, self.padded_offset, self.scale2, self.padded_sq, self.res2,
                        self.yh2, self._digits, self._sums, self._est, self._ahead,
                        self._gap, np.empty(NEAR, dtype=np.int64),
                        consts)  # fmt: skip

    def _check_kernel(self, row_sums: Any, m: int) -> None:
        """Refuse an instruction whose sums differ from numpy's (another CPU, a new LLVM):
        every width of the pass (1, 2, 3 and 6 digit rows)."""
        shape = self._all_digits.shape
        digits = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        rows = self.qb[: -(-m // 16)].transpose(0, 2, 1, 3).reshape(-1, shape[1])
        # float64 products and sums of these integers are exact: |sum| <= 127·255·D < 2^53
        exact = rows[:m].astype(np.float64) @ digits.T.astype(np.float64)
        for width in WIDTHS:
            out = np.empty((m, width), dtype=np.int32)
            row_sums(self.qb, m, digits[:width], out)
            if not np.array_equal(out, exact[:, :width]):
                raise RuntimeError("the VNNI kernel's integer sums are wrong here")

    def pass_seconds(self, width: int) -> float:
        """Seconds of one integer pass over the rows with ``width`` digit rows (1, 2, 3 or 6:
        the query's digits and the look-ahead rows of a plan)."""
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {list(WIDTHS)}, got {width!r}")
        start = time.perf_counter()
        digits, sums = self._all_digits[:width], self._all_sums[:width]
        self._pass(self.qb, digits, self.padded_offset, sums)
        return time.perf_counter() - start

    def guess_seconds(self) -> float:
        """Seconds of the look-ahead's guess after a pick without a column
        (``_int8_kernels.predicted_rows``): a few reads of the scores and ~64 int8 rows —
        with the score gap a previous call found, as in :meth:`herd` (found afresh, it
        takes a few more reads)."""
        n = self.sq.shape[0]
        near, moved = np.empty(NEAR, dtype=np.int64), np.empty(NEAR, dtype=np.float32)
        out = np.zeros(1, dtype=np.int64)
        block_min = np.empty(-(-n // 64), dtype=np.int32)
        start = time.perf_counter()
        self._argmin(self.padded_sq[:n], block_min)  # as each step of herd does before
        self._predict(self.padded_sq[:n], block_min, self.padded_sq, self.qb,
                      self.padded_offset, self.scale2, 0, self._probe_gap, near, moved,
                      out)  # fmt: skip
        return time.perf_counter() - start

    def best_plan(self) -> tuple[int, int]:
        """The plan of least expected pass time per pick here: each width's pass timed
        (best of five, interleaved: with three, one noisy process here took ``(1, 0)`` at
        10 000 × 128, ~4 % dearer), plus the look-ahead's guess, weighted by
        :data:`PASSES_PER_PICK`. Where the pass waits on memory the wider ones ride nearly
        free (six rows ~1.05× two at 10 000 × 512 on a Xeon: ``(2, 4)``); where it computes
        they cost in proportion, and one look-ahead row still halves the passes."""
        seconds: dict[int, list[float]] = {w: [] for w in WIDTHS}
        for _ in range(5):
            for width in WIDTHS:
                seconds[width].append(self.pass_seconds(width))
        best = {w: min(v) for w, v in seconds.items()}
        guess = min(self.guess_seconds() for _ in range(6))  # the first finds the gap

        def cost(plan: tuple[int, int]) -> float:
            digits, ahead = plan
            extra = guess if ahead else 0.0
            loose = ONE_DIGIT_COST if ahead and digits == 1 else 1.0
            return loose * PASSES_PER_PICK[ahead] * (best[digits + ahead] + extra)

        return min(PLANS, key=cost)

    def scores(self, tp: np.ndarray, tn: float) -> tuple[np.ndarray, float]:
        """``est`` (float32; overwritten by the next call) and ``shift = 0``:
        ``|est_j − σ'_j| ≤ self.err(j)`` (+inf for excluded rows)."""
        width = self.query_digits  # the query's digits only: no look-ahead here
        an, rest = self._kernel(self.qb, self.padded_offset, tp, self._digits[:width], width,
                                self.scale2, self.padded_sq, self._sums[:width],
                                self._est)  # fmt: skip
        query, an_up = digits_error(an, rest, tn)
        self._coef = (tn, query, self.common_error(tn, an_up, query))
        return self._est[: self.sq.shape[0]], 0.0

    def herd(
        self, x32: np.ndarray, c64: np.ndarray, cur32: np.ndarray, picks: np.ndarray, i: int,
        k: int, limit: int,
    ) -> tuple[int, np.ndarray | None]:  # fmt: skip
        """Picks ``i, i+1, …`` (into ``picks``, the running center ``cur32`` advanced) in one
        compiled loop, for as long as the bounds alone decide them — the steps of
        :func:`.herding.herding_order`, with no Python between picks, near-ties included
        where :func:`.rounding.separated_pick` settles them. Returns ``(i, rows)``: the pick
        it stopped at and the rows only the reference's own row sums can settle (empty when
        ``i == k``), or ``None`` when more than ``limit`` rows pass the bound."""
        i, m, passes = self._herd(self._arrays, x32, c64, cur32, picks, i, k, limit, self._rows)
        self.passes += passes
        if m == -1:
            return i, None
        if i < k and m < 2:  # no finite bound (or no row under it): every unpicked row
            return i, np.flatnonzero(self.sq < np.inf)
        return i, self._rows[:m].copy()


def vnni_usable(n: int, d: int) -> bool:
    """Whether this CPU has AVX-512 VNNI, numba targets it, and int32 sums cannot overflow.

    Checked before compiling: LLVM stops the process, not raises, on an unsupported
    instruction."""
    try:
        import llvmlite.binding as llvm
        import numba
    except ImportError:
        return False
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES or numba.config.DISABLE_JIT:
        return False  # numba told to target another CPU, or not to compile
    if not _HOST_VNNI:  # ~0.4 ms a call (cProfile): asked once
        features = llvm.get_host_cpu_features()
        _HOST_VNNI.append(
            all(features.get(f, False) for f in ("avx512f", "avx512bw", "avx512vnni"))
        )
    return _HOST_VNNI[0] and -(-d // 64) * 64 * 255 * 128 < 2**31 and n > 0 and d > 0

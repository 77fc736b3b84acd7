"""Exact herding: Avalanche 0.6.0's picks bit for bit on float32 features, far cheaper.

Herding (Welling 2009; iCaRL) greedily keeps the running mean of the picks close to the group
mean. Pick ``i`` minimises the reference's float32 distance ``D_j = ‖(i·cur + x_j)/(i+1) −
center‖²``; with ``y = x − center`` and ``t' = i·(center − cur)``, ``(i+1)²·D_j = ‖y_j − t'‖²``.
Both exact paths share one core:

* a first pass scores every row (``σ'_j = ‖y_j‖² − 2⟨y_j, t'⟩`` or the same quantity in the
  frame of ``x``) with a rigorous error bound — from an int8 copy of the centred features
  (torch's weight-only int8 kernel, a quarter of the bytes) or one float32 sgemv;
* :func:`near_tie_margin` — the one bound on the reference's own float32 rounding — keeps
  every row that could still be the reference's pick;
* :func:`reference_pick` settles those candidates with the reference's float32 expression
  (first index on ties) and :func:`advance_center` updates ``cur`` with its arithmetic.

:func:`herding_order` holds the features in RAM; :func:`exact_herding_chunked` reads them
block by block (bounded memory, e.g. a zarr array of the feature cache). Both are O(k·N·d),
never build an ``N×d`` temporary and stop after ``k`` picks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .readers import (
    BLOCK_ELEMENTS,
    DEFAULT_CHUNK_ROWS,
    FeatureReader,
    check_chunk_rows,
    check_k,
    check_reader,
    iter_blocks,
    row_blocks,
)

__all__ = [
    "herding_order",
    "exact_herding_chunked",
    "near_tie_margin",
    "reference_pick",
    "advance_center",
    "make_scores",
    "Float32Scores",
    "Int8Scores",
]

# torch's weight-only int8 mat-mul is private API: looked up once, guarded, checked on a probe
# before each use (Int8Scores), with the float32 path as the fallback.
_INT8_KERNEL = getattr(torch, "_weight_int8pack_mm", None)  # shape: allow private torch kernel

_U32 = 2.0**-24  # unit roundoff of float32
_EPS32 = 2.0**-23  # float32 machine epsilon
_UBF16 = 2.0**-8  # unit roundoff of bfloat16
_INT8_MIN_ELEMENTS = 1 << 21  # below ~8 MiB of features a float32 pass is cache-resident
_INT8_MIN_K = 64  # building the int8 copy costs ~25 float32 passes; worth it from here
_MAX_D = 100_000  # the rounding argument of herding_order needs (d + 4)·u32 << 1
_MAX_NORM = 1e18  # beyond, the reference's float32 distances may overflow


def _gamma(n: int, unit: float = _U32) -> float:
    """Higham's γ_n: relative error bound of an n-term floating-point dot product or sum."""
    return n * unit / (1.0 - n * unit)


# -- the shared core: near-tie margin, the reference's decision, its running center -----------
def near_tie_margin(
    i: int, score_ub: float, *, tn: float, cur_norm: float, xmax: float, cn: float, d: int
) -> float:
    """How far above the smallest score the reference's pick ``i`` may lie (score units).

    Scores are ``σ_j = (i+1)²·D_j − tn²`` in any frame where that holds (``t'`` for
    :func:`herding_order`, ``t = (i+1)·center − i·cur`` for the chunked path); ``score_ub`` is
    an upper bound on the smallest true score. The reference computes ``D̃_j``: every
    element of its ``(cur·i/(i+1) + x/(i+1)) − center`` is off by at most ``δ``, squaring and
    summing add ``γ`` relatively, so ``|D̃_j − D_j| ≤ ρ(D_j) = δ(2√D_j + δ) + γ(√D_j + δ)²``.
    Its pick has ``D ≤ D_min + ρ(D) + ρ(D_min)``, impossible above ``d_cap`` (there
    ``ρ(D) < 0.3·D``): every row within ``(i+1)²·2ρ(d_cap)`` of the best, plus the float64
    re-scoring slack ``2η``, must be kept. Increasing in ``score_ub``.

    Args:
        i: the pick number (picks made so far).
        score_ub: upper bound on the smallest score.
        tn: ``‖t‖`` of the frame the scores are in.
        cur_norm: ``‖cur‖``, the reference's running center (float32, as float64).
        xmax: upper bound on every ``‖x_j‖``.
        cn: ``‖center‖``.
        d: the feature dimension.
    """
    n1 = float((i + 1) ** 2)
    delta = 5 * _U32 * (cur_norm + xmax / (i + 1) + cn) + 1e-30
    d_ub = max(score_ub + tn * tn, 0.0) / n1  # ≥ the smallest D_j
    d_cap = max(4 * d_ub, 64 * delta * delta) + 1e-30
    rd = d_cap**0.5
    rho = delta * (2 * rd + delta) + _gamma(d + 4) * (rd + delta) ** 2 + 1e-36 * d
    eta = 4.04 * (d + 10) * 2.0**-53 * (xmax + cn + tn) ** 2  # float64 re-scoring error
    return n1 * 2 * rho + 2 * eta


def reference_pick(cur32: np.ndarray, rows: torch.Tensor, i: int, center: torch.Tensor) -> int:
    """Which of the candidate ``rows`` (float32, ascending row order) the reference picks.

    The reference's own float32 expression ``pow(cur·i/(i+1) + x/(i+1) − center, 2).sum(1)``
    and its ``argmin`` (first on ties); a single candidate is returned as is.
    """
    if rows.shape[0] == 1:
        return 0
    candidate_centers = torch.from_numpy(cur32) * i / (i + 1) + rows / (i + 1)
    distances = pow(candidate_centers - center, 2).sum(dim=1)
    return int(torch.argmin(distances))


def advance_center(cur32: np.ndarray, row: np.ndarray, i: int) -> None:
    """The reference's running center after pick ``i`` (in place; elementwise float32,
    bit-identical to torch's ``cur·i/(i+1) + x/(i+1)``)."""
    cur32 *= np.float32(i)
    cur32 /= np.float32(i + 1)
    cur32 += row / np.float32(i + 1)


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
        self.ymax = float(self.sq.max() * (1 + _gamma(d + 2))) ** 0.5 * (1 + _U32)
        self.centred = self.cn > 2 * self.ymax
        self.rows = x32 - c32 if self.centred else x32
        self.rmax = self.ymax * (1 + 2 * _U32) if self.centred else xmax

    def scores(self, tp: np.ndarray, tn: float) -> tuple[np.ndarray, float]:
        """``est`` (float32, fresh) and ``shift``: ``|est_j + shift − σ'_j| ≤ self.err(j)``."""
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
    g = _gamma(d + 2)
    bound = (
        (g + 6 * _U32) * ym * ym  # ‖y‖² in float32 (y itself rounded once)
        + 2 * (g + _U32) * rm * tn32  # the dot products; centred rows rounded once
        + 2 * rm * ta  # t' rounded to float32
        + _U32 * (ym * ym + 2 * rm * tn32 * (1 + g))  # adding ‖y‖²
        + 2 * _gamma(d + 2, 2.0**-53) * cn * tn  # the shift, in float64
        + 1e-14 * (rm + cn) * tn  # t' itself (float64)
        + d * 2.0**-140  # subnormal products
    )
    return 1.01 * bound + 1e-30


class Int8Scores:
    """The same estimates from an int8 copy of ``y`` (per-row bf16 scale) and a bf16 query.

    One pass reads a quarter of the float32 bytes. Torch's weight-only int8 kernel
    (``torch._weight_int8pack_mm``) accumulates in float32; whatever its path (float32 or
    bf16 dequantisation, bf16 output), ``|est_j − σ'_j| ≤ 2(‖y_j − ŷ_j‖·‖t'‖ + ‖ŷ_j‖·(‖t' − a‖
    + κ‖a‖))`` plus float32 rounding, with ``ŷ`` the dequantised row, ``a`` the bf16 query and
    ``κ = 2·u_bf16 + 2γ_2d``; the bound is per row. The kernel is checked against it on a
    sample before use.
    """

    def __init__(self, x32: np.ndarray, c32: np.ndarray, xmax: float) -> None:
        n, d = x32.shape
        self.d, self.xmax = d, xmax
        dpad = -(-d // 64) * 64  # the kernel reads 16-element vectors without a tail loop
        self.q = torch.zeros((n, dpad), dtype=torch.int8)  # torch-allocated: aligned rows
        qn = self.q.numpy()
        self.sq = np.empty(n, dtype=np.float32)
        scales = np.empty(n, dtype=np.float32)
        res = np.empty(n, dtype=np.float32)
        rows = max(16, BLOCK_ELEMENTS // (2 * d))  # cache-resident blocks
        for a in range(0, n, rows):
            b = min(n, a + rows)
            y = x32[a:b] - c32
            self.sq[a:b] = np.einsum("ij,ij->i", y, y)
            # A bf16 scale >= max|y|/127, so |q| <= 127 (any rounding of y/s will do: the
            # residual below is computed exactly whatever q is).
            amax = np.maximum(y.max(axis=1), -y.min(axis=1)) * np.float32(1 / 126.5)
            s = torch.from_numpy(amax).bfloat16().float().numpy()
            s[~(s >= 2.0**-100)] = 1.0  # ~zero rows: q = 0 (no subnormal scale to flush)
            q = y * (np.float32(1) / s)[:, None]
            np.rint(q, out=q)
            qn[a:b, :d] = q
            q *= s[:, None]  # exact: 8-bit scale times a 7-bit integer
            y -= q  # exact (Sterbenz): the quantisation residual
            res[a:b] = np.einsum("ij,ij->i", y, y)
            scales[a:b] = s
        g = _gamma(d + 2)
        self.g = g
        ynorm = np.sqrt(self.sq * np.float32(1 + g))  # ≥ ‖y_j‖ as rounded
        # ‖y_j − ŷ_j‖ (y = x − c was itself rounded once) and ‖ŷ_j‖, rounded up; doubled.
        resb = np.sqrt(res * np.float32(1 + g)) + np.float32(2 * _U32) * ynorm
        self.res2 = (resb * np.float32(2.02)).astype(np.float32)
        self.yh2 = ((ynorm + resb) * np.float32(2.02)).astype(np.float32)
        self.ymax = float(self.sq.max() * (1 + g)) ** 0.5 * (1 + _U32)
        self.res2max = float(self.res2.max())
        self.yh2max = float(self.yh2.max())
        self.scales2 = torch.from_numpy(2 * scales).bfloat16()  # exact: a power of two
        self.kappa = 2 * _UBF16 + 2 * _UBF16 * _UBF16 + 2 * _gamma(2 * d + 4)
        self.a = torch.zeros((1, dpad), dtype=torch.bfloat16)
        self._check_kernel(qn[: min(n, 256), :d], scales[: min(n, 256)])

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
        """``est`` (float32, fresh) and ``shift = 0``: ``|est_j − σ'_j| ≤ self.err(j)``."""
        d = self.d
        self.a[0, :d] = torch.from_numpy(tp)  # round to bf16
        a64 = self.a[0, :d].double().numpy()
        an = float(a64 @ a64) ** 0.5
        a64 -= tp
        query = float(a64 @ a64) ** 0.5 + self.kappa * an  # bf16 query, kernel rounding
        out = _INT8_KERNEL(self.a, self.q, self.scales2)
        est = self.sq - out[0].float().numpy()
        ym = self.ymax
        omax = self.yh2max * an * (1 + self.kappa)
        emax = self.res2max * tn + self.yh2max * query
        common = (
            (self.g + 6 * _U32) * ym * ym  # ‖y‖² in float32
            + 2 * _U32 * (ym * ym + omax + emax)  # the float32 subtraction, comparisons
            + 1e-14 * ym * tn  # t' itself (float64)
            + self.yh2max * d**0.5 * 2.0**-125
            + d * 2.0**-122  # flushed subnormals
        )
        self._coef = (tn, query, 1.01 * common + 1e-30)
        return est, 0.0

    def err(self, rows: Any = None) -> Any:
        """Error bounds of the last ``scores``: of ``rows`` (float64), or their maximum."""
        a, b, c = self._coef
        if rows is None:
            return 1.01 * (self.res2max * a + self.yh2max * b) + c
        return 1.01 * (self.res2[rows] * a + self.yh2[rows] * b) + c


def make_scores(
    x32: np.ndarray, c32: np.ndarray, xmax: float, k: int
) -> Float32Scores | Int8Scores:
    """The first-pass scorer: int8 for large inputs when torch's kernel is usable, else float32."""
    n, d = x32.shape
    dpad = -(-d // 64) * 64
    if (
        n * d >= _INT8_MIN_ELEMENTS
        and k >= _INT8_MIN_K
        and n * dpad < 2**31  # the kernel indexes with 32-bit ints
        and _INT8_KERNEL is not None
    ):
        try:
            return Int8Scores(x32, c32, xmax)
        except (RuntimeError, TypeError, NotImplementedError):
            pass  # no usable kernel in this torch build: the float32 pass is exact too
    return Float32Scores(x32, c32, xmax)


def herding_order(features: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` herding picks, identical to Avalanche's float32 loop.

    Pick ``i`` minimises the reference's distance ``D_j = ‖(i·cur + x_j)/(i+1) − center‖²``,
    with ``cur`` and ``center`` the reference's own float32 vectors. In exact arithmetic
    ``(i+1)²·D_j = ‖y_j − t'‖²`` with ``y = x − center`` and ``t' = i·(center − cur)``, so:

    1. one pass estimates ``σ'_j = ‖y_j‖² − 2⟨y_j, t'⟩`` for every row with a rigorous error
       bound — an int8 copy of ``y`` (a quarter of the bytes) for large inputs, else one
       float32 sgemv; never an ``N×d`` temporary;
    2. rows whose estimate is within twice that bound plus the reference's float32 rounding
       margin (:func:`near_tie_margin`) of the best are re-scored exactly (float64);
    3. if several stay within the rounding margin (near-ties, duplicates), the reference's
       own float32 expression decides among them (:func:`reference_pick`, first index on
       ties), so the pick is the reference's; ``cur`` is updated with the reference's float32
       arithmetic.

    Cost: O(k·N·d) — one pass over the features per pick, and only the first ``k`` picks
    (the reference orders all N rows and allocates several N×d arrays per pick).
    """
    n, d = features.shape
    k = min(int(k), n)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    x32 = np.ascontiguousarray(features, dtype=np.float32)
    xt = torch.from_numpy(x32)
    center_t = xt.mean(dim=0)  # the reference's center, last bit included
    c32 = center_t.numpy()
    c64 = c32.astype(np.float64)
    cn = float(c64 @ c64) ** 0.5
    xsq = float(np.einsum("ij,ij->i", x32, x32).max())
    xmax = (xsq * (1 + _gamma(d + 2))) ** 0.5 * (1 + _U32)
    scores = None  # outside the rounding argument below, every pick runs the reference's loop
    if d <= _MAX_D and xmax < _MAX_NORM:
        scores = make_scores(x32, c32, xmax, k)
    limit = max(256, n // 16)
    taken = np.zeros(n, dtype=bool)
    cur32 = np.zeros(d, dtype=np.float32)
    i = 0
    while i < k:
        cur64 = cur32.astype(np.float64)
        tp = i * (c64 - cur64)
        tn = float(tp @ tp) ** 0.5
        cand = None
        if scores is not None:
            est, shift = scores.scores(tp, tn)
            est[picks[:i]] = np.inf
            j0 = int(np.argmin(est))
            best = float(est[j0]) + float(scores.err(j0))  # ≥ the smallest σ' (− shift)
            if best < np.inf:
                cur_norm = float(cur64 @ cur64) ** 0.5
                margin = near_tie_margin(
                    i, best + shift, tn=tn, cur_norm=cur_norm, xmax=xmax, cn=cn, d=d
                )
                # Candidates: est_j − err_j ≤ best + margin (a cheap superset first).
                thr = best + margin
                pre = thr + scores.err()
                pre += 4 * _U32 * abs(pre) + 1e-37  # est is float32: compare at >= pre
                cand = np.flatnonzero(est <= pre)
                if isinstance(scores, Int8Scores):
                    cand = cand[est[cand].astype(np.float64) - scores.err(cand) <= thr]
                if len(cand) > limit and isinstance(scores, Int8Scores):
                    scores = Float32Scores(x32, c32, xmax)  # int8 bound too loose here
                    continue
                if len(cand) > 8 and isinstance(scores, Int8Scores):
                    # Narrow with exact-to-1e-6 float32 scores of the candidates first.
                    t32, tn32, ta = float32_query(tp)
                    sub = x32[cand] @ t32
                    sub += scores.sq[cand]
                    err = float32_error(d, scores.ymax, xmax, cn, tn32, ta, tn)
                    thr = float(sub.min()) + 2 * err + margin
                    thr += 4 * _U32 * abs(thr) + 1e-37
                    cand = cand[sub <= thr]
                if len(cand) > 1:
                    diff = x32[cand].astype(np.float64)
                    diff -= c64
                    diff -= tp
                    f = np.einsum("ij,ij->i", diff, diff)
                    cand = cand[f <= f.min() + margin]
        if cand is None:
            cand = np.flatnonzero(~taken)  # no usable bound: the reference over all rows
        p = int(cand[reference_pick(cur32, xt[torch.from_numpy(cand)], i, center_t)])
        picks[i] = p
        taken[p] = True
        advance_center(cur32, x32[p], i)
        i += 1
    return picks


def exact_herding_chunked(
    features: np.ndarray | FeatureReader,
    k: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Exact herding with bounded temporaries: equals :func:`herding_order`.

    Same rule and the same core as ``herding_order`` — :func:`near_tie_margin`, the
    reference's expression among the candidates (:func:`reference_pick`) and its running
    center — but each pick scores the rows one block at a time (``‖x‖² − 2⟨x, t⟩``, float32
    sgemv) and keeps only the rows that can still be the reference's pick. The mean is
    torch's float32 mean for an in-memory float32 array (as in ``herding_order``, so the
    picks are identical) and a float64 block sum rounded to float32 for a reader (identical
    unless that rounding differs and flips a near-tie).

    Cost: O(k·N·d) time — each pick reads every row once, so give an in-memory array or an
    ``np.memmap`` at scale (a compressed on-disk reader is decoded ``k`` times); extra
    memory O(N) (‖x‖², taken mask) plus one block. Memory-bound: ~3× slower than
    ``herding_order``, which scores from an int8 copy of the features (N·d bytes).
    """
    owner = "exact_herding_chunked"
    reader = check_reader(features, owner)
    n, d = (int(s) for s in reader.shape)
    k = check_k(k, n, owner)
    chunk_rows = check_chunk_rows(chunk_rows, owner)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    sq = np.empty(n, dtype=np.float64)
    total = np.zeros(d, dtype=np.float64)
    for start, block in iter_blocks(reader, chunk_rows, owner):
        sq[start : start + block.shape[0]] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        total += block.sum(axis=0, dtype=np.float64)
    if isinstance(reader, np.ndarray) and reader.dtype == np.float32 and reader.flags.c_contiguous:
        center_t = torch.from_numpy(reader).mean(dim=0)
    else:
        center_t = torch.from_numpy((total / n).astype(np.float32))
    c64 = center_t.double().numpy()
    cn = float(np.linalg.norm(c64))
    xmax = float(np.sqrt(sq.max())) * (1 + _U32)
    gamma = (d + 4) * _EPS32
    cur32 = np.zeros(d, dtype=np.float32)
    taken = np.zeros(n, dtype=bool)
    for i in range(k):
        cur64 = cur32.astype(np.float64)
        t = (i + 1) * c64 - i * cur64
        t32 = t.astype(np.float32)
        tn = float(np.linalg.norm(t))
        err = 2 * gamma * xmax * (xmax + tn)  # |score_j − σ_j|: sgemv and t rounded to float32
        bound = dict(tn=tn, cur_norm=float(np.linalg.norm(cur64)), xmax=xmax, cn=cn, d=d)

        best = np.inf
        kept_rows: list[np.ndarray] = []
        kept_x: list[np.ndarray] = []
        kept_s: list[np.ndarray] = []
        for start, block in iter_blocks(reader, chunk_rows, owner, check=False):
            stop = start + block.shape[0]
            score = sq[start:stop] - 2.0 * (block @ t32).astype(np.float64)
            score[taken[start:stop]] = np.inf
            best = min(best, float(score.min()))
            if best == np.inf:
                continue  # every row so far is taken
            # The threshold only shrinks with the running best: rows under the running
            # threshold are a superset of the final candidates.
            thr = best + 2 * err + near_tie_margin(i, best + err, **bound)
            near = np.flatnonzero(score <= thr)
            if near.size:
                kept_rows.append(start + near)
                kept_x.append(block[near])
                kept_s.append(score[near])
        thr = best + 2 * err + near_tie_margin(i, best + err, **bound)
        final = np.concatenate(kept_s) <= thr
        cand = np.concatenate(kept_rows)[final]
        cand_x = np.concatenate(kept_x)[final]
        j = reference_pick(cur32, torch.from_numpy(cand_x), i, center_t)
        picks[i] = cand[j]
        taken[cand[j]] = True
        advance_center(cur32, cand_x[j], i)
    return picks

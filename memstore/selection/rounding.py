"""The float32 arithmetic of Avalanche's herding and the bounds on rounding that exact
selection rests on: plain functions of floats and arrays, so :mod:`._int8_kernels` compiles
the very same ones with numba (its fused pick loop) that :mod:`.herding` calls from Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "U32",
    "EPS32",
    "gamma",
    "near_tie_margin",
    "advance_center",
    "separated_pick",
    "float32_threshold",
    "int8_common_error",
    "row_error",
    "digits_error",
    "ahead_error",
]

U32 = 2.0**-24  # unit roundoff of float32
EPS32 = 2.0**-23  # float32 machine epsilon


def gamma(n: int, unit: float = U32) -> float:
    """Higham's γ_n: relative error bound of an n-term floating-point dot product or sum."""
    return n * unit / (1.0 - n * unit)


def float32_threshold(limit: float) -> float:
    """A threshold that float32 estimates ``<= limit`` in exact arithmetic still meet."""
    return limit + 4 * U32 * abs(limit) + 1e-37


def near_tie_margin(
    i: int, score_ub: float, tn: float, cur_norm: float, xmax: float, cn: float, d: int
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
    delta = 5 * U32 * (cur_norm + xmax / (i + 1) + cn) + 1e-30
    d_ub = max(score_ub + tn * tn, 0.0) / n1  # ≥ the smallest D_j
    d_cap = max(4 * d_ub, 64 * delta * delta) + 1e-30
    rd = d_cap**0.5
    g = (d + 4) * U32 / (1.0 - (d + 4) * U32)  # γ_{d+4}, inline: numba compiles this too
    rho = delta * (2 * rd + delta) + g * (rd + delta) ** 2 + 1e-36 * d
    eta = 4.04 * (d + 10) * 2.0**-53 * (xmax + cn + tn) ** 2  # float64 re-scoring error
    return n1 * 2 * rho + 2 * eta


def advance_center(cur32: np.ndarray, row: np.ndarray, i: int) -> None:
    """The reference's running center after pick ``i`` (in place; elementwise float32,
    bit-identical to torch's ``cur·i/(i+1) + x/(i+1)``)."""
    cur32 *= np.float32(i)
    cur32 /= np.float32(i + 1)
    cur32 += row / np.float32(i + 1)


def separated_pick(cur32: np.ndarray, rows: np.ndarray, i: int, center32: np.ndarray) -> int:
    """Which of the candidate ``rows`` the reference picks, when its float32 distances are
    bounded apart without its row sums; -1 when they are not (exact duplicates, a gap too
    small): then only the reference's own sums can say.

    The terms ``(cur·i/(i+1) + x/(i+1) − center)²`` are the reference's bit for bit (one
    correctly rounded float32 operation each, in its order); its sum of a row's ``d``
    non-negative terms, in whatever order and accumulator it uses, is within ``γ_d`` of their
    exact sum, which a float64 sum gives within ``γ_d`` (float64) itself. A row whose upper
    bound is below every other row's lower bound is the reference's argmin. Decides 9 of 14
    and 15 of 18 near-ties of a herding at 10 000×512 (Gaussian, relu-like), each a round
    trip to torch otherwise (~60–100 µs with cold caches in the pick loop).
    """
    step = np.float32(i + 1)
    moved = cur32 * np.float32(i) / step
    terms = rows / step + moved - center32
    terms = terms * terms
    n, d = rows.shape
    sums = np.empty(n)
    for r in range(n):
        sums[r] = terms[r].astype(np.float64).sum()
    g32 = (d + 2) * U32 / (1.0 - (d + 2) * U32)  # γ, inline: numba compiles this too
    g = g32 + 2.0 * (d + 2) * 2.0**-53 / (1.0 - (d + 2) * 2.0**-53) + 1e-15
    best = 0
    for r in range(1, n):
        best = r if sums[r] < sums[best] else best
    high = sums[best] * (1.0 + g)
    for r in range(n):
        if r != best and not high < sums[r] * (1.0 - g):  # also refuses inf and NaN
            return -1
    return best


def int8_common_error(
    g: float, ym: float, res2max: float, yh2max: float, d: int, tn: float, an: float, query: float
) -> float:
    """The row-independent part of an int8 scorer's bound, for a query of norm ``an`` off
    ``t'`` by at most ``query``: ``‖y‖²`` in float32 (``g = γ_{d+2}``, ``‖y‖ <= ym``), the
    float32 result and comparisons, ``t'`` itself, flushed subnormals."""
    omax = yh2max * an
    emax = res2max * tn + yh2max * query
    common = (
        (g + 6 * U32) * ym * ym  # ‖y‖² in float32
        + 2 * U32 * (ym * ym + omax + emax)  # the float32 subtraction, comparisons
        + 1e-14 * ym * tn  # t' itself (float64)
        + yh2max * d**0.5 * 2.0**-125
        + d * 2.0**-122  # flushed subnormals
    )
    return 1.01 * common + 1e-30


def row_error(res2: Any, yh2: Any, a: float, b: float, c: float) -> Any:
    """An int8 scorer's bound per row, ``1.01·(res2·a + yh2·b) + c`` with ``(a, b, c) =
    (‖t'‖, ‖t' − query‖, common part)``: rows as arrays (numpy) or one row (numba)."""
    return 1.01 * (res2 * a + yh2 * b) + c


def digits_error(an: float, rest: float, tn: float) -> tuple[float, float]:
    """``(‖t' − â‖, ‖â‖)`` rounded up, from their float64 values for the VNNI scorer's
    one- or two-digit query ``â`` (``rest``, ``an``): ``1e-14·(‖â‖ + ‖t'‖)`` covers the float64
    roundings of the digits and of the norms."""
    return rest + 1e-14 * (an + tn), an * (1 + 1e-14)


def ahead_error(
    coef: tuple[float, float, float], tn_old: float, dn: float, tn: float, ym: float,
    res2max: float, yh2max: float,
) -> tuple[float, float, float]:  # fmt: skip
    """The :func:`row_error` coefficients after scores moved by a look-ahead column.

    After the fresh pass at ``t'_0`` (query ``â``) and moves by ``ŷ_1 … ŷ_m`` to ``t'_m``
    (``t'_k = t'_{k-1} − ŷ_k + δ_k``), ``est_j = ‖y_j‖² − 2⟨ŷ_j, â − Σŷ_k⟩`` and
    ``est_j − σ'_j = 2⟨y_j − ŷ_j, t'_0 − Σŷ_k⟩ + 2⟨ŷ_j, t'_0 − â⟩ + 2Σ⟨y_j, δ_k⟩``, with
    ``t'_0 − Σŷ_k = t'_m − Σδ_k``: so ``a = ‖t'_m‖ + Σ‖δ_k‖`` (``a − tn_old + tn + dn`` per
    move, ``tn_old``/``tn`` the query's norm before/after, ``dn >= ‖δ‖``) and ``b += dn`` —
    not ``a += ‖ŷ_p‖``, which roughly doubled the residual term once the query's norm settles.
    ``c`` gains the new float32 store (scores now at most ``ym² + 2·ym·tn`` plus the bound)
    and ``t'`` itself (float64)."""
    a, b = max(coef[0] - tn_old, 0.0) + tn + dn, coef[1] + dn
    worst = 1.01 * (res2max * a + yh2max * b) + coef[2]  # row_error, inline: numba compiles this
    size = ym * ym + 2 * ym * tn + worst
    return a, b, coef[2] + 2.02 * U32 * size + 1e-14 * ym * tn

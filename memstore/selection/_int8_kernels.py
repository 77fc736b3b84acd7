"""The numba kernels behind :class:`.scores.VnniScores` (imported on first use: numba ~0.3 s).

:func:`int8_pass` reads the blocked int8 copy once with the VNNI instruction of
:mod:`._vnni_dot` (exact int32 sums of 1, 2, 3 or 6 digit rows); :func:`herd` is the whole
pick loop, fused, for every pick the bounds decide, with the look-ahead columns that let one
pass decide several (their kernels: :mod:`._lookahead_kernels`). No kernel here is
``fastmath`` except :func:`quantize_rows` and :func:`float64_score` (``reassoc`` only),
which call none: numba compiles a ``fastmath`` function's callees with its flags, and
``nnan``/``ninf`` then fold away their tests against ``inf``. Only compiled after the caller
has checked that this CPU has AVX-512 VNNI and numba targets it (an unsupported instruction
would stop LLVM, not raise). Compiled once and cached on disk (``cache=True``); numba keys
that cache on this file alone, so after editing :mod:`.rounding`, :mod:`._lookahead_kernels`
or :mod:`._vnni_dot` in a checkout, delete ``__pycache__/_int8_kernels*.nb*``.
"""

import numba
import numpy as np

from . import rounding
from ._lookahead_kernels import (
    add_column,
    ahead_digits,
    bits_key,
    block_minima,
    key_at_most,
    moved_query,
    predicted_rows,
    smallest_rows,
)
from ._vnni_dot import (
    arithmetic_fence,
    dot1x16,
    dot1x32,
    dot2x16,
    dot2x32,
    dot3x16,
    dot3x32,
    dot6x16,
    dot6x32,
    transpose16,
)

# The reference's arithmetic and the bounds, compiled from the functions herding calls.
_jit = numba.njit(cache=True, nogil=True)
margin_of = _jit(rounding.near_tie_margin)
advance = _jit(rounding.advance_center)
threshold32 = _jit(rounding.float32_threshold)
common_error = _jit(rounding.int8_common_error)
row_error = _jit(rounding.row_error)
digits_error = _jit(rounding.digits_error)
ahead_error = _jit(rounding.ahead_error)
separated = _jit(rounding.separated_pick)


@numba.njit(cache=True, nogil=True)
def int8_pass(qb, digits, offset, sums):
    """``sums[c, j] = digits[c]·q_j − offset_j`` (int32, exact) for every row of the blocked
    copy and the 1, 2, 3 or 6 digit rows: one read of the int8 rows, two blocks of 16 rows at
    a time (:mod:`._vnni_dot`)."""
    width, blocks = digits.shape[0], qb.shape[0]
    last = blocks - 1
    if width == 6:
        for block in range(0, last, 2):
            dot6x32(qb, block, digits, offset, sums)
        if blocks % 2:
            dot6x16(qb, last, digits, offset, sums)
    elif width == 3:
        for block in range(0, last, 2):
            dot3x32(qb, block, digits, offset, sums)
        if blocks % 2:
            dot3x16(qb, last, digits, offset, sums)
    elif width == 1:
        for block in range(0, last, 2):
            dot1x32(qb, block, digits, offset, sums)
        if blocks % 2:
            dot1x16(qb, last, digits, offset, sums)
    else:
        for block in range(0, last, 2):
            dot2x32(qb, block, digits, offset, sums)
        if blocks % 2:
            dot2x16(qb, last, digits, offset, sums)


@numba.njit(cache=True, nogil=True)
def row_sums(qb, n, digits, out):
    """``out[j] = digits·row_j`` (int32, ``[n, K]``) for the first ``n`` rows of the blocked
    copy, by :func:`int8_pass` with a zero offset: the exact integer pass, for the check
    against numpy."""
    blocks = -(-n // 16)  # only the blocks that hold the first n rows
    sums = np.empty((digits.shape[0], 16 * blocks), dtype=np.int32)
    int8_pass(qb[:blocks], digits, np.zeros(16 * blocks, dtype=np.int32), sums)
    for j in range(n):
        for c in range(digits.shape[0]):
            out[j, c] = sums[c, j]


@numba.njit(cache=True, nogil=True)
def query_digits(tp, digits):
    """``t' ≈ s_a·a + s_b·b``: int8 digits (+128, as uint8, into ``digits[0|1, :d]``),
    ``s_a = max|t'|/127`` and ``s_b`` the same for the remainder — or only ``a`` (``s_b =
    0``) when ``digits`` has one row. Returns ``(s_a, s_b, ‖â‖, ‖t' − â‖)``, the norms in
    float64 (their rounding is the caller's to bound)."""
    d = tp.shape[0]
    rest = tp.astype(np.float64)
    steps = np.zeros(2)
    for k in range(min(2, digits.shape[0])):
        top = 0.0
        for c in range(d):
            top = max(top, abs(rest[c]))
        step = top / 127.0
        steps[k] = step
        for c in range(d):
            v = np.rint(rest[c] / step) if step > 0.0 else 0.0
            digits[k, c] = np.uint8(v + 128.0)  # |v| <= 127
            rest[c] -= step * v
    an2, rn2 = 0.0, 0.0
    for c in range(d):
        h = tp[c] - rest[c]
        an2 += h * h
        rn2 += rest[c] * rest[c]
    return steps[0], steps[1], np.sqrt(an2), np.sqrt(rn2)


@numba.njit(cache=True, nogil=True)
def estimates(sa, sb, s_a, s_b, sq, scale2, est):
    """``est_j = sq_j − scale2_j·(s_a·sa_j + s_b·sb_j)`` (float64 arithmetic, stored float32)
    for every (padded) row: the two digits' exact sums as a score. Vectorised."""
    for j in range(est.shape[0]):
        est[j] = sq[j] - scale2[j] * (s_a * np.float64(sa[j]) + s_b * np.float64(sb[j]))


@numba.njit(cache=True, nogil=True)
def int8_scores(qb, offset, tp, digits, qd, scale2, sq, sums, est):
    """The query ``tp`` as ``qd`` (1 or 2) digits into ``digits[:qd]`` (:func:`query_digits`),
    :func:`int8_pass` over all of ``digits`` (look-ahead rows after the query's), then
    :func:`estimates` for every row. ``offset_j = 128·Σ_c q_j[c]`` removes the digits' +128
    shift exactly. Returns ``(‖â‖, ‖t' − â‖)``. Cost: one read of the int8 rows."""
    s_a, s_b, an, rest = query_digits(tp, digits[:qd])
    int8_pass(qb, digits, offset, sums)
    # one digit: s_b = 0, and sums[0] stands in for the absent second digit's sums
    estimates(sums[0], sums[qd - 1], s_a, s_b, sq, scale2, est)
    return an, rest


@numba.njit(cache=True, nogil=True)
def argmin32(est, block_min):
    """The first row of the smallest ``est`` (float32, no NaN), compared as integer keys,
    and the smallest key of every 64 rows into ``block_min`` (int32, ``⌈N/64⌉``, by
    :func:`._lookahead_kernels.block_minima`): :func:`finalists` skips the blocks it shows
    cannot hold a candidate, and the first index is searched only in the first block holding
    the minimum. One vectorised read of ``est``."""
    bits = est.view(np.int32)
    n = bits.shape[0]
    low = block_minima(est, block_min)
    for b in range(-(-n // 64)):
        if block_min[b] == low:
            for j in range(64 * b, min(n, 64 * b + 64)):
                if bits_key(bits[j]) == low:
                    return j
    return 0


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def float64_score(row, center, tp):
    """``‖row − center − tp‖²`` in float64, summed in whatever order LLVM vectorises
    (``reassoc`` only — the re-scoring bound of :func:`.rounding.near_tie_margin` holds for
    any order; no ``nnan``/``ninf``, so an inf stays inf): 110 ns a row at d = 512 here,
    where eight interleaved parts in a scratch array took 490."""
    total = 0.0
    for k in range(row.shape[0]):
        v = (np.float64(row[k]) - center[k]) - tp[k]
        total += v * v
    return total


@numba.njit(cache=True, nogil=True)
def finalists(est, block_min, res2, yh2, coef, thr, pre, x, center, tp, margin, limit, out):
    """The rows that can still be the reference's pick, into ``out``; returns how many, or
    -1 when more than ``limit`` rows pass the first test (the bound is too loose here).

    First test: ``est_j − row_error_j <= thr`` (float64; ``coef = (a, b, c)`` of
    :func:`.rounding.row_error`), after the cheap float32 ``est_j <= pre``, only in the
    blocks of 64 rows whose smallest key (``block_min``, from :func:`argmin32` on this
    ``est``) is at most ``pre``'s. Then every survivor's float64 score
    ``‖x_j − center − tp‖²`` and the rows within ``margin`` of the smallest, ascending."""
    a, b, c = coef
    pre32 = np.float32(pre)  # pre carries 4 units of float32 rounding: still above the cut
    top = key_at_most(pre32)
    n, m = est.shape[0], 0
    for block in range(block_min.shape[0]):  # most blocks hold no candidate
        if block_min[block] > top:
            continue
        for j in range(64 * block, min(n, 64 * block + 64)):
            if est[j] <= pre32 and np.float64(est[j]) - row_error(res2[j], yh2[j], a, b, c) <= thr:
                if m == limit:
                    return -1
                out[m] = j
                m += 1
    f = np.empty(m)
    low = np.inf
    for r in range(m):
        f[r] = float64_score(x[out[r]], center, tp)
        low = min(low, f[r])
    kept = 0
    for r in range(m):
        if f[r] <= low + margin:
            out[kept] = out[r]
            kept += 1
    return kept


@numba.njit(cache=True, nogil=True)
def herd(rows, x, c64, cur32, picks, i, k, limit, out):
    """Herding picks ``i, i+1, …`` fused in one loop while the bounds alone decide each:
    per pass the query ``t' = i·(center − cur)``, :func:`int8_scores`, the smallest upper
    bound, the near-tie margin, :func:`finalists`, then the reference's running center.

    With look-ahead rows (``len(ahead)``, after the query's ``qd`` digit rows) the pass also
    computes the columns ``⟨q_j, q_c⟩`` of the rows likeliest to be this pass's pick: the
    smallest scores when they are this pick's, else the smallest once moved by the last
    pick (:func:`predicted_rows`). If pick ``p`` is one of them, ``t'`` moves by ``−ŷ_p + δ``
    (:func:`moved_query`) and the next scores follow from the column without a pass
    (:func:`add_column`, the bound from :func:`.rounding.ahead_error`); at most ``chain``
    picks per pass.

    ``rows = (qb, offset, scale2, sq, res2, yh2, digits, sums, est, ahead, gap, near,
    consts)`` are an int8 copy's arrays (:class:`.scores.VnniScores`), ``consts = (g, ymax,
    res2max, yh2max, xmax, cn, chain, qd)``. Returns ``(i, m, passes)``: stopped at pick
    ``i`` with ``m`` finalists — 0 when ``i == k``, ``m > 1`` (in ``out[:m]``) when only the
    reference's own row sums can decide (:func:`.rounding.separated_pick` settles the other
    near-ties here), -1 when the bound of a pass leaves more than ``limit`` rows, -2 when no
    row has a finite bound — and how many passes it made."""
    qb, offset, scale2, sq, res2, yh2, digits, sums, est, ahead, gap, near, consts = rows
    g, ymax, res2max, yh2max, xmax, cn, chain, qd = consts
    n, d = x.shape
    c32 = c64.astype(np.float32)  # the reference's center (c64 is it, widened)
    scores = est[:n]
    tp, tq = np.empty(d), np.empty(d)  # the query of this pick, of the next
    passes = 0
    moved_limit = min(limit, max(32, n // 64))  # ~the float64 re-scoring one pass costs
    # the last pick whose column ``scores`` lacks (scores are of the pick before it), or -1
    pending = picks[i - 1] if i > 0 else -1
    block_min = np.empty(-(-n // 64), dtype=np.int32)  # argmin32's, for finalists
    argmin32(scores, block_min)  # and for predicted_rows' first guess
    moved = np.empty(near.shape[0], dtype=np.float32)
    while i < k:
        passes += 1
        if ahead.shape[0] > 0:
            if pending >= 0:
                predicted_rows(scores, block_min, sq, qb, offset, scale2, pending, gap, near,
                               moved, ahead)  # fmt: skip
            else:
                smallest_rows(scores, ahead)
            ahead_digits(qb, ahead, digits, qd)
        tn2 = 0.0
        for c in range(d):
            tp[c] = i * (c64[c] - np.float64(cur32[c]))
            tn2 += tp[c] * tp[c]
        tn = np.sqrt(tn2)
        an, rest = int8_scores(qb, offset, tp, digits, qd, scale2, sq, sums, est)
        query, an_up = digits_error(an, rest, tn)
        coef = (tn, query, common_error(g, ymax, res2max, yh2max, d, tn, an_up, query))
        for step in range(chain):
            cn2 = 0.0
            for c in range(d):
                cn2 += np.float64(cur32[c]) * np.float64(cur32[c])
            j0 = argmin32(scores, block_min)
            best = np.float64(scores[j0]) + row_error(res2[j0], yh2[j0], coef[0], coef[1], coef[2])
            if not best < np.inf:
                return i, -2, passes
            margin = margin_of(i, best, tn, np.sqrt(cn2), xmax, cn, d)
            thr = best + margin
            pre = threshold32(thr + row_error(res2max, yh2max, coef[0], coef[1], coef[2]))
            cap = limit if step == 0 else moved_limit
            m = finalists(scores, block_min, res2, yh2, coef, thr, pre, x, c64, tp, margin, cap,
                          out)  # fmt: skip
            if m == -1 and step > 0:
                pending = -1  # the scores are this pick's, only loose
                break  # a moved bound too loose: a fresh pass costs less than re-scoring
            if m > 1:  # near-ties: settled here when the reference's sums are bounded apart
                w = separated(cur32, x[out[:m]], i, c32)
                if w >= 0:
                    out[0] = out[w]
                    m = 1
            if m != 1:
                return i, m, passes
            p = out[0]
            picks[i] = p
            sq[p] = np.inf
            est[p] = np.inf
            advance(cur32, x[p], i)
            i += 1
            pending = p
            slot = -1
            for s in range(ahead.shape[0] - 1, -1, -1):
                slot = s if ahead[s] == p else slot
            if i == k or slot < 0:
                break  # done, or no column for this pick: a fresh pass
            # the scores of pick i from the column of p, no pass: t' moves by −ŷ_p + δ
            s_p = 0.5 * scale2[p]
            tn_new, dn = moved_query(tp, tn, tq, cur32, c64, i, s_p, digits[qd + slot])
            add_column(est, sums[qd + slot], scale2, s_p)
            coef = ahead_error(coef, tn, dn, tn_new, ymax, res2max, yh2max)
            pending = -1
            tp[:] = tq
            tn = tn_new
            if step == chain - 1:
                break  # the pass's last pick: the next pass picks its columns from these
    return i, 0, passes


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nnan", "ninf", "nsz"})
def quantize_rows(x, center, dest, sq, scales, res, offset):
    """Row ``j`` of ``y = x − center`` (float32) as ``scales_j·q_j`` plus a residual: ``q``
    int8 in ``[-127, 127]``, ``scales_j`` a bf16 value ``>= max|y_j|/127`` (1 for a ~zero row),
    ``sq_j = ‖y_j‖²``, ``res_j = ‖y_j − scales_j·q_j‖²`` (float32, the residual exact:
    8-bit scale × 7-bit integer, then Sterbenz), ``offset_j = 128·Σ q_j``. One read of ``x``.

    ``q_j`` goes into ``dest`` (int32 ``[⌈N/R⌉, D/4, R]``, zero-filled, ``D`` a multiple of
    64) at ``[j // R, ·, j % R]``: ``R = 1`` is the row-major copy torch's kernel reads, ``R =
    16`` the blocked one of :mod:`._vnni_dot`, written a full line of 16 rows at a time by
    :func:`._vnni_dot.transpose16`.

    Sums may be reordered (vectorised) and fused: the callers' bounds hold for any order. The
    features are finite (the callers check their norm), so no NaN or inf reaches here."""
    n, d = x.shape
    per_line = dest.shape[2]
    y = np.empty(d, dtype=np.float32)
    # one line's rows, written out when full (or the rows' end) in transposed 16×16 tiles:
    # the copy 0.60 -> 0.43 ms at 10 000×128, 2.15 -> 1.75 at ×512 (relu-like rows, best of
    # 15, one thread) against a plain loop of 4-byte words; padding columns stay zero
    block = np.zeros((per_line, 4 * dest.shape[1]), dtype=np.int8)
    words = block.view(np.int32)
    top = np.empty(1, dtype=np.int32)  # max |y_j| as float32 bits (an integer max vectorises)
    top_f = top.view(np.float32)
    for j in range(n):
        for c in range(d):
            y[c] = x[j, c] - center[c]
        total = np.float32(0.0)
        for c in range(d):
            total += y[c] * y[c]
        y_bits = y.view(np.int32)
        m = np.int32(0)  # the casts keep numba in int32: 16 lanes, not int64's 8
        for c in range(d):
            a = np.int32(y_bits[c] & np.int32(0x7FFFFFFF))
            m = np.int32(max(m, a))
        sq[j] = total
        top[0] = m
        top_f[0] = top_f[0] * np.float32(1 / 126.5)
        top[0] = (top[0] + 0x7FFF + ((top[0] >> 16) & 1)) & -65536  # to bf16, nearest
        s = top_f[0]
        if not s >= np.float32(2.0**-100):
            s = np.float32(1.0)  # ~zero row: q = 0 (no subnormal scale to flush)
        inv = arithmetic_fence(np.float32(1.0) / s)  # a multiply, not a divide, per value
        r = np.float32(0.0)
        count = np.int32(0)
        lane = j % per_line
        qrow = block[lane]
        for c in range(d):
            v = np.rint(y[c] * inv)
            e = y[c] - v * s
            r += e * e
            iv = np.int32(v)
            qrow[c] = np.int8(iv)
            count = np.int32(count + iv)
        scales[j] = s
        res[j] = r
        offset[j] = 128 * np.int64(count)
        if lane == 15:  # a full line of the blocked copy: 16×16 tiles, transposed
            for tile in range(words.shape[1] // 16):
                transpose16(words, dest[j // 16], tile)
        elif lane == per_line - 1 or j == n - 1:  # a last, partial line keeps dest's zeros
            for g in range(words.shape[1]):
                for r in range(lane + 1):
                    dest[j // per_line, g, r] = words[r, g]

"""The look-ahead's numba kernels for :func:`._int8_kernels.herd`: float32 scores as integer
keys and their 64-row block minima (:func:`bits_key`, :func:`key_at_most`,
:func:`block_minima`, which the argmin shares), which rows' columns a pass
computes (:func:`predicted_rows`, :func:`smallest_rows`), their digit rows
(:func:`ahead_digits`), and the scores and query after a pick whose column was computed
(:func:`add_column`, :func:`moved_query`). Plain numpy and numba, but for the VNNI row dot
of :func:`predicted_rows` (:mod:`._vnni_dot`; :class:`.scores.VnniScores` alone calls it,
after its check of the CPU); compiled on first use and cached on disk (``cache=True``: after
editing :mod:`._vnni_dot` in a checkout, delete ``__pycache__/_lookahead_kernels*.nb*``
too). None is ``fastmath``: numba compiles a ``fastmath``
function's callees with its flags, and ``nnan``/``ninf`` then fold away their tests against
``inf`` (an ``== inf`` in :func:`near_rows` did, once).
"""

import numba
import numpy as np

from ._vnni_dot import row_dot


@numba.njit(cache=True, nogil=True)
def bits_key(v):
    """float32 bits ``v`` (int32, no NaN) as an int32 key that orders as the floats do,
    ``-0.0`` just below ``+0.0``: an integer minimum vectorises, a float one does not. The map
    is its own inverse."""
    return np.int32(v ^ ((v >> 31) & np.int32(0x7FFFFFFF)))


@numba.njit(cache=True, nogil=True)
def key_at_most(v):
    """The largest key (:func:`bits_key`) of any float32 ``<= v`` (float32, no NaN): ``v``'s,
    or ``+0.0``'s when ``v`` is a zero (``-0.0 <= +0.0`` as floats, not as keys). Allocates:
    once per scan, not per row."""
    if v == 0:
        return np.int32(0)
    return bits_key(np.array([v], dtype=np.float32).view(np.int32)[0])


@numba.njit(cache=True, nogil=True)
def block_minima(est, block_min):
    """The smallest key (:func:`bits_key`) of every 64 rows of ``est`` (float32, no NaN) into
    ``block_min`` (int32, ``⌈N/64⌉``); returns the smallest of all. One read of ``est``; each
    full block runs a fixed trip count, which numba vectorises — a ragged or stepped range
    it leaves scalar (9 µs instead of 1 at N = 10 000)."""
    bits = est.view(np.int32)
    n = bits.shape[0]
    low = np.int32(0x7FFFFFFF)
    for b in range(-(-n // 64)):
        least = np.int32(0x7FFFFFFF)
        if 64 * b + 64 <= n:
            for u in range(64):
                v = bits[64 * b + u]
                # bits_key written out: called here (even inlined) it took ~2× as long
                key = np.int32(v ^ ((v >> 31) & np.int32(0x7FFFFFFF)))
                least = key if key < least else least
        else:
            for j in range(64 * b, n):
                key = bits_key(bits[j])
                least = key if key < least else least
        block_min[b] = least
        low = least if least < low else low
    return low


@numba.njit(cache=True, nogil=True)
def smallest_rows(est, out):
    """The ``len(out)`` rows of smallest ``est`` into ``out`` (ascending; row 0 fills the
    slots when fewer are finite). Cost: one vectorised read of ``est``, a few insertions."""
    count = out.shape[0]
    low = np.full(count, np.inf, dtype=np.float32)
    worst = low.view(np.int32)  # the worst kept as bits, for the keys' test
    out[:] = 0
    n = est.shape[0]
    block_min = np.empty(-(-n // 64), dtype=np.int32)
    block_minima(est, block_min)  # a vectorised read first: most blocks hold no new row
    for block in range(block_min.shape[0]):
        if block_min[block] >= bits_key(worst[count - 1]):
            continue  # no row below the worst kept (-0.0 vs +0.0: only read more)
        for j in range(64 * block, min(n, 64 * block + 64)):
            v = est[j]
            if v < low[count - 1]:
                at = count - 1
                while at > 0 and low[at - 1] > v:
                    low[at], out[at] = low[at - 1], out[at - 1]
                    at -= 1
                low[at], out[at] = v, j


@numba.njit(cache=True, nogil=True)
def count_below(est, block_min, limit):
    """How many of ``est`` (float32) are ``<= limit``, reading only the blocks of 64 rows
    whose key bound ``block_min`` (:func:`argmin32`'s, or lower) allows one."""
    top = np.float32(limit)
    key = key_at_most(top)
    count, n = 0, est.shape[0]
    for block in range(block_min.shape[0]):
        if block_min[block] <= key:
            if 64 * block + 64 <= n:  # fixed trip count: vectorises
                for u in range(64):
                    count += np.int64(1) if est[64 * block + u] <= top else np.int64(0)
            else:
                for j in range(64 * block, n):
                    count += np.int64(1) if est[j] <= top else np.int64(0)
    return count


@numba.njit(cache=True, nogil=True)
def near_rows(est, block_min, gap, near):
    """Rows of smallest ``est`` into ``near``, about ``len(near)/4 … len(near)`` of them:
    those within ``gap[0]`` of the smallest, the gap found by bisection on a log scale and
    kept in ``gap[0]`` for the next call (it moves little from pick to pick). ``block_min``
    bounds each 64 rows' keys from below (:func:`argmin32` on these scores, before rows
    were picked: still a bound), so only the few blocks near the smallest are read. Returns
    how many. Cost: ~1 µs at N = 10 000 — sorting the smallest 64 by insertion took ~20."""
    size, n = near.shape[0], est.shape[0]
    least = np.int32(0x7FFFFFFF)
    for block in range(block_min.shape[0]):
        least = min(least, block_min[block])
    bits = np.array([bits_key(least)], dtype=np.int32)  # the key back to float32 bits
    low = np.float64(bits.view(np.float32)[0])  # at most the smallest score
    if not low < np.inf:
        return 0
    g = gap[0] if gap[0] > 0 else abs(low) * 2.0**-10 + 1e-30
    under, over = 0.0, np.inf
    for _ in range(16):
        count = count_below(est, block_min, low + g)
        if size // 4 <= count <= size:
            break
        if count < size // 4:
            under = g
        else:
            over = g
        g = g * 4 if over == np.inf else (g / 4 if under == 0 else np.sqrt(under * over))
    gap[0] = g
    top, m = np.float32(low + g), 0
    key = key_at_most(top)
    for block in range(block_min.shape[0]):
        if block_min[block] <= key:
            for j in range(64 * block, min(n, 64 * block + 64)):
                if est[j] <= top and m < size:
                    near[m] = j
                    m += 1
    return m


@numba.njit(cache=True, nogil=True)
def predicted_rows(scores, block_min, sq, qb, offset, scale2, p, gap, near, moved, out):
    """The ``len(out)`` rows likeliest to be the next pick after ``p``, whose column the last
    pass did not compute: the rows of smallest score (:func:`near_rows`), each moved by
    ``2⟨ŷ_j, ŷ_p⟩`` from the int8 copy (which the pass just read: in cache, unlike the
    features), smallest first. Only a guess of which columns the next pass computes: it
    never decides a pick. Cost: ~64 int8 rows (:func:`._vnni_dot.row_dot` against ``q_p +
    128``, minus ``offset_j = 128·Σ q_j``: the exact integer ``⟨q_j, q_p⟩``), not a pass."""
    m = near_rows(scores, block_min, gap, near)
    digits = np.empty(4 * qb.shape[1], dtype=np.uint8)
    ahead_digits(qb, np.array([p]), digits.reshape(1, -1), 0)
    for r in range(m):
        j = near[r]
        moved[r] = np.inf
        if sq[j] < np.inf:  # a row picked in Python still has a score here: never a guess
            dot = row_dot(qb, j, digits) - offset[j]
            moved[r] = np.float32(scores[j] + scale2[j] * 0.5 * scale2[p] * np.float64(dot))
    smallest_rows(moved[:m], out)
    for s in range(out.shape[0]):
        out[s] = near[out[s]] if m > 0 else 0


@numba.njit(cache=True, nogil=True)
def ahead_digits(qb, rows, digits, first):
    """Rows ``rows`` of the int8 copy as digit rows ``first, first + 1, …`` (``q + 128``,
    uint8): the look-ahead columns of the next pass."""
    for m in range(rows.shape[0]):
        r = rows[m]
        block, lane = r // 16, r % 16
        for g in range(qb.shape[1]):
            for t in range(4):
                digits[first + m, 4 * g + t] = np.uint8(np.int32(qb[block, g, lane, t]) + 128)


@numba.njit(cache=True, nogil=True)
def add_column(est, column, scale2, s_p):
    """``est_j += scale2_j·s_p·column_j`` (float64, stored float32): ``2⟨ŷ_j, ŷ_p⟩`` from a
    look-ahead column, exact before the roundings (8-bit scales × a 31-bit integer)."""
    for j in range(est.shape[0]):
        est[j] = np.float64(est[j]) + scale2[j] * s_p * np.float64(column[j])


@numba.njit(cache=True, nogil=True)
def moved_query(tp, tn, tq, cur32, c64, i, s_p, digit_row):
    """``tq = i·(center − cur)`` (float64), the query of pick ``i``, after the pick of row
    ``p`` (``ŷ_p = s_p·(digit_row − 128)``) moved it from ``tp`` (``tn = ‖tp‖``). Returns
    ``(‖tq‖, dn)``, ``dn >= ‖δ‖`` for ``tq = tp − ŷ_p + δ`` (δ: the float32 running center's
    rounding and ``p``'s int8 residual), float64 rounding included."""
    d = tp.shape[0]
    tn2, dn2, yn2 = 0.0, 0.0, 0.0
    for c in range(d):
        tq[c] = i * (c64[c] - np.float64(cur32[c]))
        yh = s_p * (np.float64(digit_row[c]) - 128.0)  # exact: bf16 × 8-bit integer
        delta = tq[c] - (tp[c] - yh)
        tn2 += tq[c] * tq[c]
        dn2 += delta * delta
        yn2 += yh * yh
    sizes = np.sqrt(tn2) + tn + np.sqrt(yn2)
    dn = np.sqrt(dn2) * (1 + 4 * (d + 4) * 2.0**-53) + 1e-14 * sizes  # sums, two subtractions
    return np.sqrt(tn2), dn

"""The numba kernels behind :mod:`.center` (imported on first use: numba costs ~0.3 s), and
the distance pass to the center that :mod:`.closest` bounds.

One cascade state is ``acc[level, column]`` (float32); ``row_sum``'s four interleaved ones
are ``lanes[lane, level, column]``. Compiled once and cached on disk (``cache=True``).
"""

import numba
import numpy as np

_LEVELS = 4


@numba.njit(cache=True, nogil=True)
def _bit_length(v):
    """``int.bit_length`` (torch's ``CeilLog2(x)`` is ``bit_length(x - 1)`` for x > 2)."""
    b = 0
    while v > 0:
        v >>= 1
        b += 1
    return b


@numba.njit(cache=True, nogil=True)
def _flush(acc, count, power, lo, hi):
    """A chunk of ``2^power`` finished: carry it up the levels as far as ``count`` allows."""
    mask = (1 << power) - 1
    for j in range(1, _LEVELS):
        for c in range(lo, hi):
            acc[j, c] += acc[j - 1, c]
            acc[j - 1, c] = 0.0
        if count & (mask << (j * power)) != 0:
            break


@numba.njit(cache=True, nogil=True)
def _close_lanes(lanes, lo, hi):
    """Each lane's levels added into its level 0, in order (the end of its cascade)."""
    for lane in range(4):
        for j in range(1, _LEVELS):
            for c in range(lo, hi):
                lanes[lane, 0, c] += lanes[lane, j, c]


# Reassociation only (a vectorised sum; the caller's bound holds for any order) and
# contraction (exact here: the square of a float32 in float64 is exact). Not nnan/ninf: an
# inf row must give an inf norm, which the callers refuse.
@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def row_norm2(row):
    """``‖row‖²`` of a float32 row, in float64 (each square exact, summed in any order):
    vectorised, no allocation (a scratch array per row had cost 4× the mean's own sums)."""
    total = 0.0
    for c in range(row.shape[0]):
        v = np.float64(row[c])
        total += v * v
    return total


#: Rows summed per read of the one-cascade sums: each column still adds its rows in order, but
#: the running sums are loaded and stored once per eight rows, not once a row — the kernel
#: was compute-bound (~70 cycles a row at 1M×128 on a Xeon; 52 → 31 ns a row, one float32
#: pass 33). Eight divides every cascade chunk (2^4 rows or more), so no group straddles a
#: chunk's end. :func:`_add_group` is written out for eight.
GROUP = 8


@numba.njit(cache=True, nogil=True)
def _add_group(x, r, a0, n_cascade):
    """Rows ``r … r+7`` of ``x`` into ``a0[:n_cascade]``, each column in row order."""
    for c in range(n_cascade):
        v = a0[c]
        v += x[r, c]
        v += x[r + 1, c]
        v += x[r + 2, c]
        v += x[r + 3, c]
        v += x[r + 4, c]
        v += x[r + 5, c]
        v += x[r + 6, c]
        v += x[r + 7, c]
        a0[c] = v


@numba.njit(cache=True, nogil=True)
def add_rows(x, i0, n, n_cascade, acc, lanes, norm2):
    """Rows ``i0 …`` of an ``[N, d]`` float32 sum: columns ``< n_cascade`` into the one-cascade
    state ``acc`` (levels × d; :data:`GROUP` rows at a time where they are aligned), the rest
    into ``row_sum``'s four lane cascades; and, when ``norm2`` has a slot, the largest
    ``‖row‖²`` so far into ``norm2[0]`` (while the row is in cache: no second read of
    ``x``)."""
    m, d = x.shape
    pa = max(4, (1 if n <= 2 else _bit_length(n - 1)) // _LEVELS)
    quads = n // 4
    pb = max(4, (1 if quads <= 2 else _bit_length(quads - 1)) // _LEVELS)
    mask_a = (1 << pa) - 1
    mask_b = (1 << pb) - 1
    a0 = acc[0]
    r = 0
    while r < m:
        i = i0 + r
        step = GROUP if i % GROUP == 0 and r + GROUP <= m else 1
        for u in range(step):  # first: the rows' read also brings them into L1 for the sums
            if norm2.shape[0] > 0:
                norm2[0] = max(norm2[0], row_norm2(x[r + u]))
        if step == GROUP:
            _add_group(x, r, a0, n_cascade)
        else:
            for c in range(n_cascade):
                a0[c] += x[r, c]
        if (i + step) & mask_a == 0:  # a chunk ends at a group's end, never inside one
            _flush(acc, i + step, pa, 0, n_cascade)
        if n_cascade < d:
            for u in range(step):
                j = i + u
                if j < 4 * quads:
                    lane = j & 3
                    b0 = lanes[lane, 0]
                    for c in range(n_cascade, d):
                        b0[c] += x[r + u, c]
                    if lane == 3 and ((j >> 2) + 1) & mask_b == 0:
                        for q in range(4):
                            _flush(lanes[q], (j >> 2) + 1, pb, n_cascade, d)
                else:
                    if j == 4 * quads:
                        _close_lanes(lanes, n_cascade, d)
                    b0 = lanes[0, 0]
                    for c in range(n_cascade, d):
                        b0[c] += x[r + u, c]
        r += step


@numba.njit(cache=True, nogil=True)
def total_into(n, n_cascade, acc, lanes, out):
    """The float32 sum of all ``n`` rows into ``out``: each cascade's levels added in torch's
    order, then ``row_sum``'s four lanes."""
    d = out.shape[0]
    zero = np.float32(0.0)
    for c in range(n_cascade):
        v = acc[0, c]
        for j in range(1, _LEVELS):
            v += acc[j, c]
        out[c] = zero + v  # torch adds the sum into a zero-filled output
    if n_cascade < d:
        if n % 4 == 0:  # no leftover rows: add_rows never reached the lanes' end
            _close_lanes(lanes, n_cascade, d)
        for c in range(n_cascade, d):
            v = lanes[0, 0, c]
            for q in range(1, 4):
                v += lanes[q, 0, c]
            out[c] = zero + v


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def squared_distances(x, center, out):
    """``out[j] = Σ_c (x_jc − center_c)²`` in float32, summed in any order (the caller's
    ``γ_{d+2}`` bound holds for any; no ``nnan``/``ninf``: a non-finite row stays so). Eight
    rows at a time, each with its own sum: eight streams from memory instead of one, 41.6 →
    35.7 ms at 1M×128 on a Xeon (FAISS's ``fvec_L2sqr_ny``; one float32 pass 32.3), the same
    in cache."""
    n, d = x.shape
    full = n - n % 8
    for j in range(0, full, 8):
        t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = np.float32(0.0)
        for c in range(d):
            m = center[c]
            v0 = x[j, c] - m
            v1 = x[j + 1, c] - m
            v2 = x[j + 2, c] - m
            v3 = x[j + 3, c] - m
            v4 = x[j + 4, c] - m
            v5 = x[j + 5, c] - m
            v6 = x[j + 6, c] - m
            v7 = x[j + 7, c] - m
            t0 += v0 * v0
            t1 += v1 * v1
            t2 += v2 * v2
            t3 += v3 * v3
            t4 += v4 * v4
            t5 += v5 * v5
            t6 += v6 * v6
            t7 += v7 * v7
        out[j], out[j + 1], out[j + 2], out[j + 3] = t0, t1, t2, t3
        out[j + 4], out[j + 5], out[j + 6], out[j + 7] = t4, t5, t6, t7
    for j in range(full, n):
        t = np.float32(0.0)
        for c in range(d):
            v = x[j, c] - center[c]
            t += v * v
        out[j] = t

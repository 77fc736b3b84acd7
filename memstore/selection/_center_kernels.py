"""The numba kernels behind :mod:`.center` (imported on first use: numba costs ~0.3 s).

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


@numba.njit(cache=True, nogil=True)
def add_rows(x, i0, n, n_cascade, acc, lanes, norm2):
    """Rows ``i0 …`` of an ``[N, d]`` float32 sum: columns ``< n_cascade`` into the one-cascade
    state ``acc`` (levels × d), the rest into ``row_sum``'s four lane cascades; and, when
    ``norm2`` has a slot, the largest ``‖row‖²`` so far into ``norm2[0]`` (while the row is
    in cache: no second read of ``x``)."""
    m, d = x.shape
    pa = max(4, (1 if n <= 2 else _bit_length(n - 1)) // _LEVELS)
    quads = n // 4
    pb = max(4, (1 if quads <= 2 else _bit_length(quads - 1)) // _LEVELS)
    mask_a = (1 << pa) - 1
    mask_b = (1 << pb) - 1
    for r in range(m):
        i = i0 + r
        row = x[r]
        if norm2.shape[0] > 0:
            norm2[0] = max(norm2[0], row_norm2(row))
        a0 = acc[0]
        for c in range(n_cascade):
            a0[c] += row[c]
        if (i + 1) & mask_a == 0:
            _flush(acc, i + 1, pa, 0, n_cascade)
        if n_cascade < d:
            if i < 4 * quads:
                lane = i & 3
                b0 = lanes[lane, 0]
                for c in range(n_cascade, d):
                    b0[c] += row[c]
                if lane == 3 and ((i >> 2) + 1) & mask_b == 0:
                    for q in range(4):
                        _flush(lanes[q], (i >> 2) + 1, pb, n_cascade, d)
            else:
                if i == 4 * quads:
                    _close_lanes(lanes, n_cascade, d)
                b0 = lanes[0, 0]
                for c in range(n_cascade, d):
                    b0[c] += row[c]


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

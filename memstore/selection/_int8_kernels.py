"""The numba kernel behind :class:`.scores.VnniScores` (imported on first use: numba ~0.3 s).

LLVM does not turn a plain ``uint8 × int8`` loop into AVX-512 VNNI here (it emits widening
multiplies, ~2× slower), so :func:`dot2x16` calls ``llvm.x86.avx512.vpdpbusd.512`` itself:
64 byte products summed into 16 int32 lanes per instruction, exact. :func:`herd` is the whole
pick loop, fused, for every pick the bounds decide. Only compiled after the
caller has checked that this CPU has AVX-512 VNNI and numba targets it (an unsupported
instruction would stop LLVM, not raise). Compiled once and cached on disk (``cache=True``).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import rounding

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)  # one 64-byte register

# The reference's arithmetic and the bounds, compiled from the functions herding calls.
_jit = numba.njit(cache=True, nogil=True)
margin_of = _jit(rounding.near_tie_margin)
advance = _jit(rounding.advance_center)
threshold32 = _jit(rounding.float32_threshold)
common_error = _jit(rounding.int8_common_error)
row_error = _jit(rounding.row_error)
digits_error = _jit(rounding.digits_error)


@intrinsic
def dot2x16(typingctx, qb, block, a, b, out):
    """Rows ``16·block … +15`` of the blocked copy ``qb`` (int8 ``[B, D/4, 16, 4]``: for every
    four columns, 16 rows × 4 bytes in one 64-byte line) against the digits ``a``, ``b``
    (uint8 ``[D]``): ``out[0:16] = a·row``, ``out[16:32] = b·row`` (int32, exact). Each
    ``vpdpbusd`` takes four digits broadcast to all lanes and one line: every lane is a
    row, so no horizontal sum is needed."""
    sig = types.void(qb, block, a, b, out)

    def codegen(context, builder, signature, args):
        qb_ty, _, a_ty, b_ty, out_ty = signature.args
        qa = context.make_array(qb_ty)(context, builder, args[0])
        groups = cgutils.unpack_tuple(builder, qa.shape, 4)[1]
        block_at = builder.add(
            builder.ptrtoint(qa.data, _I64),
            builder.mul(args[1], cgutils.unpack_tuple(builder, qa.strides, 4)[0]),
        )
        digit_at = [
            builder.ptrtoint(context.make_array(ty)(context, builder, v).data, _I64)
            for ty, v in ((a_ty, args[2]), (b_ty, args[3]))
        ]
        dp = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_V16, [_V16, _V16, _V16]),
            "llvm.x86.avx512.vpdpbusd.512",
        )
        # Four accumulators per digit: consecutive vpdpbusd on one register would wait for
        # each other's latency (~5 cycles); groups g, g+1, g+2, g+3 go to different ones.
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V16, None)) for _ in range(8)]
        splat = ir.Constant(_V16, [0] * 16)
        four_groups = builder.udiv(groups, ir.Constant(groups.type, 4))  # D/4 is a multiple of 16
        with cgutils.for_range(builder, four_groups) as loop:
            for u in range(4):
                g = builder.add(builder.mul(loop.index, ir.Constant(_I64, 4)), ir.Constant(_I64, u))
                line_at = builder.add(block_at, builder.mul(g, ir.Constant(_I64, 64)))
                line = builder.load(builder.inttoptr(line_at, _V16.as_pointer()), align=1)
                for k in range(2):
                    word_at = builder.add(digit_at[k], builder.mul(g, ir.Constant(_I64, 4)))
                    word = builder.load(builder.inttoptr(word_at, _I32.as_pointer()), align=1)
                    four = builder.insert_element(
                        ir.Constant(_V16, None), word, ir.Constant(_I32, 0)
                    )
                    four = builder.shuffle_vector(four, four, splat)
                    acc = accs[4 * k + u]
                    builder.store(builder.call(dp, [builder.load(acc), four, line]), acc)
        totals = []
        for k in range(2):
            parts = [builder.load(accs[4 * k + u]) for u in range(4)]
            totals.append(
                builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))
            )
        oa = context.make_array(out_ty)(context, builder, args[4])
        out_at = builder.ptrtoint(oa.data, _I64)
        for k in range(2):
            at = builder.add(out_at, ir.Constant(_I64, 64 * k))
            builder.store(totals[k], builder.inttoptr(at, _V16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def row_sums(qb, n, a, b, out):
    """``out[j] = (a·row_j, b·row_j)`` (int32) for the first ``n`` rows of the blocked copy,
    by :func:`dot2x16`: the exact integer pass, for the check against numpy."""
    sums = np.empty(32, dtype=np.int32)
    for block in range(-(-n // 16)):
        dot2x16(qb, block, a, b, sums)
        for r in range(min(16, n - 16 * block)):
            out[16 * block + r, 0] = sums[r]
            out[16 * block + r, 1] = sums[16 + r]


@numba.njit(cache=True, nogil=True)
def query_digits(tp, digits):
    """``t' ≈ s_a·a + s_b·b``: two int8 digits (+128, as uint8, into ``digits[0|1, :d]``),
    ``s_a = max|t'|/127`` and ``s_b`` the same for the remainder. Returns ``(s_a, s_b, ‖â‖,
    ‖t' − â‖)``, the norms in float64 (their rounding is the caller's to bound)."""
    d = tp.shape[0]
    rest = tp.astype(np.float64)
    steps = np.zeros(2)
    for k in range(2):
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
def int8_scores(qb, offset, tp, digits, scale2, sq, est):
    """The query ``tp`` as two digits (:func:`query_digits`), then ``est_j = sq_j −
    scale2_j·(s_a·(a·q_j − offset_j) + s_b·(b·q_j − offset_j))`` (float64 arithmetic, stored
    float32) for every row. ``offset_j = 128·Σ_c q_j[c]`` removes the digits' +128 shift
    exactly. Returns ``(‖â‖, ‖t' − â‖)``. Cost: one read of the int8 rows."""
    s_a, s_b, an, rest = query_digits(tp, digits)
    a, b = digits[0], digits[1]
    n = sq.shape[0]
    sums = np.empty(32, dtype=np.int32)  # [16 rows·a, 16 rows·b] of one block
    for block in range(qb.shape[0]):
        dot2x16(qb, block, a, b, sums)
        start = 16 * block
        for r in range(min(16, n - start)):  # vectorised across the block's rows
            j = start + r
            da = np.int64(sums[r]) - offset[j]
            db = np.int64(sums[16 + r]) - offset[j]
            est[j] = sq[j] - scale2[j] * (s_a * da + s_b * db)
    return an, rest


@numba.njit(cache=True, nogil=True)
def argmin32(est):
    """The first row of the smallest ``est`` (float32, no NaN), compared as integer keys —
    an integer minimum vectorises, a float one does not (``-0.0`` counts below ``+0.0``)."""
    bits = est.view(np.int32)
    low = np.int32(0x7FFFFFFF)
    for j in range(bits.shape[0]):
        key = bits[j] ^ ((bits[j] >> 31) & np.int32(0x7FFFFFFF))
        low = key if key < low else low
    for j in range(bits.shape[0]):
        if bits[j] ^ ((bits[j] >> 31) & np.int32(0x7FFFFFFF)) == low:
            return j
    return 0


@numba.njit(cache=True, nogil=True)
def finalists(est, res2, yh2, coef, thr, pre, x, center, tp, margin, limit, out):
    """The rows that can still be the reference's pick, into ``out``; returns how many, or
    -1 when more than ``limit`` rows pass the first test (the bound is too loose here).

    First test: ``est_j − row_error_j <= thr`` (float64; ``coef = (a, b, c)`` of
    :func:`.rounding.row_error`), after the cheap float32 ``est_j <= pre``. Then every
    survivor's float64 score ``‖x_j − center − tp‖²`` and the rows within ``margin`` of the
    smallest, ascending."""
    a, b, c = coef
    pre32 = np.float32(pre)  # pre carries 4 units of float32 rounding: still above the cut
    n, m = est.shape[0], 0
    for start in range(0, n, 64):  # a vectorised count first: most blocks have no candidate
        stop = min(n, start + 64)
        hits = 0
        for j in range(start, stop):
            hits += est[j] <= pre32
        if hits == 0:
            continue
        for j in range(start, stop):
            if est[j] <= pre32 and np.float64(est[j]) - row_error(res2[j], yh2[j], a, b, c) <= thr:
                if m == limit:
                    return -1
                out[m] = j
                m += 1
    d = x.shape[1]
    f = np.empty(m)
    low = np.inf
    for r in range(m):
        total = 0.0
        for k in range(d):
            v = (np.float64(x[out[r], k]) - center[k]) - tp[k]
            total += v * v
        f[r] = total
        low = min(low, total)
    kept = 0
    for r in range(m):
        if f[r] <= low + margin:
            out[kept] = out[r]
            kept += 1
    return kept


@numba.njit(cache=True, nogil=True)
def herd(rows, x, c64, cur32, picks, i, k, limit, out):
    """Herding picks ``i, i+1, …`` fused in one loop while the bounds alone decide each:
    per pick the query ``t' = i·(center − cur)``, :func:`int8_scores`, the smallest upper
    bound, the near-tie margin, :func:`finalists`, then the reference's running center.

    ``rows = (qb, offset, scale2, sq, res2, yh2, digits, est, consts)`` are an int8 copy's
    arrays (:class:`.scores.VnniScores`), ``consts = (g, ymax, res2max, yh2max, xmax, cn)``.
    Returns ``(i, m)``: stopped at pick ``i`` with ``m`` finalists — 0 when ``i == k``, ``m >
    1`` (in ``out[:m]``) when the reference's own expression must decide, -1 when the bound
    leaves more than ``limit`` rows, -2 when no row has a finite bound."""
    qb, offset, scale2, sq, res2, yh2, digits, est, consts = rows
    g, ymax, res2max, yh2max, xmax, cn = consts
    d = x.shape[1]
    tp = np.empty(d)
    while i < k:
        tn2, cn2 = 0.0, 0.0
        for c in range(d):
            cur = np.float64(cur32[c])
            tp[c] = i * (c64[c] - cur)
            tn2 += tp[c] * tp[c]
            cn2 += cur * cur
        tn = np.sqrt(tn2)
        an, rest = int8_scores(qb, offset, tp, digits, scale2, sq, est)
        query, an_up = digits_error(an, rest, tn)
        cc = common_error(g, ymax, res2max, yh2max, d, tn, an_up, query)
        j0 = argmin32(est)
        best = np.float64(est[j0]) + row_error(res2[j0], yh2[j0], tn, query, cc)
        if not best < np.inf:
            return i, -2
        margin = margin_of(i, best, tn, np.sqrt(cn2), xmax, cn, d)
        thr = best + margin
        pre = threshold32(thr + row_error(res2max, yh2max, tn, query, cc))
        m = finalists(est, res2, yh2, (tn, query, cc), thr, pre, x, c64, tp, margin, limit, out)
        if m != 1:
            return i, m
        p = out[0]
        picks[i] = p
        sq[p] = np.inf
        advance(cur32, x[p], i)
        i += 1
    return i, 0


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nnan", "ninf", "nsz"})
def quantize_rows(x, center, dest, sq, scales, res, offset):
    """Row ``j`` of ``y = x − center`` (float32) as ``scales_j·q_j`` plus a residual: ``q``
    int8 in ``[-127, 127]``, ``scales_j`` a bf16 value ``>= max|y_j|/127`` (1 for a ~zero row),
    ``sq_j = ‖y_j‖²``, ``res_j = ‖y_j − scales_j·q_j‖²`` (float32, the residual exact:
    8-bit scale × 7-bit integer, then Sterbenz), ``offset_j = 128·Σ q_j``. One read of ``x``.

    ``q_j`` goes four bytes at a time into ``dest`` (int32 ``[⌈N/R⌉, D/4, R]``, zero-filled,
    ``D`` a multiple of 64) at ``[j // R, ·, j % R]``: ``R = 1`` is the row-major copy torch's
    kernel reads, ``R = 16`` the blocked one of :func:`dot2x16`.

    Sums may be reordered (vectorised) and fused: the callers' bounds hold for any order. The
    features are finite (the callers check their norm), so no NaN or inf reaches here."""
    n, d = x.shape
    per_line = dest.shape[2]
    y = np.empty(d, dtype=np.float32)
    qrow = np.zeros(4 * dest.shape[1], dtype=np.int8)  # padding columns stay zero
    words = qrow.view(np.int32)
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
        inv = np.float32(1.0) / s
        r = np.float32(0.0)
        count = np.int32(0)
        for c in range(d):
            v = np.rint(y[c] * inv)
            e = y[c] - v * s
            r += e * e
            iv = np.int32(v)
            qrow[c] = np.int8(iv)
            count = np.int32(count + iv)
        line, lane = j // per_line, j % per_line
        for g in range(words.shape[0]):
            dest[line, g, lane] = words[g]
        scales[j] = s
        res[j] = r
        offset[j] = 128 * np.int64(count)

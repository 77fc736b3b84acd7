"""The numba kernel behind :class:`.scores.VnniScores` (imported on first use: numba ~0.3 s).

LLVM does not turn a plain ``uint8 × int8`` loop into AVX-512 VNNI here (it emits widening
multiplies, ~2× slower), so :func:`dot2` calls ``llvm.x86.avx512.vpdpbusd.512`` itself: 64
byte products summed into 16 int32 lanes per instruction, exact. Only compiled after the
caller has checked that this CPU has AVX-512 VNNI and numba targets it (an unsupported
instruction would stop LLVM, not raise). Compiled once and cached on disk (``cache=True``).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)  # one 64-byte register


@intrinsic
def dot2(typingctx, q, row, a, b):
    """``(Σ_c a[c]·q[row, c], Σ_c b[c]·q[row, c])`` in int32: ``q`` int8 ``[N, D]`` with
    ``D % 64 == 0`` and C-contiguous rows, ``a`` and ``b`` uint8 ``[D]``. One read of the row,
    two ``vpdpbusd`` per 64 bytes."""
    sig = types.UniTuple(types.int32, 2)(q, row, a, b)

    def codegen(context, builder, signature, args):
        q_ty, _, a_ty, b_ty = signature.args
        qa = context.make_array(q_ty)(context, builder, args[0])
        aa = context.make_array(a_ty)(context, builder, args[2])
        ba = context.make_array(b_ty)(context, builder, args[3])
        stride = cgutils.unpack_tuple(builder, qa.strides, 2)[0]
        width = cgutils.unpack_tuple(builder, aa.shape, 1)[0]
        n_vec = builder.udiv(width, ir.Constant(width.type, 64))
        row_at = builder.add(builder.ptrtoint(qa.data, _I64), builder.mul(args[1], stride))
        a_at = builder.ptrtoint(aa.data, _I64)
        b_at = builder.ptrtoint(ba.data, _I64)
        dp = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_V16, [_V16, _V16, _V16]),
            "llvm.x86.avx512.vpdpbusd.512",
        )
        acc_a = cgutils.alloca_once_value(builder, ir.Constant(_V16, None))
        acc_b = cgutils.alloca_once_value(builder, ir.Constant(_V16, None))
        with cgutils.for_range(builder, n_vec) as loop:
            off = builder.mul(loop.index, ir.Constant(loop.index.type, 64))

            def load(at):
                return builder.load(
                    builder.inttoptr(builder.add(at, off), _V16.as_pointer()), align=1
                )

            x = load(row_at)
            builder.store(builder.call(dp, [builder.load(acc_a), load(a_at), x]), acc_a)
            builder.store(builder.call(dp, [builder.load(acc_b), load(b_at), x]), acc_b)
        total = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32, [_V16]), "llvm.vector.reduce.add.v16i32"
        )
        sums = [builder.call(total, [builder.load(acc)]) for acc in (acc_a, acc_b)]
        return context.make_tuple(builder, signature.return_type, sums)

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def row_dots(q, a, b, out):
    """``out[j] = (a·q_j, b·q_j)`` (int32) for every row: the exact integer pass, for the
    probe that checks the instruction against numpy."""
    for j in range(q.shape[0]):
        out[j, 0], out[j, 1] = dot2(q, j, a, b)


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
def int8_scores(q, offset, tp, digits, scale2, sq, est):
    """The query ``tp`` as two digits (:func:`query_digits`), then ``est_j = sq_j −
    scale2_j·(s_a·(a·q_j − offset_j) + s_b·(b·q_j − offset_j))`` (float64 arithmetic, stored
    float32) for every row. ``offset_j = 128·Σ_c q_j[c]`` removes the digits' +128 shift
    exactly. Returns ``(‖â‖, ‖t' − â‖)``. Cost: one read of the int8 rows."""
    s_a, s_b, an, rest = query_digits(tp, digits)
    a, b = digits[0], digits[1]
    for j in range(q.shape[0]):
        da, db = dot2(q, j, a, b)
        est[j] = sq[j] - scale2[j] * (
            s_a * (np.int64(da) - offset[j]) + s_b * (np.int64(db) - offset[j])
        )
    return an, rest


@numba.njit(cache=True, nogil=True)
def finalists(est, res2, yh2, coef, thr, pre, x, center, tp, margin, limit, out):
    """The rows that can still be the reference's pick, into ``out``; returns how many, or
    -1 when more than ``limit`` rows pass the first test (the bound is too loose here).

    First test: ``est_j − (1.01·(res2_j·a + yh2_j·b) + c) <= thr`` (float64; ``coef = (a,
    b, c)``), after the cheap float32 ``est_j <= pre``. Then every survivor's float64 score
    ``‖x_j − center − tp‖²`` and the rows within ``margin`` of the smallest, ascending."""
    a, b, c = coef
    m = 0
    for j in range(est.shape[0]):
        if est[j] <= pre and np.float64(est[j]) - (1.01 * (res2[j] * a + yh2[j] * b) + c) <= thr:
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


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nnan", "ninf", "nsz"})
def quantize_rows(x, center, q, sq, scales, res, offset):
    """Row ``j`` of ``y = x − center`` (float32) as ``scales_j·q_j`` plus a residual: ``q``
    int8 in ``[-127, 127]``, ``scales_j`` a bf16 value ``>= max|y_j|/127`` (1 for a ~zero row),
    ``sq_j = ‖y_j‖²``, ``res_j = ‖y_j − scales_j·q_j‖²`` (float32, the residual exact:
    8-bit scale × 7-bit integer, then Sterbenz), ``offset_j = 128·Σ q_j``. One read of ``x``.

    Sums may be reordered (vectorised) and fused: the callers' bounds hold for any order. The
    features are finite (the callers check their norm), so no NaN or inf reaches here."""
    n, d = x.shape
    y = np.empty(d, dtype=np.float32)
    top = np.empty(1, dtype=np.int32)  # max |y_j| as float32 bits (an integer max vectorises)
    top_f = top.view(np.float32)
    for j in range(n):
        for c in range(d):
            y[c] = x[j, c] - center[c]
        total = np.float32(0.0)
        for c in range(d):
            total += y[c] * y[c]
        y_bits = y.view(np.int32)
        m = np.int32(0)
        for c in range(d):
            a = y_bits[c] & np.int32(0x7FFFFFFF)
            m = a if a > m else m
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
            q[j, c] = np.int8(iv)
            count += iv
        scales[j] = s
        res[j] = r
        offset[j] = 128 * np.int64(count)

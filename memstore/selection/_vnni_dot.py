"""The blocked int8 copy's LLVM IR kernels behind :mod:`._int8_kernels`, emitted by numba.

LLVM does not turn a plain ``uint8 × int8`` loop into VNNI here (it emits widening multiplies,
~2× slower), so :func:`columns_dot` calls ``llvm.x86.avx512.vpdpbusd.512`` itself: 64 byte
products summed into 16 int32 lanes per instruction, exact. Only compiled after the caller has
checked that this CPU has AVX-512 VNNI and numba targets it (an unsupported instruction would
stop LLVM, not raise). :func:`row_dot` is one row's sum against one digit row (the
look-ahead's guess), by gathers; :func:`transpose16` writes a line of 16 quantised rows into
that layout: LLVM leaves both plain loops scalar. :func:`arithmetic_fence` keeps a value out
of ``fastmath`` rewrites.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "arithmetic_fence",
    "columns_dot",
    "dot1x16",
    "dot2x16",
    "dot3x16",
    "dot6x16",
    "dot1x32",
    "dot2x32",
    "dot3x32",
    "dot6x32",
    "row_dot",
    "transpose16",
]

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)  # one 64-byte register
_I8P = ir.IntType(8).as_pointer()
_AHEAD = 2048  # bytes prefetched ahead of the line read: ~8 % here, whatever the width


def columns_dot(columns: int, blocks: int):  # noqa: ANN201 (a numba intrinsic)
    """An intrinsic ``dot(qb, block, digits, offset, sums)``: rows ``16·block …
    16·(block + blocks) − 1`` of the blocked copy ``qb`` (int8 ``[B, D/4, 16, 4]``: for every
    four columns, 16 rows × 4 bytes in one 64-byte line) against the first ``columns`` rows of
    ``digits`` (uint8 ``[K, D]``), minus ``offset`` (int32, one per row): ``sums[c, j] =
    digits[c]·row_j − offset[j]`` (int32, exact).

    Each ``vpdpbusd`` takes four digits broadcast to all lanes and one line: every lane is a
    row, so no horizontal sum is needed. Each broadcast serves the same line of ``blocks``
    consecutive blocks, one accumulator per block and column (``blocks·columns`` chains hide
    the instruction's ~5-cycle latency): two blocks a call cut a pass 13–18 % at d = 128 against
    one (where a pass computes, half its instructions were broadcasts), ~5 % at d = 512."""

    @intrinsic
    def dot(typingctx, qb, block, digits, offset, sums):
        sig = types.void(qb, block, digits, offset, sums)

        def codegen(context, builder, signature, args):
            qb_ty, _, digits_ty, offset_ty, sums_ty = signature.args
            qa = context.make_array(qb_ty)(context, builder, args[0])
            groups = cgutils.unpack_tuple(builder, qa.shape, 4)[1]
            block_bytes = cgutils.unpack_tuple(builder, qa.strides, 4)[0]
            first = builder.add(builder.ptrtoint(qa.data, _I64), builder.mul(args[1], block_bytes))
            block_at = [
                builder.add(first, builder.mul(block_bytes, ir.Constant(_I64, b)))
                for b in range(blocks)
            ]
            da = context.make_array(digits_ty)(context, builder, args[2])
            digits_row = cgutils.unpack_tuple(builder, da.strides, 2)[0]
            digit_at = [
                builder.add(
                    builder.ptrtoint(da.data, _I64),
                    builder.mul(digits_row, ir.Constant(_I64, c)),
                )
                for c in range(columns)
            ]
            dp = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(_V16, [_V16, _V16, _V16]),
                "llvm.x86.avx512.vpdpbusd.512",
            )
            prefetch = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32]),
                "llvm.prefetch.p0i8",  # a hint (read, keep, data): never faults past the end
            )
            accs = [
                [
                    cgutils.alloca_once_value(builder, ir.Constant(_V16, None))
                    for _ in range(columns)
                ]
                for _ in range(blocks)
            ]
            splat = ir.Constant(_V16, [0] * 16)
            four_groups = builder.udiv(groups, ir.Constant(groups.type, 4))  # D/4: ×16
            with cgutils.for_range(builder, four_groups) as loop:
                for u in range(4):
                    g = builder.add(
                        builder.mul(loop.index, ir.Constant(_I64, 4)), ir.Constant(_I64, u)
                    )
                    fours = []
                    for c in range(columns):
                        word_at = builder.add(digit_at[c], builder.mul(g, ir.Constant(_I64, 4)))
                        word = builder.load(builder.inttoptr(word_at, _I32.as_pointer()), align=1)
                        four = builder.insert_element(
                            ir.Constant(_V16, None), word, ir.Constant(_I32, 0)
                        )
                        fours.append(builder.shuffle_vector(four, four, splat))
                    for b in range(blocks):
                        line_at = builder.add(block_at[b], builder.mul(g, ir.Constant(_I64, 64)))
                        line = builder.load(builder.inttoptr(line_at, _V16.as_pointer()), align=1)
                        soon = builder.inttoptr(
                            builder.add(line_at, ir.Constant(_I64, _AHEAD)), _I8P
                        )
                        builder.call(prefetch, [soon, *(ir.Constant(_I32, v) for v in (0, 3, 1))])
                        for c in range(columns):
                            acc = accs[b][c]
                            builder.store(
                                builder.call(dp, [builder.load(acc), fours[c], line]), acc
                            )
            oa = context.make_array(offset_ty)(context, builder, args[3])
            sa = context.make_array(sums_ty)(context, builder, args[4])
            sums_row = cgutils.unpack_tuple(builder, sa.strides, 2)[0]
            for b in range(blocks):
                row_at = builder.mul(  # 16 int32 per block
                    builder.add(args[1], ir.Constant(_I64, b)), ir.Constant(_I64, 64)
                )
                at = builder.add(builder.ptrtoint(oa.data, _I64), row_at)
                off = builder.load(builder.inttoptr(at, _V16.as_pointer()), align=4)
                sums_at = builder.add(builder.ptrtoint(sa.data, _I64), row_at)
                for c in range(columns):
                    total = builder.sub(builder.load(accs[b][c]), off)
                    at = builder.add(sums_at, builder.mul(sums_row, ir.Constant(_I64, c)))
                    builder.store(total, builder.inttoptr(at, _V16.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return dot


# The pass's intrinsics for 1, 2, 3 or 6 digit rows (the query's one or two digits and 0, 1
# or 4 look-ahead rows): two blocks a call, and one for an odd last block.
dot1x32, dot2x32, dot3x32, dot6x32 = (columns_dot(w, 2) for w in (1, 2, 3, 6))
dot1x16, dot2x16, dot3x16, dot6x16 = (columns_dot(w, 1) for w in (1, 2, 3, 6))


@intrinsic
def row_dot(typingctx, qb, j, digits):  # noqa: ANN201 (a numba intrinsic)
    """``Σ_c digits[c]·q_j[c]`` (int32, exact): row ``j`` of the blocked copy ``qb`` against one
    digit row (uint8 ``[D]``, ``D = 4·qb.shape[1]``). Row ``j``'s four bytes of each group lie
    64 bytes apart, so each ``vpdpbusd`` takes 16 groups' words by one gather and the digits'
    64 contiguous bytes: 3.4 → 1.8 µs for 59 rows at d = 128, 14.1 → 6.3 at d = 512, against a
    scalar loop over the bytes."""
    sig = types.int32(qb, j, digits)

    def codegen(context, builder, signature, args):
        qa = context.make_array(signature.args[0])(context, builder, args[0])
        groups = cgutils.unpack_tuple(builder, qa.shape, 4)[1]
        block_bytes = cgutils.unpack_tuple(builder, qa.strides, 4)[0]
        block = builder.udiv(args[1], ir.Constant(_I64, 16))
        lane = builder.urem(args[1], ir.Constant(_I64, 16))
        row_at = builder.add(
            builder.ptrtoint(qa.data, _I64),
            builder.add(builder.mul(block, block_bytes), builder.mul(lane, ir.Constant(_I64, 4))),
        )
        da = context.make_array(signature.args[2])(context, builder, args[2])
        digits_at = builder.ptrtoint(da.data, _I64)
        pointers = ir.VectorType(_I32.as_pointer(), 16)
        wide = ir.VectorType(_I64, 16)
        gather = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_V16, [pointers, _I32, ir.VectorType(ir.IntType(1), 16), _V16]),
            "llvm.masked.gather.v16i32.v16p0",
        )
        dp = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_V16, [_V16, _V16, _V16]),
            "llvm.x86.avx512.vpdpbusd.512",
        )
        every = ir.Constant(ir.VectorType(ir.IntType(1), 16), [1] * 16)
        lines = ir.Constant(wide, [64 * g for g in range(16)])  # 16 groups, one line each
        acc = cgutils.alloca_once_value(builder, ir.Constant(_V16, [0] * 16))
        with cgutils.for_range(builder, builder.udiv(groups, ir.Constant(_I64, 16))) as loop:
            at = builder.add(row_at, builder.mul(loop.index, ir.Constant(_I64, 1024)))
            one = builder.insert_element(ir.Constant(wide, None), at, ir.Constant(_I32, 0))
            splat = builder.shuffle_vector(one, one, ir.Constant(_V16, [0] * 16))
            addresses = builder.inttoptr(builder.add(splat, lines), pointers)
            words = builder.call(
                gather, [addresses, ir.Constant(_I32, 4), every, ir.Constant(_V16, None)]
            )
            word_at = builder.add(digits_at, builder.mul(loop.index, ir.Constant(_I64, 64)))
            digit_words = builder.load(builder.inttoptr(word_at, _V16.as_pointer()), align=1)
            builder.store(builder.call(dp, [builder.load(acc), digit_words, words]), acc)
        total = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32, [_V16]), "llvm.vector.reduce.add.v16i32"
        )
        return builder.call(total, [builder.load(acc)])

    return sig, codegen


@intrinsic
def transpose16(typingctx, src, dst, tile):  # noqa: ANN201 (a numba intrinsic)
    """``dst[16·tile + c, r] = src[r, 16·tile + c]`` for ``r, c < 16``: one 16×16 tile of int32
    (``src`` ``[16, W]``, ``dst`` ``[W, 16]``, both C-contiguous), in 16 loads, 64 two-register
    shuffles and 16 stores — the scalar loop took ~2 instructions a word, a third of the int8
    copy's time at 10 000×128."""
    sig = types.void(src, dst, tile)

    def codegen(context, builder, signature, args):
        sa = context.make_array(signature.args[0])(context, builder, args[0])
        da = context.make_array(signature.args[1])(context, builder, args[1])
        src_row = cgutils.unpack_tuple(builder, sa.strides, 2)[0]
        dst_row = cgutils.unpack_tuple(builder, da.strides, 2)[0]
        src_at = builder.add(
            builder.ptrtoint(sa.data, _I64), builder.mul(args[2], ir.Constant(_I64, 64))
        )
        first = builder.mul(args[2], ir.Constant(_I64, 16))  # the tile's first dst row
        dst_at = builder.add(builder.ptrtoint(da.data, _I64), builder.mul(first, dst_row))
        rows = []
        for r in range(16):
            at = builder.add(src_at, builder.mul(src_row, ir.Constant(_I64, r)))
            rows.append(builder.load(builder.inttoptr(at, _V16.as_pointer()), align=4))
        # swap the off-diagonal b×b blocks of every 2b×2b block, b = 8, 4, 2, 1: the transpose
        for b in (8, 4, 2, 1):
            low = ir.Constant(_V16, [c if c & b == 0 else 16 + c - b for c in range(16)])
            high = ir.Constant(_V16, [c + b if c & b == 0 else 16 + c for c in range(16)])
            for i in (r for r in range(16) if not r & b):
                rows[i], rows[i + b] = (
                    builder.shuffle_vector(rows[i], rows[i + b], low),
                    builder.shuffle_vector(rows[i], rows[i + b], high),
                )
        for r in range(16):
            at = builder.add(dst_at, builder.mul(dst_row, ir.Constant(_I64, r)))
            builder.store(rows[r], builder.inttoptr(at, _V16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def arithmetic_fence(typingctx, value):  # noqa: ANN201 (a numba intrinsic)
    """``value`` (float32) as is, behind ``llvm.arithmetic.fence``: ``fastmath`` rewrites do not
    see through it, and it compiles to nothing. ``quantize_rows`` multiplies by a reciprocal;
    with ``reassoc`` LLVM folded ``y·(1/s)`` back into ``y/s``, a vector divide per eight
    values (1.91 → 1.62 ms for the copy at 10 000×512 on a Xeon once fenced)."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        fence = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.FloatType(), [ir.FloatType()]),
            "llvm.arithmetic.fence.f32",
        )
        return builder.call(fence, [args[0]])

    return sig, codegen

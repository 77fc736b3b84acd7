"""Herding's first pass by FAISS's 8-bit scalar-quantizer L2 search, with a rigorous bound.

In the reference's frame, pick ``i`` minimises ``‖x_j − t‖`` over the unpicked rows, with
``t = (i+1)·center − i·cur`` (``(i+1)²·D_j = ‖x_j − t‖²``). :class:`SQ8Search` keeps an int8
copy ``q = round(x / s)`` of the features (one global bf16 scale ``s``, so ``s·q`` is exact)
in a FAISS ``IndexScalarQuantizer`` (``QT_8bit_direct_signed``: the codes *are* the
integers) and asks it for the ``K`` rows nearest ``t / s``, picked rows masked by an
``IDSelectorBitmap``. No query is quantized (FAISS computes in float32), no length-``N``
array is touched by numpy, and the bound is uniform:

``| ‖x_j − t‖ − s·√D̃_j | ≤ s·(√(D̃_j ± E) − √D̃_j) + s·‖a − t/s‖ + ‖x_j − s·q_j‖``

with ``D̃_j`` FAISS's float32 distance, ``E = γ_{d+4}·(‖q‖max + ‖a‖)²`` its rounding (either
evaluation order), ``a`` the float32 query and ``‖x_j − s·q_j‖ ≤ s·√d·(½ + 2⁻¹⁵)``. Every row
whose lower bound is within the reference's near-tie margin of the best upper bound is a
candidate; the rows FAISS did not return are all farther than the ``K``-th, so once that one's
lower bound clears the threshold the candidate set is proven complete (else ``K`` grows, and
at last the caller falls back to a float32 pass). Cost: building the copy is one fused
quantization pass (``torch.quantize_per_tensor``, guarded: a numpy fallback) and a copy; a
pick reads ``N·d`` bytes once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from .readers import BLOCK_ELEMENTS
from .scores import U32, gamma

__all__ = ["SQ8Search", "SEARCH_SIZES"]

#: how many nearest rows each search returns, tried in turn until the candidates are proven.
SEARCH_SIZES = (16, 128, 1024)
_RES = 0.5 + 2.0**-15  # |x/s − q| per element: rounding to nearest plus float32 division
_TINY_SCALE = 2.0**-100


def _bf16_up(value: float) -> float:
    """The smallest bfloat16 ``>= value`` (positive, finite): an 8-bit mantissa."""
    bits = int(np.float32(value).view(np.uint32))
    if np.float32(value) < value:
        bits += 1  # value rounded down to float32: the next float32 is above it
    if bits & 0xFFFF:
        bits = (bits | 0xFFFF) + 1
    return float(np.uint32(bits).view(np.float32))


def _quantize_codes(xt: torch.Tensor, s: float, dp: int) -> np.ndarray:
    """FAISS direct-signed codes ``round(x/s) + 128`` (uint8, ``[N, dp]``, pad columns 128)."""
    n, d = xt.shape
    codes = np.full((n, dp), 128, dtype=np.uint8) if dp != d else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors are deprecated, still public
            q = torch.quantize_per_tensor(xt, s, 0, torch.qint8).int_repr().numpy()
        q = q.view(np.uint8)
        np.bitwise_xor(q, np.uint8(0x80), out=q)  # two's complement + 128 = flip the top bit
        if codes is None:
            return q
        codes[:, :d] = q
        return codes
    except (RuntimeError, AttributeError, TypeError, NotImplementedError):
        pass  # a torch without quantized tensors: the same rounding in numpy, blockwise
    codes = np.empty((n, dp), dtype=np.uint8) if codes is None else codes
    x = xt.numpy()
    rows = max(1, BLOCK_ELEMENTS // max(d, 1))
    buf = np.empty((rows, d), dtype=np.float32)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        blk = buf[: b - a]
        np.multiply(x[a:b], np.float32(1 / s), out=blk)
        np.rint(blk, out=blk)
        blk += 128
        codes[a:b, :d] = blk
    return codes


class SQ8Search:
    """The ``K`` rows nearest ``t`` from an int8 copy, and the proof that no other row competes.

    Args:
        xt: the float32 features as a torch tensor (C-contiguous).
        xmax: an upper bound on every ``‖x_j‖``.

    Raises:
        ImportError: FAISS is not installed.
        RuntimeError: FAISS's distances break the bound on a probe (another FAISS build).
    """

    def __init__(self, xt: torch.Tensor, xmax: float) -> None:
        import faiss

        n, d = (int(v) for v in xt.shape)
        self.n, self.d = n, d
        self.dp = dp = -(-d // 16) * 16  # FAISS's SIMD distance code wants d % 16 == 0
        lo, hi = torch.aminmax(xt)
        m = max(-float(lo), float(hi))
        self.s = s = _bf16_up(m / 126.5) if m / 126.5 > _TINY_SCALE else 1.0
        self.gamma = 1.01 * gamma(dp + 4)
        self._check()
        codes = _quantize_codes(xt, s, dp)
        self.index = faiss.IndexScalarQuantizer(
            dp, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_L2
        )
        self.index.add_sa_codes(codes)
        self.res = s * d**0.5 * _RES + 1e-14 * xmax  # ‖x_j − s·q_j‖, t's float64 rounding
        self.qmax = xmax / s + d**0.5 * _RES  # ≥ every ‖q_j‖
        # Bit j set = row j unpicked (little-endian bit order, as FAISS reads it); the
        # selector reads the array in place.
        self.allowed = np.packbits(np.ones(n, dtype=bool), bitorder="little")
        self.remaining = n
        self._selector = faiss.IDSelectorBitmap(self.allowed.size, faiss.swig_ptr(self.allowed))
        self._params = faiss.SearchParameters(sel=self._selector)
        self.query = np.zeros((1, dp), dtype=np.float32)

    def _check(self) -> None:
        """Refuse a FAISS build whose distances break the bound: a probe index of the same
        width, with codes over the whole int8 range, against float64 distances.

        (FAISS 1.15.1's direct 8-bit codecs are off by ~0.4% at d >= 64 on AVX-512 — a
        wrong result, not rounding — and are refused here.)
        """
        import faiss

        rng = np.random.default_rng(0)
        q = rng.integers(-127, 128, size=(512, self.dp)).astype(np.float32)
        probe = faiss.IndexScalarQuantizer(
            self.dp, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_L2
        )
        probe.add_sa_codes(q.astype(np.int16).astype(np.uint8) ^ np.uint8(0x80))
        for scale in (1.0, 60.0):
            a = (rng.standard_normal((1, self.dp)) * scale).astype(np.float32)
            dist, rows = probe.search(a, 64)
            diff = q.astype(np.float64) - a.astype(np.float64)
            exact = np.einsum("ij,ij->i", diff, diff)
            qmax = float(np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64).max()))
            e = self.gamma * (qmax + float(np.linalg.norm(a))) ** 2 + 1e-30
            if np.any(rows[0] < 0) or not np.all(np.abs(dist[0] - exact[rows[0]]) <= e):
                raise RuntimeError("FAISS SQ8 distances outside their error bound")
            if exact[rows[0]].max() > np.sort(exact)[63] + 2 * e:
                raise RuntimeError("FAISS SQ8 search missed a nearer row")

    def take(self, j: int) -> None:
        """Exclude row ``j`` from every later search."""
        self.allowed[j >> 3] &= np.uint8(~(1 << (j & 7)) & 0xFF)
        self.remaining -= 1

    def candidates(
        self, t: np.ndarray, tn: float, margin_of: Callable[[float], float]
    ) -> tuple[np.ndarray, float] | None:
        """Unpicked rows that may be the reference's pick, ascending, and the margin used.

        ``t`` is the target in the frame of ``x`` (float64), ``tn = ‖t − center‖`` the norm of
        the centred frame's target (scores ``σ'_j = ‖x_j − t‖² − tn²``) and ``margin_of`` the
        near-tie margin for an upper bound on the smallest score. ``None`` when even the
        largest search could not prove the set complete.
        """
        s, d = self.s, self.d
        ts = t / s
        self.query[0, :d] = ts
        a = self.query[0, :d].astype(np.float64)
        an = float(a @ a) ** 0.5
        a -= ts
        ea = float(a @ a) ** 0.5 * (1 + 1e-12) + 1e-300  # the float32 query's rounding
        e = self.gamma * (self.qmax + an) ** 2 + self.dp * 2.0**-126
        for size in SEARCH_SIZES:
            size = min(size, self.remaining)
            dist = np.empty((1, size), dtype=np.float32)
            label = np.empty((1, size), dtype=np.int64)
            self.index.search(self.query, size, params=self._params, D=dist, I=label)
            rows = label[0]
            dv = dist[0].astype(np.float64)
            lo = s * (np.sqrt(np.maximum(dv - e, 0.0)) - ea) - self.res
            np.maximum(lo, 0.0, out=lo)
            hi0 = s * ((dv[0] + e) ** 0.5 + ea) + self.res
            margin = margin_of(hi0 * hi0 - tn * tn)
            thr = hi0 * hi0 + margin
            thr += 4 * U32 * thr  # (lo² computed in float64: a little slack)
            if size >= self.remaining or lo[-1] * lo[-1] > thr:
                keep = lo * lo <= thr
                return np.sort(rows[keep & (rows >= 0)]), margin
        return None

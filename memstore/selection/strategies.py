"""Exemplar selection strategies (Avalanche names) and the exact selection algorithms.

Herding and closest-to-center reproduce Avalanche 0.6.0's picks bit for bit on float32
features (see docs/SEMANTICS.md) at a fraction of its cost:

* herding scores every row once per pick — from an int8 copy of the centred features
  (torch's weight-only int8 kernel, a quarter of the bytes) or one float32 sgemv for small
  inputs — with a rigorous per-row error bound, re-scores the few rows that could be best in
  float64, and settles near-ties with the reference's own float32 expression (O(k·N·d), never
  an ``N×d`` temporary, stops after ``k`` picks);
* closest-to-center computes the reference distances once and keeps the ``k`` smallest by
  partial selection, ties broken by lower index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from memstore._validation import check_bool, check_features, check_int

__all__ = [
    "ExemplarsSelectionStrategy",
    "RandomExemplarsSelectionStrategy",
    "FeatureBasedExemplarsSelectionStrategy",
    "HerdingSelectionStrategy",
    "ClosestToCenterSelectionStrategy",
    "herding_order",
    "closest_to_center_order",
    "smallest_k_stable",
    "DetachedSelectionStrategy",
    "strategy_record",
    "strategy_from_record",
]

_EPS32 = float(np.finfo(np.float32).eps)


class ExemplarsSelectionStrategy(ABC):
    """Orders the rows of a group; a buffer keeps the first ``k``."""

    #: whether ``select`` needs the rows' features (then the buffer computes them once).
    needs_features: bool = False

    @abstractmethod
    def select(
        self, n: int, *, features: np.ndarray | None, generator: torch.Generator, k: int
    ) -> np.ndarray:
        """The first ``k`` row positions (int64) of the strategy's order over ``n`` rows."""

    def params(self) -> dict[str, Any]:
        """JSON-able constructor parameters, recorded by the store (models never are)."""
        return {}


class RandomExemplarsSelectionStrategy(ExemplarsSelectionStrategy):
    """A uniformly random order, drawn from the buffer's generator (``torch.randperm``)."""

    def select(self, n, *, features=None, generator, k):
        return torch.randperm(n, generator=generator).numpy().astype(np.int64)[:k]


class FeatureBasedExemplarsSelectionStrategy(ExemplarsSelectionStrategy):
    """Base of strategies that order rows by the features of ``model`` at ``layer_name``.

    Args:
        model: a ``torch.nn.Module``; never stored, re-attach it after loading a buffer.
        layer_name: name of the submodule (``model.named_modules()``) whose output is used.
        batch_size: rows per forward pass during extraction.
        device: where extraction runs.
        input_key: for dataset items that are dicts, the key of the model input.
        approximate: use an approximate FAISS index (large groups); exact by default.
    """

    needs_features = True

    def __init__(
        self,
        model: torch.nn.Module,
        layer_name: str,
        *,
        batch_size: int = 256,
        device: str = "cpu",
        input_key: str | None = None,
        approximate: bool = False,
        nlist: int | None = None,
        nprobe: int | None = None,
        feature_cache: Any = None,
        progress: bool = False,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"The 'model' parameter of {owner} must be a torch.nn.Module. "
                f"Got {type(model).__name__} instead."
            )
        if not isinstance(layer_name, str):
            raise TypeError(
                f"The 'layer_name' parameter of {owner} must be a str. Got {layer_name!r} instead."
            )
        from memstore.features.extract import find_layer

        find_layer(model, layer_name)  # unknown name -> error listing the valid ones
        self.model = model
        self.layer_name = layer_name
        self.batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        self.device = str(device)
        self.input_key = input_key
        self.approximate = check_bool(approximate, "approximate", owner)
        self.nlist = check_int(nlist, "nlist", owner, minimum=1, allow_none=True)
        self.nprobe = check_int(nprobe, "nprobe", owner, minimum=1, allow_none=True)
        if feature_cache is not None and not hasattr(feature_cache, "open_feature_cache"):
            raise TypeError(
                f"The 'feature_cache' parameter of {owner} must be a memstore Store. "
                f"Got {type(feature_cache).__name__} instead."
            )
        self.feature_cache = feature_cache
        self.progress = check_bool(progress, "progress", owner)

    def params(self) -> dict[str, Any]:
        return {
            "layer_name": self.layer_name,
            "batch_size": self.batch_size,
            "device": self.device,
            "input_key": self.input_key,
            "approximate": self.approximate,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
        }

    def compute_features(self, dataset: Any, keys: np.ndarray) -> np.ndarray:
        """Features of ``dataset[keys]``, through the store's cache when one was given."""
        from memstore.features.extract import cached_features, extract_features

        options = dict(
            batch_size=self.batch_size,
            device=self.device,
            input_key=self.input_key,
            progress=self.progress,
        )
        if self.feature_cache is not None:
            return cached_features(
                self.model, self.layer_name, dataset, keys, self.feature_cache, **options
            )
        return extract_features(self.model, self.layer_name, dataset, keys, **options)

    def select(self, n, *, features, generator=None, k):
        if features is None or features.shape[0] != n:
            raise ValueError(f"{type(self).__name__} needs one feature row per candidate ({n}).")
        return self.make_sorted_indices_from_features(features, k=k)

    def make_sorted_indices_from_features(self, features: Any, k: int | None = None) -> np.ndarray:
        """The order of the rows of ``features`` [N, d] (its first ``k`` entries if given).

        In approximate mode ``features`` may also be a chunked reader (e.g. a zarr array of
        the feature cache): it is read chunk by chunk, never loaded whole.
        """
        owner = type(self).__name__
        if self.approximate and _is_reader(features):
            n = int(features.shape[0])
            k = n if k is None else check_int(k, "k", owner, minimum=0)
            if k > n:
                raise ValueError(
                    f"The 'k' parameter of {owner} must be at most the number of rows ({n}). "
                    f"Got {k} instead."
                )
            return self._approximate_order(features, k)
        feats = check_features(features, owner, k=k)
        k = feats.shape[0] if k is None else int(k)
        if self.approximate:
            return self._approximate_order(feats, k)
        return self._exact_order(feats, k)

    @abstractmethod
    def _exact_order(self, features: np.ndarray, k: int) -> np.ndarray: ...

    @abstractmethod
    def _approximate_order(self, features: Any, k: int) -> np.ndarray: ...


def _is_reader(features: Any) -> bool:
    """A chunked array (zarr, h5py...): has ``shape`` and slicing but is not in memory."""
    return (
        not isinstance(features, (np.ndarray, torch.Tensor, list, tuple))
        and hasattr(features, "shape")
        and hasattr(features, "__getitem__")
    )


class HerdingSelectionStrategy(FeatureBasedExemplarsSelectionStrategy):
    """Herding (Welling 2009; iCaRL): greedily keep the running mean close to the group mean.

    Exact mode reproduces Avalanche's order in O(k·N·d); ``approximate=True`` searches an IVF
    index (FAISS) for groups of hundreds of thousands to millions of rows.
    """

    def _exact_order(self, features, k):
        return herding_order(features, k)

    def _approximate_order(self, features, k):
        from .faiss_ivf import approximate_herding_order

        return approximate_herding_order(features, k, nlist=self.nlist, nprobe=self.nprobe)


class ClosestToCenterSelectionStrategy(FeatureBasedExemplarsSelectionStrategy):
    """Rows ordered by squared distance to the group mean, ascending (ties: lower index).

    ``approximate=True`` reads chunked features in two passes (mean, then distances); the
    result is exact — an index would cost more than the one pass the answer needs.
    """

    def _exact_order(self, features, k):
        return closest_to_center_order(features, k)

    def _approximate_order(self, features, k):
        from .faiss_ivf import chunked_closest_order

        return chunked_closest_order(features, k)


def smallest_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest values in ascending order, ties by lower position.

    Partial selection (``np.partition``, O(N)) finds the k-th value; only the values up to it
    are sorted (stable), so the cost is O(N + k·log k) rather than a full sort.
    """
    n = values.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        kth = np.partition(values, k - 1)[k - 1]
        cand = np.flatnonzero(values <= kth)
    else:
        cand = np.arange(n)
    return cand[np.argsort(values[cand], kind="stable")][:k].astype(np.int64)


# -- exact herding / closest-to-center ---------------------------------------------------------
_U32 = 2.0**-24  # unit roundoff of float32
_UBF16 = 2.0**-8  # unit roundoff of bfloat16
_BLOCK_ELEMENTS = 1 << 18  # elements of a per-block temporary (1 MiB of float32: stays in L2)
_INT8_MIN_ELEMENTS = 1 << 21  # below ~8 MiB of features a float32 pass is cache-resident
_INT8_MIN_K = 64  # building the int8 copy costs ~25 float32 passes; worth it from here
_MAX_D = 100_000  # the rounding argument of herding_order needs (d + 4)·u32 << 1
_MAX_NORM = 1e18  # beyond, the reference's float32 distances may overflow


def _gamma(n: int, unit: float = _U32) -> float:
    """Higham's γ_n: relative error bound of an n-term floating-point dot product or sum."""
    return n * unit / (1.0 - n * unit)


def _row_blocks(n: int, d: int) -> list[tuple[int, int]]:
    """Row ranges of about ``_BLOCK_ELEMENTS`` elements, none of a single row (unless n == 1).

    A one-row tensor may be summed by torch's parallel two-pass reduction, whose rounding
    differs from the per-row reduction the reference's ``[N, d]`` sum uses.
    """
    step = max(2, _BLOCK_ELEMENTS // max(d, 1))
    bounds = [*range(0, n, step), n]
    if n > 1 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def closest_to_center_order(features: np.ndarray, k: int) -> np.ndarray:
    """The reference's float32 distances ``pow(x − mean, 2).sum(dim=1)``, then a stable top-k.

    Same torch expression as Avalanche, so every distance is bit-identical, but evaluated one
    cache-sized block of rows at a time (the reference materialises two ``N×d`` temporaries).
    Cost: O(N·d) and O(N + k·log k) for the selection.
    """
    x = torch.from_numpy(features)
    n, d = x.shape
    center = x.mean(dim=0)
    distances = torch.empty(n, dtype=torch.float32)
    buf = torch.empty(0, dtype=torch.float32)
    for a, b in _row_blocks(n, d):
        buf.resize_(b - a, d)
        torch.sub(x[a:b], center, out=buf)
        buf.pow_(2)
        torch.sum(buf, dim=1, out=distances[a:b])
    return smallest_k_stable(distances.numpy(), k)


class _Float32Scores:
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
        for a, b in _row_blocks(n, d):
            y = x32[a:b] - c32
            self.sq[a:b] = np.einsum("ij,ij->i", y, y)
        self.ymax = float(self.sq.max() * (1 + _gamma(d + 2))) ** 0.5 * (1 + _U32)
        self.centred = self.cn > 2 * self.ymax
        self.rows = x32 - c32 if self.centred else x32
        self.rmax = self.ymax * (1 + 2 * _U32) if self.centred else xmax

    def scores(self, tp: np.ndarray, tn: float) -> tuple[np.ndarray, float]:
        """``est`` (float32, fresh) and ``shift``: ``|est_j + shift − σ'_j| ≤ self.err(j)``."""
        t32, tn32, ta = _float32_query(tp)
        est = self.rows @ t32  # ≈ −2⟨row, t'⟩
        est += self.sq
        self._err = _float32_error(self.d, self.ymax, self.rmax, self.cn, tn32, ta, tn)
        return est, 0.0 if self.centred else 2.0 * float(self.c64 @ tp)

    def err(self, rows: Any = None) -> Any:
        """The error bound of the last ``scores`` (the same for every row)."""
        return self._err


def _float32_query(tp: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``−2t'`` in float32, ``‖t'‖`` as rounded and the rounding error ``‖t'_32 − t'‖``."""
    t32 = (-2.0 * tp).astype(np.float32)
    t64 = t32.astype(np.float64)
    tn32 = 0.5 * float(t64 @ t64) ** 0.5
    t64 += 2.0 * tp
    return t32, tn32, 0.5 * float(t64 @ t64) ** 0.5


def _float32_error(
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


class _Int8Scores:
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
        rows = max(16, _BLOCK_ELEMENTS // (2 * d))  # cache-resident blocks
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
        out = torch._weight_int8pack_mm(self.a, self.q[: len(q)], self.scales2[: len(q)])
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
        out = torch._weight_int8pack_mm(self.a, self.q, self.scales2)
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


def _make_scores(
    x32: np.ndarray, c32: np.ndarray, xmax: float, k: int
) -> _Float32Scores | _Int8Scores:
    """The first-pass scorer: int8 for large inputs when torch's kernel is usable, else float32."""
    n, d = x32.shape
    dpad = -(-d // 64) * 64
    if (
        n * d >= _INT8_MIN_ELEMENTS
        and k >= _INT8_MIN_K
        and n * dpad < 2**31  # the kernel indexes with 32-bit ints
        and hasattr(torch, "_weight_int8pack_mm")
    ):
        try:
            return _Int8Scores(x32, c32, xmax)
        except (RuntimeError, TypeError, NotImplementedError):
            pass  # no usable kernel in this torch build: the float32 pass is exact too
    return _Float32Scores(x32, c32, xmax)


def herding_order(features: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` herding picks, identical to Avalanche's float32 loop.

    Pick ``i`` minimises the reference's distance ``D_j = ‖(i·cur + x_j)/(i+1) − center‖²``,
    with ``cur`` and ``center`` the reference's own float32 vectors. In exact arithmetic
    ``(i+1)²·D_j = ‖y_j − t'‖²`` with ``y = x − center`` and ``t' = i·(center − cur)``, so:

    1. one pass estimates ``σ'_j = ‖y_j‖² − 2⟨y_j, t'⟩`` for every row with a rigorous error
       bound — an int8 copy of ``y`` (a quarter of the bytes) for large inputs, else one
       float32 sgemv; never an ``N×d`` temporary;
    2. rows whose estimate is within twice that bound plus the reference's float32 rounding
       margin of the best are re-scored exactly (float64);
    3. if several stay within the rounding margin (near-ties, duplicates), the reference's
       own float32 expression decides among them (first index on ties), so the pick is the
       reference's; ``cur`` is updated with the reference's float32 arithmetic.

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
        scores = _make_scores(x32, c32, xmax, k)
    gref = _gamma(d + 4)
    eta_unit = 4.04 * (d + 10) * 2.0**-53  # float64 re-scoring error, relative
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
                # The reference's float32 D̃_j: every element of its (cur·i/(i+1) + x/(i+1))
                # − center is off by at most δ, squaring and summing add γ relatively, so
                # |D̃_j − D_j| ≤ ρ(D_j) = δ(2√D_j + δ) + γ(√D_j + δ)². Its pick has
                # D ≤ D_min + ρ(D) + ρ(D_min), impossible above d_cap (there ρ(D) < 0.3·D):
                # every row within (i+1)²·2ρ(d_cap) of the best (+ float64 slack) is kept.
                n1 = float((i + 1) ** 2)
                delta = 5 * _U32 * (float(cur64 @ cur64) ** 0.5 + xmax / (i + 1) + cn) + 1e-30
                d_ub = max(best + shift + tn * tn, 0.0) / n1  # ≥ the smallest D_j
                d_cap = max(4 * d_ub, 64 * delta * delta) + 1e-30
                rd = d_cap**0.5
                rho = delta * (2 * rd + delta) + gref * (rd + delta) ** 2 + 1e-36 * d
                eta = eta_unit * (xmax + cn + tn) ** 2
                margin = n1 * 2 * rho + 2 * eta
                # Candidates: est_j − err_j ≤ best + margin (a cheap superset first).
                thr = best + margin
                pre = thr + scores.err()
                pre += 4 * _U32 * abs(pre) + 1e-37  # est is float32: compare at >= pre
                cand = np.flatnonzero(est <= pre)
                if isinstance(scores, _Int8Scores):
                    cand = cand[est[cand].astype(np.float64) - scores.err(cand) <= thr]
                if len(cand) > limit and isinstance(scores, _Int8Scores):
                    scores = _Float32Scores(x32, c32, xmax)  # int8 bound too loose here
                    continue
                if len(cand) > 8 and isinstance(scores, _Int8Scores):
                    # Narrow with exact-to-1e-6 float32 scores of the candidates first.
                    t32, tn32, ta = _float32_query(tp)
                    sub = x32[cand] @ t32
                    sub += scores.sq[cand]
                    err = _float32_error(d, scores.ymax, xmax, cn, tn32, ta, tn)
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
        if len(cand) > 1:
            cand_t = torch.from_numpy(cand)
            candidate_centers = torch.from_numpy(cur32) * i / (i + 1) + xt[cand_t] / (i + 1)
            distances = pow(candidate_centers - center_t, 2).sum(dim=1)
            p = int(cand[int(torch.argmin(distances))])
        else:
            p = int(cand[0])
        picks[i] = p
        taken[p] = True
        # The reference's running center, elementwise float32 (bit-identical to torch's).
        cur32 *= np.float32(i)
        cur32 /= np.float32(i + 1)
        cur32 += x32[p] / np.float32(i + 1)
        i += 1
    return picks


class DetachedSelectionStrategy(ExemplarsSelectionStrategy):
    """Stands in for a feature-based strategy loaded without its model.

    The buffer loads and can be inspected and replayed; updating or resizing it raises an
    error telling how to re-attach the model.
    """

    needs_features = True

    def __init__(self, class_name: str, params: dict[str, Any]) -> None:
        self.class_name = class_name
        self._params = dict(params)

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        from memstore.errors import DetachedStrategyError

        layer = self._params.get("layer_name", "<layer>")
        raise DetachedStrategyError(
            f"This ParametricBuffer was saved with {self.class_name}, whose model is never "
            "stored, so it cannot select exemplars. Re-attach one: store.load(name, "
            f"selection_strategy={self.class_name}(model, {layer!r}))."
        )

    select = compute_features = _refuse


_STRATEGIES = {
    cls.__name__: cls
    for cls in (
        RandomExemplarsSelectionStrategy,
        HerdingSelectionStrategy,
        ClosestToCenterSelectionStrategy,
    )
}


def strategy_record(strategy: ExemplarsSelectionStrategy) -> dict[str, Any]:
    """How a strategy is recorded in a state: its class name and parameters (no model)."""
    name = (
        strategy.class_name
        if isinstance(strategy, DetachedSelectionStrategy)
        else type(strategy).__name__
    )
    return {"class": name, "params": strategy.params()}


def strategy_from_record(record: Any) -> ExemplarsSelectionStrategy:
    """Rebuild a strategy from :func:`strategy_record`; feature-based ones come back detached."""
    if not isinstance(record, dict) or "class" not in record:
        raise ValueError(f"Corrupted selection strategy record: {record!r}.")
    cls = _STRATEGIES.get(record["class"])
    if cls is RandomExemplarsSelectionStrategy:
        return cls()
    return DetachedSelectionStrategy(str(record["class"]), record.get("params") or {})

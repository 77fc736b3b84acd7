"""Closest-to-center order: rows by squared distance to the group mean, ties by lower index.

Two exact paths: :func:`closest_to_center_order` for an in-memory array (the reference's own
float32 expression, bit for bit) and :func:`chunked_closest_order` for a chunked reader (two
passes, bounded memory).
"""

from __future__ import annotations

import numpy as np
import torch

from .center import reader_mean, torch_mean
from .readers import (
    DEFAULT_CHUNK_ROWS,
    FeatureReader,
    check_chunk_rows,
    check_k,
    check_reader,
    iter_blocks,
    row_blocks,
)
from .rounding import gamma

__all__ = [
    "closest_to_center_order",
    "chunked_closest_order",
    "smallest_k_stable",
    "reference_distances",
    "bounded_distances",
]


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


def closest_to_center_order(features: np.ndarray, k: int) -> np.ndarray:
    """The reference's order — float32 ``pow(x − mean, 2).sum(dim=1)``, stable — first ``k``.

    The center is torch's float32 mean (the reference's, last bit included). Every row's
    distance is then bounded by one fused pass (:func:`bounded_distances`: a numba kernel,
    else FAISS's SIMD ``fvec_L2sqr_ny``, else numpy blocks) whose result is within
    ``γ_{d+2}`` relative of the exact ``Σ (x − c)²`` — and so is the reference's float32
    value. Rows that provably rank after ``k`` others are dropped; the few left (the top
    ``k`` and those near the ``k``-th distance) get the reference's own torch expression and
    a stable sort, so the order is the reference's bit for bit, near-ties and duplicates
    included.
    Cost: the mean and one distance pass over the features, O(N) for the threshold and
    O(|candidates|·d) for the re-scoring (the reference allocates two ``N×d`` temporaries).
    """
    x = torch.from_numpy(features)
    n, d = x.shape
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    center = torch.from_numpy(torch_mean(features))
    if features.dtype != np.float32 or k >= n:
        return smallest_k_stable(reference_distances(x, center), k)
    approx = bounded_distances(features, center.numpy())
    if approx is None:
        return smallest_k_stable(reference_distances(x, center), k)
    cand = _candidates(approx, k, d)
    exact = reference_distances(x[torch.from_numpy(cand)], center)
    if not _consistent(approx[cand], exact, d):  # a distance kernel outside its bound
        return smallest_k_stable(reference_distances(x, center), k)
    return cand[np.argsort(exact, kind="stable")[:k]].astype(np.int64)


def reference_distances(x: torch.Tensor, center: torch.Tensor) -> np.ndarray:
    """The reference's float32 ``pow(x − center, 2).sum(dim=1)``, bit for bit, one
    cache-sized block of rows at a time (no ``N×d`` temporary)."""
    n, d = x.shape
    distances = torch.empty(n, dtype=torch.float32)
    buf = torch.empty(0, dtype=torch.float32)
    for a, b in row_blocks(n, d):
        buf.resize_(b - a, d)
        torch.sub(x[a:b], center, out=buf)
        buf.pow_(2)
        torch.sum(buf, dim=1, out=distances[a:b])
    return distances.numpy()


def bounded_distances(features: np.ndarray, center: np.ndarray) -> np.ndarray | None:
    """``‖x_j − center‖²`` in float32 by one fused pass, within ``γ_{d+2}`` relative (+ a
    subnormal slack) of the exact value, whatever the summation order; ``None`` for a
    non-finite result (the caller takes the reference's pass). memstore's numba kernel
    (``_center_kernels.squared_distances``: eight rows at a time, ~0.85× FAISS's time from
    memory on a Xeon), else FAISS's SIMD ``fvec_L2sqr_ny``, else numpy blocks."""
    n, d = features.shape
    out = np.empty(n, dtype=np.float32)
    c = np.ascontiguousarray(center, dtype=np.float32)
    kernel = faiss = None
    if features.dtype == np.float32 and features.flags.c_contiguous:
        try:
            from ._center_kernels import squared_distances as kernel
        except ImportError:  # no numba
            try:
                import faiss
            except ImportError:
                pass
    if kernel is not None:
        kernel(features, c, out)
    elif faiss is not None:
        faiss.fvec_L2sqr_ny(faiss.swig_ptr(out), faiss.swig_ptr(c), faiss.swig_ptr(features), d, n)
    else:
        for a, b in row_blocks(n, d):
            y = features[a:b] - c
            np.einsum("ij,ij->i", y, y, out=out[a:b])
    return out if np.isfinite(out).all() else None


def _bound(d: int) -> tuple[float, float]:
    """Relative and absolute error of a float32 ``Σ (x − c)²`` against the exact value."""
    return gamma(d + 2) * 1.01, 4.0 * d * 2.0**-126


def _candidates(approx: np.ndarray, k: int, d: int) -> np.ndarray:
    """Rows that may be among the reference's first ``k`` (ascending row order).

    ``k`` rows have ``approx <= T`` (the ``k``-th value), so exact distances ``<= (T+η)/(1−γ)``
    and reference values ``<= R``; a row whose ``approx`` exceeds the returned threshold has a
    reference value above ``R``, i.e. ranks after those ``k``.
    """
    g, eta = _bound(d)
    kth = float(np.partition(approx, k - 1)[k - 1])
    ref_hi = (1 + g) * (kth + eta) / (1 - g) + eta
    thr = ((ref_hi + eta) * (1 + g) / (1 - g) + eta) * (1 + 1e-12)
    return np.flatnonzero(approx <= thr)


def _consistent(approx: np.ndarray, exact: np.ndarray, d: int) -> bool:
    """Both values within their bounds of one exact distance (else a kernel is wrong here)."""
    g, eta = _bound(d)
    a, e = approx.astype(np.float64), exact.astype(np.float64)
    return bool(np.all(np.abs(a - e) <= 2 * g / (1 - g) * np.maximum(a, e) + 2 * eta))


def chunked_closest_order(
    features: np.ndarray | FeatureReader,
    k: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """The ``k`` rows nearest the mean, ascending squared distance, ties by lower index.

    Exact, by two chunked passes (torch's float32 mean, streamed by :func:`.reader_mean`,
    then the reference's float32 distances, merged into a running top-``k``): a single
    query's k-NN needs one pass over the data with any index, and training or filling a
    FAISS index costs more than that pass. The same order as :func:`closest_to_center_order`
    on the same float32 rows — except where the mean kernel cannot run here (no numba), as
    then the mean is a float64 sum rounded to float32 and near-ties may reorder.
    Cost O(N·d) time, O((k + chunk_rows)·d) memory.
    """
    owner = "chunked_closest_order"
    reader = check_reader(features, owner)
    n, _ = (int(s) for s in reader.shape)
    k = check_k(k, n, owner)
    chunk_rows = check_chunk_rows(chunk_rows, owner)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    center = torch.from_numpy(reader_mean(reader, chunk_rows, owner))
    best_d = np.empty(0, dtype=np.float32)
    best_i = np.empty(0, dtype=np.int64)
    for start, block in iter_blocks(reader, chunk_rows, owner):
        dist = reference_distances(torch.from_numpy(block), center)
        vals = np.concatenate([best_d, dist])
        rows = np.concatenate([best_i, np.arange(start, start + block.shape[0])])
        if vals.size > k:
            keep = np.flatnonzero(vals <= np.partition(vals, k - 1)[k - 1])
            vals, rows = vals[keep], rows[keep]
        order = np.lexsort((rows, vals))[:k]
        best_d, best_i = vals[order], rows[order]
    return best_i.astype(np.int64)

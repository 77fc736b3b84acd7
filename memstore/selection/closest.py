"""Closest-to-center order: rows by squared distance to the group mean, ties by lower index.

Two exact paths: :func:`closest_to_center_order` for an in-memory array (the reference's own
float32 expression, bit for bit) and :func:`chunked_closest_order` for a chunked reader (two
passes, bounded memory).
"""

from __future__ import annotations

import numpy as np
import torch

from .readers import (
    DEFAULT_CHUNK_ROWS,
    FeatureReader,
    center64,
    check_chunk_rows,
    check_k,
    check_reader,
    iter_blocks,
    row_blocks,
)

__all__ = ["closest_to_center_order", "chunked_closest_order", "smallest_k_stable"]


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
    for a, b in row_blocks(n, d):
        buf.resize_(b - a, d)
        torch.sub(x[a:b], center, out=buf)
        buf.pow_(2)
        torch.sum(buf, dim=1, out=distances[a:b])
    return smallest_k_stable(distances.numpy(), k)


def chunked_closest_order(
    features: np.ndarray | FeatureReader,
    k: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """The ``k`` rows nearest the mean, ascending squared distance, ties by lower index.

    Exact, by two chunked passes (the mean, then float32 distances ``Σ (x − c)²`` as the
    exact strategy computes them, merged into a running top-``k``): a single query's
    k-NN needs one pass over the data with any index, and training or filling a FAISS
    index costs more than that pass. Differs from :func:`closest_to_center_order` only
    where the float32 rounding of the mean (float64 sum here, torch's float32 mean there)
    reorders near-ties. Cost O(N·d) time, O((k + chunk_rows)·d) memory.
    """
    owner = "chunked_closest_order"
    reader = check_reader(features, owner)
    n, _ = (int(s) for s in reader.shape)
    k = check_k(k, n, owner)
    chunk_rows = check_chunk_rows(chunk_rows, owner)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    center = torch.from_numpy(center64(reader, chunk_rows, owner).astype(np.float32))
    best_d = np.empty(0, dtype=np.float32)
    best_i = np.empty(0, dtype=np.int64)
    for start, block in iter_blocks(reader, chunk_rows, owner):
        dist = torch.pow(torch.from_numpy(block) - center, 2).sum(dim=1).numpy()
        vals = np.concatenate([best_d, dist])
        rows = np.concatenate([best_i, np.arange(start, start + block.shape[0])])
        if vals.size > k:
            keep = np.flatnonzero(vals <= np.partition(vals, k - 1)[k - 1])
            vals, rows = vals[keep], rows[keep]
        order = np.lexsort((rows, vals))[:k]
        best_d, best_i = vals[order], rows[order]
    return best_i.astype(np.int64)

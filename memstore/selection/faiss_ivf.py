"""Feature-based selection for groups of 10^5 to 10^7 rows, reading features chunk by chunk.

Every function here takes the features either as an in-memory array or as a *chunked
reader*: any object with ``shape == (N, d)`` whose ``reader[a:b]`` returns the rows ``a:b``
as a float16/float32 numpy array (a zarr array of the feature cache, an ``np.memmap``).
Rows are read ``chunk_rows`` at a time, so RAM holds one block, a few length-``N``
vectors and — for the approximate mode — the FAISS index, never a second ``N×d`` copy.
Blocks are always cut at multiples of ``chunk_rows`` from row 0, so an in-memory array and
a chunked reader holding the same values give the same result.

* :func:`approximate_herding_order` — herding's greedy rule answered by an IVF index:
  ``argmin_j ‖x_j‖² − 2⟨x_j, t⟩ = argmin_j ‖x_j − t‖²`` (the ``‖t‖²`` term is common to all
  rows), so each pick is a 1-nearest-neighbour query for ``t = (i+1)·center − Σ picked``
  among the unpicked rows, excluded by an ``IDSelectorBitmap``. IVF stores the raw
  vectors, so the only approximation is which lists are scanned.
* :func:`chunked_closest_order` — the ``k`` rows nearest the mean. One query's k-NN
  needs one pass over the data whatever the index, and building any FAISS index costs more
  than that pass, so it is computed *exactly* by a chunked scan.
* :func:`exact_herding_chunked` — :func:`memstore.selection.herding_order` with bounded
  temporaries: one chunked pass per pick, O(k·N·d).
* :func:`herding_objective` — ``‖mean(picked) − mean(all)‖``, what herding minimises.

Threads: FAISS runs on OpenMP. On shared or 2-core machines start the process with
``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP workers then sleep instead of spinning against
numpy/torch threads) and pick ``OMP_NUM_THREADS``. This module sets neither: both must be
in the environment before the OpenMP runtime starts. ``faiss`` is imported lazily, inside
the functions that use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from memstore._validation import as_int_array, check_int

__all__ = [
    "FeatureReader",
    "approximate_herding_order",
    "chunked_closest_order",
    "exact_herding_chunked",
    "herding_objective",
    "herding_errors",
    "default_nlist",
    "default_nprobe",
    "DEFAULT_CHUNK_ROWS",
    "EXACT_BELOW",
]

#: rows per block read from a reader; a multiple of the feature cache's 4096-row chunks.
DEFAULT_CHUNK_ROWS = 65536
#: below this many rows :func:`approximate_herding_order` runs exact herding instead.
EXACT_BELOW = 50_000
#: k-means training points per IVF list: FAISS advises 30 to 256; the sample costs a pass
#: and k-means O(32·nlist²·d) — halving 64 saved ~1 s at 1M×128 with no loss in quality.
TRAIN_POINTS_PER_LIST = 32
#: k-means iterations for the IVF centroids (FAISS's IVF default).
TRAIN_ITERATIONS = 10

_EPS32 = float(np.finfo(np.float32).eps)


class FeatureReader(Protocol):
    """A chunked ``[N, d]`` feature matrix: ``shape`` and ``reader[a:b]`` -> numpy rows."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: slice) -> Any: ...


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` rows: ``sqrt(n)`` rounded, within [1, n // 39] (1000 at 1M).

    The build costs O(n·nlist·d) (assigning every row; k-means on ``32·nlist`` rows adds
    O(nlist²·d)), a pick O((nlist + nprobe·n/nlist)·d). Measured at 1M×128, k = 10 000 on
    2 cores: k-means ≈ 1 s, assignment ≈ 3 s, searches ≈ 3 s; 2000 lists doubled the build
    and, at the same ``nprobe``, scanned half the rows for a worse objective.
    """
    return int(max(1, min(round(math.sqrt(n)), n // 39)))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per pick: 8 (≈0.8% of the rows at the default ``nlist``).

    Herding error averaged over picks k/2..k, relative to exact herding (1M×128, k = 10 000):
    nprobe 4 → 1.033, 8 → 1.011, 16 → 1.008; the search time grows about linearly with
    nprobe (≈ 3 s for the 10 000 picks at 8).
    """
    return int(min(8, nlist))


def _check_reader(features: Any, owner: str) -> Any:
    """Return ``features`` as a numpy array or a validated chunked reader."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    if isinstance(features, (list, tuple)):
        features = np.asarray(features)
    shape = getattr(features, "shape", None)
    if shape is None or not hasattr(features, "__getitem__"):
        raise TypeError(
            f"The 'features' parameter of {owner} must be an [N, d] array or a chunked reader "
            f"(shape and slicing). Got {type(features).__name__} instead."
        )
    if len(shape) != 2:
        raise ValueError(
            f"The 'features' parameter of {owner} must be 2-D [N, d]. "
            f"Got shape {tuple(shape)} instead."
        )
    dtype = getattr(features, "dtype", None)
    if dtype is not None:
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = "?"
        if kind not in "fiu":
            raise TypeError(
                f"The 'features' parameter of {owner} must be numeric. Got dtype {dtype} instead."
            )
    return features


def _check_k(k: Any, n: int, owner: str) -> int:
    k = check_int(k, "k", owner, minimum=0)
    if k > n:
        raise ValueError(
            f"The 'k' parameter of {owner} must be at most the number of rows ({n}). "
            f"Got {k} instead."
        )
    return k


def _check_finite(rows: np.ndarray, first_row: np.ndarray | int, owner: str) -> None:
    """Refuse NaN/inf, naming up to five offending row numbers."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)[:5]
        numbers = first_row + bad if isinstance(first_row, int) else first_row[bad]
        raise ValueError(
            f"The 'features' parameter of {owner} must be finite. "
            f"Got NaN/inf in rows {np.asarray(numbers).tolist()} instead."
        )


def _blocks(
    reader: Any, chunk_rows: int, owner: str, *, check: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, rows)``: rows ``start:start+chunk_rows`` as C-contiguous float32.

    A float32 C-contiguous array yields views (no copy). ``check`` refuses NaN/inf.
    """
    n, d = (int(s) for s in reader.shape)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        block = np.ascontiguousarray(np.asarray(reader[start:stop]), dtype=np.float32)
        if block.shape != (stop - start, d):
            raise ValueError(
                f"The 'features' reader of {owner} returned shape {block.shape} for rows "
                f"{start}:{stop}; expected {(stop - start, d)}."
            )
        if check:
            _check_finite(block, start, owner)
        yield start, block


def _read_all(reader: Any, chunk_rows: int, owner: str) -> np.ndarray:
    n, d = (int(s) for s in reader.shape)
    out = np.empty((n, d), dtype=np.float32)
    for start, block in _blocks(reader, chunk_rows, owner):
        out[start : start + block.shape[0]] = block
    return out


def _center64(reader: Any, chunk_rows: int, owner: str) -> np.ndarray:
    """The mean of all rows, summed block by block in float64."""
    n, d = (int(s) for s in reader.shape)
    total = np.zeros(d, dtype=np.float64)
    for _, block in _blocks(reader, chunk_rows, owner):
        total += block.sum(axis=0, dtype=np.float64)
    return total / max(n, 1)


def _check_chunk_rows(chunk_rows: Any, owner: str) -> int:
    return check_int(chunk_rows, "chunk_rows", owner, minimum=1)


def _picked_rows(
    features: Any, picks: Any, chunk_rows: int, owner: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean of all rows, float64 rows[picks] in pick order)`` in one chunked pass."""
    reader = _check_reader(features, owner)
    chunk_rows = _check_chunk_rows(chunk_rows, owner)
    n, d = (int(s) for s in reader.shape)
    picks = as_int_array(picks, "picks", owner)
    if picks.size == 0:
        raise ValueError(f"The 'picks' parameter of {owner} must be non-empty. Got [] instead.")
    if picks.min() < 0 or picks.max() >= n:
        bad = picks[(picks < 0) | (picks >= n)][:5].tolist()
        raise ValueError(
            f"The 'picks' parameter of {owner} must hold row numbers in [0, {n}). "
            f"Got {bad} instead."
        )
    order = np.argsort(picks, kind="stable")
    sorted_picks = picks[order]
    total = np.zeros(d, dtype=np.float64)
    rows = np.empty((picks.size, d), dtype=np.float64)
    for start, block in _blocks(reader, chunk_rows, owner):
        total += block.sum(axis=0, dtype=np.float64)
        lo, hi = np.searchsorted(sorted_picks, [start, start + block.shape[0]])
        rows[order[lo:hi]] = block[sorted_picks[lo:hi] - start]
    return total / n, rows


def herding_objective(
    features: np.ndarray | FeatureReader,
    picks: Any,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """``‖mean(features[picks]) − mean(features)‖`` in float64, what herding drives down.

    One chunked pass; memory O(len(picks)·d).
    """
    center, rows = _picked_rows(features, picks, chunk_rows, "herding_objective")
    return float(np.linalg.norm(rows.mean(axis=0) - center))


def herding_errors(
    features: np.ndarray | FeatureReader,
    picks: Any,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """``‖mean(features[picks[:j]]) − mean(features)‖`` for ``j = 1..len(picks)`` (float64).

    Herding's error oscillates from one pick to the next (±15% between neighbouring ``j``
    on Gaussian mixtures), so two equally good orders compare better by the mean of this
    curve over a window (e.g. the last half) than by its value at one ``k``. One chunked
    pass; memory O(len(picks)·d).
    """
    center, rows = _picked_rows(features, picks, chunk_rows, "herding_errors")
    means = np.cumsum(rows, axis=0) / np.arange(1, rows.shape[0] + 1)[:, None]
    return np.linalg.norm(means - center, axis=1)


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
    index costs more than that pass. Differs from
    :func:`memstore.selection.closest_to_center_order` only where the float32 rounding of
    the mean (float64 sum here, torch's float32 mean there) reorders near-ties. Cost
    O(N·d) time, O((k + chunk_rows)·d) memory.
    """
    owner = "chunked_closest_order"
    reader = _check_reader(features, owner)
    n, _ = (int(s) for s in reader.shape)
    k = _check_k(k, n, owner)
    chunk_rows = _check_chunk_rows(chunk_rows, owner)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    center = torch.from_numpy(_center64(reader, chunk_rows, owner).astype(np.float32))
    best_d = np.empty(0, dtype=np.float32)
    best_i = np.empty(0, dtype=np.int64)
    for start, block in _blocks(reader, chunk_rows, owner):
        dist = torch.pow(torch.from_numpy(block) - center, 2).sum(dim=1).numpy()
        vals = np.concatenate([best_d, dist])
        rows = np.concatenate([best_i, np.arange(start, start + block.shape[0])])
        if vals.size > k:
            keep = np.flatnonzero(vals <= np.partition(vals, k - 1)[k - 1])
            vals, rows = vals[keep], rows[keep]
        order = np.lexsort((rows, vals))[:k]
        best_d, best_i = vals[order], rows[order]
    return best_i.astype(np.int64)


def _train_sample(reader: Any, m: int, seed: int, chunk_rows: int, owner: str) -> np.ndarray:
    """``m`` distinct rows drawn uniformly with ``seed``, in ascending row order (float32)."""
    n, d = (int(s) for s in reader.shape)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    if isinstance(reader, np.ndarray):  # same values as the chunked gather below
        sample = np.ascontiguousarray(reader[rows], dtype=np.float32)
        _check_finite(sample, rows, owner)
        return sample
    sample = np.empty((m, d), dtype=np.float32)
    for start, block in _blocks(reader, chunk_rows, owner):
        lo, hi = np.searchsorted(rows, [start, start + block.shape[0]])
        sample[lo:hi] = block[rows[lo:hi] - start]
    return sample


def approximate_herding_order(
    features: np.ndarray | FeatureReader,
    k: int,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exact_below: int = EXACT_BELOW,
) -> np.ndarray:
    """The first ``k`` picks of herding, each found by an IVF nearest-neighbour search.

    Pick ``i`` is the unpicked row nearest ``t = (i+1)·center − Σ picked`` (herding's rule,
    see the module docstring), searched in ``nprobe`` of ``nlist`` lists of an
    ``IndexIVFFlat``; picked rows are masked by an ``IDSelectorBitmap``. If every row of the
    probed lists is picked, the search is repeated with twice the lists. Groups under
    ``exact_below`` rows run :func:`memstore.selection.herding_order` (exact) instead.

    Args:
        features: ``[N, d]`` array or chunked reader (see module docstring).
        k: number of picks, ``0 <= k <= N``.
        nlist: IVF lists; default :func:`default_nlist` (``sqrt(N)``, 1000 at 1M).
        nprobe: lists scanned per pick; default :func:`default_nprobe` (8); at most nlist.
        seed: seeds the k-means training sample and initialisation.
        chunk_rows: rows per block read.
        exact_below: row count under which exact herding is used.

    Returns:
        int64 array of ``k`` distinct row numbers in pick order. Deterministic for a given
        seed, FAISS build and thread count.

    Cost: two chunked reads for a reader (one for an array), k-means on ``32·nlist`` rows,
    assigning every row (O(N·nlist·d)), then ``k`` searches of O((nlist + nprobe·N/nlist)·d).
    Memory: the index (``N·(4·d + 16)`` bytes; growing its lists leaves allocator slack, the
    peak was ≈ 1.3× that at 1M×128) plus one block.
    """
    owner = "approximate_herding_order"
    reader = _check_reader(features, owner)
    n, d = (int(s) for s in reader.shape)
    k = _check_k(k, n, owner)
    nlist = check_int(nlist, "nlist", owner, minimum=1, allow_none=True)
    nprobe = check_int(nprobe, "nprobe", owner, minimum=1, allow_none=True)
    seed = check_int(seed, "seed", owner, minimum=0)
    chunk_rows = _check_chunk_rows(chunk_rows, owner)
    exact_below = check_int(exact_below, "exact_below", owner, minimum=0)
    if nlist is not None and nlist > n:
        raise ValueError(
            f"The 'nlist' parameter of {owner} must be at most the number of rows ({n}). "
            f"Got {nlist} instead."
        )
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if n < exact_below:
        from .strategies import herding_order

        return herding_order(_read_all(reader, chunk_rows, owner), k)

    import faiss

    nlist = default_nlist(n) if nlist is None else nlist
    nprobe = min(default_nprobe(nlist) if nprobe is None else nprobe, nlist)
    m = min(n, TRAIN_POINTS_PER_LIST * nlist)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    index.cp.seed = seed
    index.cp.niter = TRAIN_ITERATIONS
    index.cp.max_points_per_centroid = -(-m // nlist)  # never let FAISS subsample again
    index.cp.min_points_per_centroid = 1
    index.train(_train_sample(reader, m, seed, chunk_rows, owner))
    total = np.zeros(d, dtype=np.float64)
    for _, block in _blocks(reader, chunk_rows, owner):
        index.add(block)
        total += block.sum(axis=0, dtype=np.float64)
    center = total / n
    return _herd_with_index(index, center, n, k, nprobe, nlist)


def _herd_with_index(
    index: Any, center: np.ndarray, n: int, k: int, nprobe: int, nlist: int
) -> np.ndarray:
    """The greedy herding loop over a filled IVF index (one 1-NN search per pick)."""
    import faiss

    # Bit j of ``allowed`` (little-endian bit order, as FAISS reads it) = row j unpicked; the
    # selector reads the array in place, so clearing a bit excludes the row from then on.
    allowed = np.packbits(np.ones(n, dtype=bool), bitorder="little")
    selector = faiss.IDSelectorBitmap(allowed.size, faiss.swig_ptr(allowed))
    params = {}
    picks = np.empty(k, dtype=np.int64)
    picked_sum = np.zeros(center.shape[0], dtype=np.float64)
    query = np.empty((1, center.shape[0]), dtype=np.float32)
    distance = np.empty((1, 1), dtype=np.float32)
    label = np.empty((1, 1), dtype=np.int64)
    index.make_direct_map()  # reconstruct(j) of picked rows, O(N) int64
    probes = nprobe
    for i in range(k):
        query[0] = (i + 1) * center - picked_sum
        while True:
            if probes not in params:
                params[probes] = faiss.SearchParametersIVF(sel=selector, nprobe=probes)
            index.search(query, 1, params=params[probes], D=distance, I=label)
            j = int(label[0, 0])
            if j >= 0:
                break
            if probes >= nlist:  # cannot happen while unpicked rows remain
                raise RuntimeError("The IVF index returned no unpicked row.")
            probes = min(2 * probes, nlist)
        picks[i] = j
        picked_sum += index.reconstruct(j)
        allowed[j >> 3] &= np.uint8(~(1 << (j & 7)) & 0xFF)
        probes = nprobe
    return picks


def _herding_margin(
    best: float, i: int, tnorm: float, elem: float, score_err: float, gamma: float
) -> float:
    """``herding_order``'s near-tie margin for pick ``i`` given the best score ``best``.

    Bounds the float32 rounding of the score and of the reference's distance (as in
    :func:`memstore.selection.herding_order`); increasing in ``best``.
    """
    ref = max(best + tnorm * tnorm, 0.0) / (i + 1) ** 2
    ref_err = 2 * np.sqrt(ref) * elem + elem * elem + gamma * ref
    return 4 * (score_err + (i + 1) ** 2 * ref_err) + 1e-30


def exact_herding_chunked(
    features: np.ndarray | FeatureReader,
    k: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Exact herding with bounded temporaries: equals :func:`~memstore.selection.herding_order`.

    Same rule, same float32 scores and the same near-tie re-scoring with the reference's
    expression as ``herding_order``, but each pick scores the rows one block at a time and
    keeps only the rows that can still be within the rounding margin of the best. The mean
    is torch's float32 mean for an in-memory float32 array (as in ``herding_order``, so the
    picks are identical) and a float64 block sum rounded to float32 for a reader (identical
    unless that rounding differs and flips a near-tie).

    Cost: O(k·N·d) time — each pick reads every row once, so give an in-memory array or an
    ``np.memmap`` at scale (a compressed on-disk reader is decoded ``k`` times); extra
    memory O(N) (‖x‖², taken mask) plus one block. Memory-bound: ~3× slower than
    ``herding_order``, which scores from an int8 copy of the features (N·d bytes).
    """
    owner = "exact_herding_chunked"
    reader = _check_reader(features, owner)
    n, d = (int(s) for s in reader.shape)
    k = _check_k(k, n, owner)
    chunk_rows = _check_chunk_rows(chunk_rows, owner)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    sq = np.empty(n, dtype=np.float64)
    total = np.zeros(d, dtype=np.float64)
    for start, block in _blocks(reader, chunk_rows, owner):
        sq[start : start + block.shape[0]] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        total += block.sum(axis=0, dtype=np.float64)
    if isinstance(reader, np.ndarray) and reader.dtype == np.float32 and reader.flags.c_contiguous:
        center_t = torch.from_numpy(reader).mean(dim=0)
    else:
        center_t = torch.from_numpy((total / n).astype(np.float32))
    center = center_t.double().numpy()
    xmax = float(np.sqrt(sq.max()))
    cnorm = float(np.linalg.norm(center))
    current_t = center_t * 0
    current = np.zeros(d)
    gamma = (d + 4) * _EPS32
    taken = np.zeros(n, dtype=bool)
    for i in range(k):
        t = (i + 1) * center - i * current
        t32 = t.astype(np.float32)
        tnorm = float(np.linalg.norm(t))
        elem = 3 * _EPS32 * (float(np.linalg.norm(current)) + xmax / (i + 1) + cnorm)
        bound = (i, tnorm, elem, 2 * gamma * xmax * (xmax + tnorm), gamma)

        best = math.inf
        kept_rows: list[np.ndarray] = []
        kept_x: list[np.ndarray] = []
        kept_s: list[np.ndarray] = []
        for start, block in _blocks(reader, chunk_rows, owner, check=False):
            stop = start + block.shape[0]
            score = sq[start:stop] - 2.0 * (block @ t32).astype(np.float64)
            score[taken[start:stop]] = np.inf
            best = min(best, float(score.min()))
            # best + margin(best) only shrinks as the running best does: keeping every row
            # under the running bound keeps a superset of the final candidates.
            near = np.flatnonzero(score <= best + _herding_margin(best, *bound))
            if near.size:
                kept_rows.append(start + near)
                kept_x.append(block[near])
                kept_s.append(score[near])
        rows = np.concatenate(kept_rows)
        final = np.concatenate(kept_s) <= best + _herding_margin(best, *bound)
        cand = rows[final]
        cand_x = torch.from_numpy(np.concatenate(kept_x)[final])
        candidate_centers = current_t * i / (i + 1) + cand_x / (i + 1)
        distances = pow(candidate_centers - center_t, 2).sum(dim=1)
        j = int(torch.argmin(distances))
        picks[i] = cand[j]
        taken[cand[j]] = True
        current_t = candidate_centers[j]
        current = current_t.double().numpy()
    return picks

"""Approximate herding for groups of 10^5 to 10^7 rows: an IVF index (FAISS), read chunk by chunk.

The features are an in-memory array or a chunked reader (:mod:`.readers`); rows are read
``chunk_rows`` at a time, so RAM holds one block, a few length-``N`` vectors and the FAISS
index, never a second ``N×d`` copy. Blocks are cut at multiples of ``chunk_rows`` from row 0,
so an array and a reader holding the same values give the same result.

:func:`approximate_herding_order` answers herding's greedy rule with an IVF index:
``argmin_j ‖x_j‖² − 2⟨x_j, t⟩ = argmin_j ‖x_j − t‖²`` (the ``‖t‖²`` term is common to all
rows), so each pick is a 1-nearest-neighbour query for ``t = (i+1)·center − Σ picked`` among
the unpicked rows (each pick is removed from its inverted list). IVF stores the raw vectors (float16
features as float16 codes, exactly), so the only approximation is which lists are scanned;
no near-tie margin applies (the pick is the index's nearest neighbour). Groups under
``exact_below`` rows run exact herding (:func:`.herding.herding_order`, with its
:func:`.herding.near_tie_margin`).

Threads: FAISS runs on OpenMP. On shared or 2-core machines start the process with
``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP workers then sleep instead of spinning against
numpy/torch threads) and pick ``OMP_NUM_THREADS``. This module sets neither: both must be
in the environment before the OpenMP runtime starts. ``faiss`` is imported lazily, inside
the functions that use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from memstore._validation import check_int

from .herding import herding_order
from .ivf_cache import IndexCache, load_index, save_index
from .readers import (
    DEFAULT_CHUNK_ROWS,
    FeatureReader,
    TypedFeatureReader,
    check_chunk_rows,
    check_finite,
    check_k,
    check_reader,
    iter_blocks,
    read_all,
)

__all__ = [
    "approximate_herding_order",
    "default_nlist",
    "default_nprobe",
    "EXACT_BELOW",
]

#: below this many rows :func:`approximate_herding_order` runs exact herding instead.
EXACT_BELOW = 50_000
#: k-means training points per IVF list: FAISS advises 30 to 256; the sample costs a pass
#: and k-means O(32·nlist²·d) — halving 64 saved ~1 s at 1M×128 with no loss in quality.
TRAIN_POINTS_PER_LIST = 32
#: k-means iterations for the IVF centroids (FAISS's IVF default).
TRAIN_ITERATIONS = 10


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


def _train_sample(reader: Any, m: int, seed: int, chunk_rows: int, owner: str) -> np.ndarray:
    """``m`` distinct rows drawn uniformly with ``seed``, in ascending row order (float32)."""
    n, d = (int(s) for s in reader.shape)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    if isinstance(reader, np.ndarray):  # same values as the chunked gather below
        sample = np.ascontiguousarray(reader[rows], dtype=np.float32)
        check_finite(sample, rows, owner)
        return sample
    sample = np.empty((m, d), dtype=np.float32)
    for start, block in iter_blocks(reader, chunk_rows, owner):
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
    index_cache: IndexCache | None = None,
) -> np.ndarray:
    """The first ``k`` picks of herding, each found by an IVF nearest-neighbour search.

    Pick ``i`` is the unpicked row nearest ``t = (i+1)·center − Σ picked`` (herding's rule,
    see the module docstring), searched in ``nprobe`` of ``nlist`` lists of an
    ``IndexIVFFlat``; picked rows are removed from their lists. If every row of the
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
        index_cache: where to keep the built index and reuse it on the next call with the
            same key and build parameters (:mod:`.ivf_cache`; the features are then not read
            again). The picks are the same either way.

    Returns:
        int64 array of ``k`` distinct row numbers in pick order. Deterministic for a given
        seed, FAISS build and thread count.

    Cost: two chunked reads for a reader (one for an array), k-means on ``32·nlist`` rows,
    assigning every row (O(N·nlist·d)), then ``k`` searches of O((nlist + nprobe·N/nlist)·d).
    Memory: the index (``N·(4·d + 16)`` bytes; growing its lists leaves allocator slack, the
    peak was ≈ 1.3× that at 1M×128) plus one block.
    """
    owner = "approximate_herding_order"
    reader = check_reader(features, owner)
    n, d = (int(s) for s in reader.shape)
    k = check_k(k, n, owner)
    nlist = check_int(nlist, "nlist", owner, minimum=1, allow_none=True)
    nprobe = check_int(nprobe, "nprobe", owner, minimum=1, allow_none=True)
    seed = check_int(seed, "seed", owner, minimum=0)
    chunk_rows = check_chunk_rows(chunk_rows, owner)
    exact_below = check_int(exact_below, "exact_below", owner, minimum=0)
    if nlist is not None and nlist > n:
        raise ValueError(
            f"The 'nlist' parameter of {owner} must be at most the number of rows ({n}). "
            f"Got {nlist} instead."
        )
    if index_cache is not None and not isinstance(index_cache, IndexCache):
        raise TypeError(
            f"The 'index_cache' parameter of {owner} must be an IndexCache or None. "
            f"Got {type(index_cache).__name__} instead."
        )
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if n < exact_below:
        return herding_order(read_all(reader, chunk_rows, owner), k)

    nlist = default_nlist(n) if nlist is None else nlist
    nprobe = min(default_nprobe(nlist) if nprobe is None else nprobe, nlist)
    fp16 = isinstance(reader, TypedFeatureReader) and np.dtype(reader.dtype) == np.float16
    params = {"n": n, "d": d, "nlist": nlist, "seed": seed, "train": TRAIN_POINTS_PER_LIST}
    params.update(niter=TRAIN_ITERATIONS, codec="fp16" if fp16 else "flat")
    loaded = None if index_cache is None else load_index(index_cache, params)
    if loaded is None:
        index, center = _build_index(reader, nlist, seed, chunk_rows, owner, fp16)
        if index_cache is not None:
            save_index(index_cache, index, center, params)
    else:
        index, center = loaded
    return _herd_with_index(index, center, k, nprobe, nlist)


def _build_index(
    reader: Any, nlist: int, seed: int, chunk_rows: int, owner: str, fp16: bool
) -> tuple[Any, np.ndarray]:
    """An IVF index over every row (k-means on a seeded sample) and the float64 mean.

    Float16 features are stored as float16 codes (``QT_fp16``: lossless for them, half the
    memory of ``IndexIVFFlat``; 1.3 GB instead of 2.6 GB at 10M × 64), others as float32.
    """
    import faiss

    n, d = (int(s) for s in reader.shape)
    m = min(n, TRAIN_POINTS_PER_LIST * nlist)
    quantizer = faiss.IndexFlatL2(d)
    if fp16:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    index.cp.seed = seed
    index.cp.niter = TRAIN_ITERATIONS
    index.cp.max_points_per_centroid = -(-m // nlist)  # never let FAISS subsample again
    index.cp.min_points_per_centroid = 1
    index.train(_train_sample(reader, m, seed, chunk_rows, owner))
    total = np.zeros(d, dtype=np.float64)
    for _, block in iter_blocks(reader, chunk_rows, owner):
        index.add(block)
        total += block.sum(axis=0, dtype=np.float64)
    return index, total / n


def _herd_with_index(index: Any, center: np.ndarray, k: int, nprobe: int, nlist: int) -> np.ndarray:
    """The greedy herding loop over a filled IVF index (one 1-NN search per pick).

    Each picked row is removed from its inverted list (the list's last entry moves into its
    slot), so the searches scan only unpicked rows with FAISS's plain SIMD path: an
    ``IDSelectorBitmap`` of picked rows cost 10–20% more per search here, and a direct map
    to reconstruct picks N·8 bytes. The search runs in two steps — the coarse quantizer's
    ``nprobe`` lists, then ``search_preassigned`` with ``store_pairs`` — so it answers with
    (list, offset), whose vector and id are read in place. Mutates ``index`` (the caller
    saved it first, if at all).
    """
    import faiss

    lists = index.invlists
    d = center.shape[0]
    picks = np.empty(k, dtype=np.int64)
    picked_sum = np.zeros(d, dtype=np.float64)
    query = np.empty((1, d), dtype=np.float32)
    row = np.empty(d, dtype=np.float32)
    distance = np.empty((1, 1), dtype=np.float32)
    label = np.empty((1, 1), dtype=np.int64)
    buffers: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}
    ptr = faiss.swig_ptr
    index.parallel_mode = 1  # one query at a time: the threads share its probed lists
    for i in range(k):
        query[0] = (i + 1) * center - picked_sum
        probes = nprobe
        while True:
            if probes not in buffers:
                buffers[probes] = (
                    faiss.SearchParametersIVF(nprobe=probes),
                    np.empty((1, probes), dtype=np.float32),
                    np.empty((1, probes), dtype=np.int64),
                )
            params, list_dis, list_ids = buffers[probes]
            index.quantizer.search(query, probes, D=list_dis, I=list_ids)
            # the SWIG method itself: FAISS's Python wrapper of it takes no ``store_pairs``
            index.search_preassigned_c(
                1, ptr(query), 1, ptr(list_ids), ptr(list_dis), ptr(distance), ptr(label),
                True, params, None,
            )  # fmt: skip
            if label[0, 0] >= 0:
                break
            if probes >= nlist:  # cannot happen while unpicked rows remain
                raise RuntimeError("The IVF index returned no unpicked row.")
            probes = min(2 * probes, nlist)
        where = int(label[0, 0])
        list_no, offset = where >> 32, where & 0xFFFFFFFF
        picks[i] = lists.get_single_id(list_no, offset)
        index.reconstruct_from_offset(list_no, offset, ptr(row))
        picked_sum += row
        last = lists.list_size(list_no) - 1
        if offset != last:
            code = lists.get_single_code(list_no, last)
            lists.update_entry(list_no, offset, lists.get_single_id(list_no, last), code)
        lists.resize(list_no, last)
    return picks

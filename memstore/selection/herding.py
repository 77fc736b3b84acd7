"""Exact herding: Avalanche 0.6.0's picks bit for bit on float32 features, far cheaper.

Herding (Welling 2009; iCaRL) greedily keeps the running mean of the picks close to the group
mean. Pick ``i`` minimises the reference's float32 distance ``D_j = ‖(i·cur + x_j)/(i+1) −
center‖²``; with ``y = x − center`` and ``t' = i·(center − cur)``, ``(i+1)²·D_j = ‖y_j − t'‖²``.
Both exact paths share one core:

* a first pass scores every row (``σ'_j = ‖y_j‖² − 2⟨y_j, t'⟩`` or the same quantity in the
  frame of ``x``) with a rigorous error bound — :mod:`.scores` (AVX-512 VNNI or torch's
  weight-only int8 kernel over a centred int8 copy, or one float32 sgemv); :mod:`.kernels`
  picks the kernel by a measured probe at first use;
* :func:`near_tie_margin` (from :mod:`.rounding`, like :func:`advance_center`: numba
  compiles the same functions for the VNNI path's fused loop) — the one bound on the
  reference's own float32 rounding — keeps
  every row that could still be the reference's pick;
* :func:`reference_pick` settles those candidates with the reference's float32 expression
  (first index on ties) and :func:`advance_center` updates ``cur`` with its arithmetic.

:func:`herding_order` holds the features in RAM; :func:`exact_herding_chunked` reads them
block by block (bounded memory, e.g. a zarr array of the feature cache). Both are O(k·N·d),
never build an ``N×d`` temporary and stop after ``k`` picks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .center import mean_and_max_norm2, stream_mean
from .kernels import KERNELS, make_scores
from .readers import (
    DEFAULT_CHUNK_ROWS,
    FeatureReader,
    check_chunk_rows,
    check_k,
    check_reader,
    iter_blocks,
)
from .rounding import (
    EPS32,
    U32,
    advance_center,
    float32_threshold,
    gamma,
    near_tie_margin,
    separated_pick,
)
from .scores import Float32Scores, Int8Rows, VnniScores

__all__ = [
    "herding_order",
    "exact_herding_chunked",
    "near_tie_margin",
    "reference_pick",
    "reference_sums_pick",
    "advance_center",
    "KERNELS",
]

_MAX_D = 100_000  # the rounding argument of herding_order needs (d + 4)·u32 << 1
_MAX_NORM = 1e18  # beyond, the reference's float32 distances may overflow


# -- the reference's decision among near-ties ---------------------------------------------------
def reference_pick(cur32: np.ndarray, rows: np.ndarray, i: int, center32: np.ndarray) -> int:
    """Which of the candidate ``rows`` (float32, ascending row order) the reference picks.

    The reference's own float32 expression ``pow(cur·i/(i+1) + x/(i+1) − center, 2).sum(1)``
    and its ``argmin`` (first on ties); a single candidate is returned as is. Where the
    distances are bounded apart without the row sums (:func:`.rounding.separated_pick`),
    that decides; else :func:`reference_sums_pick`.
    """
    if rows.shape[0] == 1:
        return 0
    decided = separated_pick(cur32, rows, i, center32)
    return decided if decided >= 0 else reference_sums_pick(cur32, rows, i, center32)


def reference_sums_pick(cur32: np.ndarray, rows: np.ndarray, i: int, center32: np.ndarray) -> int:
    """:func:`reference_pick` by the reference's own row sums: the elementwise steps in numpy
    (one correctly rounded float32 operation each, as torch's are: the same bits, ~4× cheaper
    on a few rows than torch's dispatch), the sum over a row, whose order is torch's own, by
    torch."""
    step = np.float32(i + 1)
    moved = cur32 * np.float32(i)
    moved /= step
    candidates = rows / step
    candidates += moved
    candidates -= center32
    candidates *= candidates  # torch's pow(·, 2) is this one product
    return int(torch.from_numpy(candidates).sum(dim=1).numpy().argmin())


def herding_order(features: np.ndarray, k: int, *, kernel: str | None = None) -> np.ndarray:
    """The first ``k`` herding picks, identical to Avalanche's float32 loop.

    Pick ``i`` minimises the reference's distance ``D_j = ‖(i·cur + x_j)/(i+1) − center‖²``,
    with ``cur`` and ``center`` the reference's own float32 vectors. In exact arithmetic
    ``(i+1)²·D_j = ‖y_j − t'‖²`` with ``y = x − center`` and ``t' = i·(center − cur)``, so:

    1. one first pass over the rows bounds every row's score rigorously — AVX-512 VNNI,
       torch's int8 kernel or one float32 sgemv (:mod:`.scores`; the kernel by a measured
       probe at first use, :mod:`.kernels`); never an ``N×d`` temporary. With VNNI, every
       pick the bounds decide runs in one compiled loop (:meth:`.scores.VnniScores.herd`),
       Python only settling near-ties, and where the rows outgrow the core's cache one pass
       also computes the columns of the four likeliest next picks, so a pass often decides
       two or more picks (the look-ahead; ~0.6 passes per pick at 10 000 × 512);
    2. rows within the bounds plus the reference's float32 rounding margin
       (:func:`near_tie_margin`) of the best are re-scored exactly (float64);
    3. if several stay within the rounding margin (near-ties, duplicates), the reference's
       own float32 expression decides among them (:func:`reference_pick`, first index on
       ties), so the pick is the reference's; ``cur`` is updated with the reference's float32
       arithmetic.

    Args:
        features: ``[N, d]`` array (float32 is used as is; others are converted).
        k: number of picks (at most ``N`` are made).
        kernel: for tests and benchmarks: force the first pass (``"vnni-int8"``,
            ``"torch-int8"`` or ``"float32"``; one that cannot run falls back to float32).
            Default: chosen by size and the probe. The picks are the same whatever it is.

    Cost: O(k·N·d) — at most one pass over an int8 or float32 copy per pick, only the first
    ``k`` picks (the reference orders all N rows and allocates several N×d arrays per pick).
    """
    if kernel is not None and kernel not in KERNELS:
        raise ValueError(
            f"The 'kernel' parameter of herding_order must be one of {list(KERNELS)} or None. "
            f"Got {kernel!r} instead."
        )
    n, d = features.shape
    k = min(int(k), n)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    x32 = np.ascontiguousarray(features, dtype=np.float32)
    xt = torch.from_numpy(x32)
    # the reference's center, last bit included, and max ‖x_j‖² from the same read of x
    c32, xsq = mean_and_max_norm2(x32)
    c64 = c32.astype(np.float64)
    cn = float(c64 @ c64) ** 0.5
    xmax = (xsq * (1 + gamma(d + 2))) ** 0.5 * (1 + U32)  # float64 sums: well inside
    scores = None  # outside the rounding argument below, every pick runs the reference's loop
    if d <= _MAX_D and xmax < _MAX_NORM:
        scores = make_scores(xt, c32, xmax, k, kernel)
    taken = np.zeros(n, dtype=bool)
    cur32 = np.zeros(d, dtype=np.float32)
    limit = max(256, n // 16)  # more int8 candidates than this: the bound is too loose here
    i = 0
    while i < k:
        if isinstance(scores, VnniScores):  # every pick the bounds decide, in compiled code
            start = i
            i, cand = scores.herd(x32, c64, cur32, picks, i, k, limit)
            taken[picks[start:i]] = True
            if i == k:
                break
        elif scores is not None:
            cur64 = cur32.astype(np.float64)
            tp = i * (c64 - cur64)
            tn = float(tp @ tp) ** 0.5
            bound = dict(tn=tn, cur_norm=float(cur64 @ cur64) ** 0.5, xmax=xmax, cn=cn, d=d)
            cand = _screen(scores, x32, taken, c64, tp, bound, i, limit)
        else:
            cand = np.flatnonzero(~taken)  # no usable bound: the reference over all rows
        if cand is None:  # int8 bound too loose here: float32 from now on
            scores = Float32Scores(x32, c32, xmax)
            scores.exclude(picks[:i])
            continue
        p = int(cand[0])
        if len(cand) > 1:  # the fused loop has tried separated_pick on its near-ties
            settle = reference_sums_pick if isinstance(scores, VnniScores) else reference_pick
            p = int(cand[settle(cur32, x32[cand], i, c32)])
        picks[i] = p
        taken[p] = True
        if scores is not None:
            scores.exclude(p)
        advance_center(cur32, x32[p], i)
        i += 1
    return picks


def _rescore(
    x32: np.ndarray, cand: np.ndarray, c64: np.ndarray, tp: np.ndarray, margin: float
) -> np.ndarray:
    """The candidates whose float64 score ``‖x − c − t'‖²`` is within ``margin`` of the best.

    The float32 path's step; the int8 scorers do the same inside their numba ``finalists``
    pass. Kept in numpy so that the float32 fallback runs wherever numba cannot."""
    if len(cand) <= 1:
        return cand
    diff = x32[cand].astype(np.float64)
    diff -= c64
    diff -= tp
    f = np.einsum("ij,ij->i", diff, diff)
    return cand[f <= f.min() + margin]


def _screen(
    scores: Float32Scores | Int8Rows,
    x32: np.ndarray,
    taken: np.ndarray,
    c64: np.ndarray,
    tp: np.ndarray,
    bound: dict[str, Any],
    i: int,
    limit: int,
) -> np.ndarray | None:
    """Candidates from a full first pass (float32 or int8 scores of every row; the scorer
    scores taken rows +inf); ``None`` when the int8 bound leaves more than ``limit`` rows
    (the caller switches to float32)."""
    est, shift = scores.scores(tp, bound["tn"])
    j0 = int(np.argmin(est))
    best = float(est[j0]) + float(scores.err(j0))  # ≥ the smallest σ' (− shift)
    if not best < np.inf:  # no usable bound: the reference over every unpicked row
        return np.flatnonzero(~taken)
    margin = near_tie_margin(i, best + shift, **bound)
    thr = best + margin
    if isinstance(scores, Int8Rows):  # est_j − err_j ≤ best + margin, then float64 scores
        return scores.finalists(est, thr, x32, c64, tp, margin, limit)
    cand = np.flatnonzero(est <= float32_threshold(thr + scores.err()))
    return _rescore(x32, cand, c64, tp, margin)


def exact_herding_chunked(
    features: np.ndarray | FeatureReader,
    k: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Exact herding with bounded temporaries: equals :func:`herding_order`.

    Same rule and the same core as ``herding_order`` — :func:`near_tie_margin`, the
    reference's expression among the candidates (:func:`reference_pick`) and its running
    center — but each pick scores the rows one block at a time (``‖x‖² − 2⟨x, t⟩``, float32
    sgemv) and keeps only the rows that can still be the reference's pick. The mean is
    torch's float32 mean for an in-memory float32 array (as in ``herding_order``, so the
    picks are identical) and a float64 block sum rounded to float32 for a reader (identical
    unless that rounding differs and flips a near-tie).

    Cost: O(k·N·d) time — each pick reads every row once, so give an in-memory array or an
    ``np.memmap`` at scale (a compressed on-disk reader is decoded ``k`` times); extra
    memory O(N) (‖x‖², taken mask) plus one block. Memory-bound: ~3× slower than
    ``herding_order``, which scores from an int8 copy of the features (N·d bytes).
    """
    owner = "exact_herding_chunked"
    reader = check_reader(features, owner)
    n, d = (int(s) for s in reader.shape)
    k = check_k(k, n, owner)
    chunk_rows = check_chunk_rows(chunk_rows, owner)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    sq = np.empty(n, dtype=np.float64)
    mean = stream_mean(n, d)  # torch's float32 mean of the rows, streamed with the norms
    for start, block in iter_blocks(reader, chunk_rows, owner):
        sq[start : start + block.shape[0]] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        mean.add(block)
    in_ram = isinstance(reader, np.ndarray) and reader.flags.c_contiguous
    if not mean.exact and in_ram and reader.dtype == np.float32:
        center_t = torch.from_numpy(reader).mean(dim=0)  # torch's own, without the kernel
    else:
        center_t = torch.from_numpy(mean.result())
    c64 = center_t.double().numpy()
    cn = float(np.linalg.norm(c64))
    xmax = float(np.sqrt(sq.max())) * (1 + U32)
    gamma = (d + 4) * EPS32
    cur32 = np.zeros(d, dtype=np.float32)
    taken = np.zeros(n, dtype=bool)
    for i in range(k):
        cur64 = cur32.astype(np.float64)
        t = (i + 1) * c64 - i * cur64
        t32 = t.astype(np.float32)
        tn = float(np.linalg.norm(t))
        err = 2 * gamma * xmax * (xmax + tn)  # |score_j − σ_j|: sgemv and t rounded to float32
        bound = dict(tn=tn, cur_norm=float(np.linalg.norm(cur64)), xmax=xmax, cn=cn, d=d)

        best = np.inf
        kept_rows: list[np.ndarray] = []
        kept_x: list[np.ndarray] = []
        kept_s: list[np.ndarray] = []
        for start, block in iter_blocks(reader, chunk_rows, owner, check=False):
            stop = start + block.shape[0]
            score = sq[start:stop] - 2.0 * (block @ t32).astype(np.float64)
            score[taken[start:stop]] = np.inf
            best = min(best, float(score.min()))
            if best == np.inf:
                continue  # every row so far is taken
            # The threshold only shrinks with the running best: rows under the running
            # threshold are a superset of the final candidates.
            thr = best + 2 * err + near_tie_margin(i, best + err, **bound)
            near = np.flatnonzero(score <= thr)
            if near.size:
                kept_rows.append(start + near)
                kept_x.append(block[near])
                kept_s.append(score[near])
        thr = best + 2 * err + near_tie_margin(i, best + err, **bound)
        final = np.concatenate(kept_s) <= thr
        cand = np.concatenate(kept_rows)[final]
        cand_x = np.concatenate(kept_x)[final]
        j = reference_pick(cur32, cand_x, i, center_t.numpy())
        picks[i] = cand[j]
        taken[cand[j]] = True
        advance_center(cur32, cand_x[j], i)
    return picks

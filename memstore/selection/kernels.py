"""Which first-pass kernel exact herding uses: a measured probe at first use, an override.

Every kernel gives the reference's picks (each carries a rigorous bound and the candidates
are settled exactly), so the choice only changes speed. The low-precision kernels —
``vnni-int8`` (:class:`.scores.VnniScores`: AVX-512 VNNI ``vpdpbusd`` called from numba,
exact int32 sums, only where the CPU has it and numba targets it) and ``torch-int8``
(:class:`.scores.Int8Scores`, torch's private weight-only int8 kernel) — are built and timed
once per process on a small synthetic problem (~50 ms, plus numba's one-off compile, cached
on disk) and the fastest that runs and passes its own check is kept; else ``float32``
(:class:`.scores.Float32Scores`, one sgemv). (Timing float32 against them on that probe
misleads: the probe is cache-resident, real groups are not — one run picked float32 and cost
1.35× a mat-vec per pick instead of ~0.5–1×.) The verdict is cached for the process: it
affects time, never results.

Kernels measured and not kept (a Xeon with AVX-512 VNNI, torch 2.13, FAISS 1.15.1; on a Zen 4
VM later, fbgemm's packing took 16–40 ms and its pass matched memstore's):
FAISS's 8-bit scalar-quantizer search (direct signed codes) returns distances ~0.4% off at
``d >= 64`` — outside any rounding bound, so a checked version was always refused and never
ran; fbgemm's dynamically quantized ``Linear`` is 2–4× faster per pick than the int8 kernel
used here, but packing the weights took 75–480 ms (~60–900 float32 mat-vecs, with the load),
more than ``k = 200`` picks save.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .scores import (
    INT8_MIN_ELEMENTS,
    INT8_MIN_K,
    Float32Scores,
    Int8Scores,
    VnniScores,
    int8_kernel_usable,
    vnni_usable,
)

__all__ = ["KERNELS", "make_scores", "fastest_kernel", "Scorer", "VNNI_MIN_ELEMENTS", "VNNI_MIN_K"]

#: the kernel names ``herding_order(..., kernel=...)`` accepts.
KERNELS = ("vnni-int8", "torch-int8", "float32")
#: the kernels the probe may choose (fastest usable one), float32 being the fallback.
LOW_PRECISION = ("vnni-int8", "torch-int8")

Scorer = Float32Scores | Int8Scores | VnniScores
VNNI_MIN_ELEMENTS = 1 << 16  # from here (e.g. 500×128) the VNNI pass is worth its set-up
VNNI_MIN_K = 8
_VERDICT: dict[str, str] = {}  # process-wide: which kernel the probe found fastest


def _build(kind: str, xt: torch.Tensor, c32: np.ndarray, xmax: float) -> Scorer:
    x32 = xt.numpy()
    if kind == "float32":
        return Float32Scores(x32, c32, xmax)
    if kind == "vnni-int8" and not vnni_usable(*x32.shape):
        raise RuntimeError("AVX-512 VNNI is not available to numba here")
    if kind == "torch-int8" and not int8_kernel_usable(*x32.shape):
        raise RuntimeError("torch's int8 kernel is not available")
    from numba.core.errors import NumbaError  # both int8 copies are built by numba code

    try:
        return VnniScores(x32, c32, xmax) if kind == "vnni-int8" else Int8Scores(x32, c32, xmax)
    except NumbaError as err:  # a numba or LLVM that cannot compile the kernels here
        raise RuntimeError(f"numba cannot build the {kind} kernels here: {err}") from err


def _probe_seconds(kind: str, xt: torch.Tensor, c32: np.ndarray, xmax: float) -> float:
    """Seconds to build ``kind`` on the probe data and run 64 first passes (best of 2)."""
    d = xt.shape[1]
    tp = np.cos(np.arange(d) * 0.3) * 2.0
    tn = float(tp @ tp) ** 0.5
    best = np.inf
    for _ in range(2):
        t0 = time.perf_counter()
        scorer = _build(kind, xt, c32, xmax)
        for _ in range(64):
            scorer.scores(tp, tn)
        best = min(best, time.perf_counter() - t0)
    return best


def fastest_kernel() -> str:
    """The low-precision kernel that ran fastest here on a probe, else ``float32`` (cached
    for the process)."""
    if "kernel" not in _VERDICT:
        x = np.random.default_rng(0).standard_normal((8192, 256), dtype=np.float32)
        xt = torch.from_numpy(x)
        c32 = xt.mean(dim=0).numpy()
        xmax = float(np.sqrt(np.einsum("ij,ij->i", x, x).max())) * 1.001
        timed = {}
        for kind in LOW_PRECISION:
            try:
                timed[kind] = _probe_seconds(kind, xt, c32, xmax)
            except (ImportError, RuntimeError, TypeError, NotImplementedError):
                continue  # missing or outside its bound here: not a candidate
        _VERDICT["kernel"] = min(timed, key=timed.__getitem__) if timed else "float32"
        _VERDICT.update({f"seconds {k}": f"{v:.4f}" for k, v in timed.items()})
    return _VERDICT["kernel"]


def make_scores(
    xt: torch.Tensor, c32: np.ndarray, xmax: float, k: int, kernel: str | None = None
) -> Scorer:
    """The first-pass scorer for ``k`` picks over ``xt`` (float32 ``[N, d]``).

    ``kernel=None`` chooses :func:`fastest_kernel` where it repays its copy — ``vnni-int8``
    from :data:`VNNI_MIN_ELEMENTS` and :data:`VNNI_MIN_K` (its copy costs ~5 float32
    passes and it beat the float32 pass at every size measured from 500×32, k = 20; below,
    the float32 pass spares the first use its numba import), ``torch-int8`` only from
    :data:`.scores.INT8_MIN_ELEMENTS` and :data:`.scores.INT8_MIN_K` — else float32. A named
    kernel is forced (tests, benchmarks); one that cannot run here falls back to float32.
    """
    n, d = (int(v) for v in xt.shape)
    if kernel is None:
        kernel = "float32"
        if n * d >= VNNI_MIN_ELEMENTS and k >= VNNI_MIN_K:
            fastest = fastest_kernel()
            if fastest == "vnni-int8" or (n * d >= INT8_MIN_ELEMENTS and k >= INT8_MIN_K):
                kernel = fastest
    try:
        return _build(kernel, xt, c32, xmax)
    except (ImportError, RuntimeError, TypeError, NotImplementedError):
        return Float32Scores(xt.numpy(), c32, xmax)  # the float32 pass is exact too

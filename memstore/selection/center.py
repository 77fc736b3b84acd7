"""torch's float32 ``mean(dim=0)``, bit for bit, in one row-major pass (or block by block).

Why: Avalanche's closest-to-center and herding orders depend on the last bit of
``features.mean(dim=0)``. torch computes that sum by a cascade (chunks of 2^p rows, sums of
chunks, up to four levels) that walks the rows column group by column group — strided
reads, ~2–2.5× a streaming pass here, more than the distance pass it precedes. The same
additions in the same order, done row by row by a small numba kernel, cost one streaming
read, and they can be fed block by block, so a chunked reader gets the reference's center
too (instead of a float64 mean rounded to float32, which reorders near-ties).

What torch does (ATen ``SumKernel.cpp``, facts checked here by the probe, not assumed):
leading columns in groups of ``4·W`` (``W`` floats to a vector; 4 columns when ``d < W``)
take one cascade over all N rows; the other columns take ``row_sum``'s: four interleaved
cascades over rows ``r, r+4, …``, the leftover rows added to the first, then the four
added in order; the float32 total is divided by ``N``. The vector width is found at first
use by comparing each candidate against ``torch.mean`` on probe arrays that exercise every
column group; when numba is missing or no candidate agrees, :func:`torch_mean` is
``torch.mean`` itself, so results never depend on this module — only the time does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .readers import iter_blocks

__all__ = [
    "torch_mean",
    "mean_and_max_norm2",
    "reader_mean",
    "stream_mean",
    "TorchMean",
    "Float64Mean",
    "fast_mean_available",
]

#: Below this many elements ``torch.mean`` is called directly (the kernel only pays at scale).
MIN_ELEMENTS = 1 << 16
_LEVELS = 4
_VERDICT: dict[str, int] = {}  # process-wide: the vector width the probe confirmed (0: none)


def _cascade_columns(d: int, width: int) -> int:
    """How many leading columns torch sums with one cascade over all rows."""
    group = 4 * width if d >= width else 4
    return (d // group) * group


class TorchMean:
    """``torch.mean(x, dim=0)`` of a float32 ``[n, d]`` array fed in row order, block by block.

    ``add`` takes C-contiguous float32 blocks of consecutive rows (any sizes); ``result``
    gives torch's float32 mean bit for bit. O(d) state; cost one streaming read. Only for a
    vector width the probe confirmed (:func:`fast_mean_available`).
    """

    exact = True  # torch's bits (see Float64Mean)

    def __init__(self, n: int, d: int, width: int, norms: bool = False) -> None:
        self.n, self.d, self.rows = int(n), int(d), 0
        self.n_cascade = _cascade_columns(self.d, width)
        self._acc = np.zeros((_LEVELS, self.d), dtype=np.float32)
        self._lanes = np.zeros((4, _LEVELS, self.d), dtype=np.float32)
        self._norm2 = np.zeros(1 if norms else 0)  # with norms: the largest ‖row‖² so far

    @property
    def max_norm2(self) -> float:
        """The largest ``‖row‖²`` added (float64 sums of exact squares); needs ``norms``."""
        if self._norm2.shape[0] == 0:
            raise ValueError("TorchMean was made without norms=True: no row norms kept.")
        return float(self._norm2[0])

    def add(self, block: np.ndarray) -> None:
        """Add the next rows (after those already added). Cost: one read of ``block``."""
        if not isinstance(block, np.ndarray):
            raise TypeError(f"TorchMean.add needs a numpy array. Got {type(block).__name__}.")
        layout = block.dtype == np.float32 and block.flags.c_contiguous and block.ndim == 2
        if not layout or block.shape[1] != self.d:
            raise ValueError(f"TorchMean.add needs C-contiguous float32 [m, {self.d}] rows.")
        m = block.shape[0]
        if self.rows + m > self.n:
            raise ValueError(f"TorchMean got more than the {self.n} rows it was made for.")
        from ._center_kernels import add_rows

        add_rows(block, self.rows, self.n, self.n_cascade, self._acc, self._lanes, self._norm2)
        self.rows += m

    def result(self) -> np.ndarray:
        """torch's float32 mean of the ``n`` rows added (all of them must have been)."""
        if self.rows != self.n:
            raise ValueError(f"TorchMean got {self.rows} of {self.n} rows.")
        total = np.empty(self.d, dtype=np.float32)
        from ._center_kernels import total_into

        total_into(self.n, self.n_cascade, self._acc, self._lanes, total)
        return total / np.float32(self.n)


def probe_arrays() -> list[np.ndarray]:
    """Arrays on which each candidate layout gives other bits than the rest (the probe over
    them takes ~0.1 s)."""
    rng = np.random.default_rng(0)
    shapes = [(20011, d) for d in (6, 37, 47, 83, 100)] + [(4101, 3)]
    return [rng.standard_normal(s, dtype=np.float32) * 3 + 1.5 for s in shapes]


def _probe_width() -> int:
    """The vector width whose column layout reproduces ``torch.mean`` here, else 0."""
    arrays = probe_arrays()
    expected = [torch.from_numpy(a).mean(dim=0).numpy() for a in arrays]
    for width in (8, 16, 4):
        ok = True
        for a, e in zip(arrays, expected, strict=True):
            acc = TorchMean(*a.shape, width)
            half = a.shape[0] // 3
            acc.add(a[:half])
            acc.add(a[half:])
            if not np.array_equal(acc.result().view(np.int32), e.view(np.int32)):
                ok = False
                break
        if ok:
            return width
    return 0


def fast_mean_available() -> int:
    """The confirmed vector width (> 0) when the kernel reproduces torch here, else 0.

    torch splits the columns among threads at multiples of 32 floats; a width of 8 keeps its
    column groups whatever the thread count, any other only on one thread."""
    if "width" not in _VERDICT:
        try:  # numba missing, or unable to compile here: torch.mean, a slow path, not an error
            _VERDICT["width"] = _probe_width()
        except Exception:
            _VERDICT["width"] = 0
    width = _VERDICT["width"]
    if width != 8 and torch.get_num_threads() != 1:
        return 0
    return width


def _kernel_width(features: np.ndarray) -> int:
    """The kernel's vector width for an in-RAM array, 0 where torch.mean itself is used
    (not C-contiguous float32, ``d < 2``, fewer than :data:`MIN_ELEMENTS`, no kernel here)."""
    n, d = features.shape
    if features.dtype == np.float32 and features.flags.c_contiguous and d >= 2:
        if n * d >= MIN_ELEMENTS:
            return fast_mean_available()
    return 0


def torch_mean(features: np.ndarray) -> np.ndarray:
    """``torch.from_numpy(features).mean(dim=0).numpy()``, the same bits, in one pass when
    the kernel applies (C-contiguous float32, ``d >= 2``, at least :data:`MIN_ELEMENTS`)."""
    n, d = features.shape
    width = _kernel_width(features)
    if not width:
        return torch.from_numpy(features).mean(dim=0).numpy()
    acc = TorchMean(n, d, width)
    acc.add(features)
    return acc.result()


def mean_and_max_norm2(features: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`torch_mean` and the largest squared row norm (float64 sums of the float32
    rows' exact squares), in the one read of ``features`` the kernel makes; where it does
    not apply, ``torch.mean`` and a second read."""
    n, d = features.shape
    width = _kernel_width(features)
    if not width:
        x64 = np.einsum("ij,ij->i", features, features, dtype=np.float64)
        return torch.from_numpy(features).mean(dim=0).numpy(), float(x64.max(initial=0.0))
    acc = TorchMean(n, d, width, norms=True)
    acc.add(features)
    return acc.result(), acc.max_norm2


class Float64Mean:
    """:func:`stream_mean`'s fallback where the kernel does not reproduce torch: rows summed
    in float64, the mean rounded to float32 — not torch's bits, so near-ties may order
    differently from the reference. Same ``add`` / ``result`` as :class:`TorchMean`."""

    exact = False

    def __init__(self, n: int, d: int) -> None:
        self.n, self._total = int(n), np.zeros(int(d), dtype=np.float64)

    def add(self, block: np.ndarray) -> None:
        """Add the next rows. Cost: one read of ``block``."""
        self._total += block.sum(axis=0, dtype=np.float64)

    def result(self) -> np.ndarray:
        """The float32 mean of the rows added, over ``n`` rows."""
        return (self._total / max(self.n, 1)).astype(np.float32)


def stream_mean(n: int, d: int) -> TorchMean | Float64Mean:
    """The mean of ``n`` rows of ``d`` features fed block by block: a :class:`TorchMean`
    (torch's bits) where the kernel reproduces torch here, else a :class:`Float64Mean`
    (``.exact`` tells which)."""
    width = fast_mean_available() if d >= 2 and n > 0 else 0
    return TorchMean(n, d, width) if width else Float64Mean(n, d)


def reader_mean(reader: Any, chunk_rows: int, owner: str) -> np.ndarray:
    """The float32 mean of a chunked reader's float32 rows by one pass of blocks, as
    :func:`stream_mean` computes it (torch's ``mean(dim=0)`` bit for bit where it can)."""
    n, d = (int(s) for s in reader.shape)
    acc = stream_mean(n, d)
    for _, block in iter_blocks(reader, chunk_rows, owner):
        acc.add(block)
    return acc.result()

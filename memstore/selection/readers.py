"""Chunked feature readers: the ``FeatureReader`` protocol, its checks and block iteration.

A *chunked reader* is any object with ``shape == (N, d)`` whose ``reader[a:b]`` returns the
rows ``a:b`` as a float16/float32 numpy array (a zarr array of the feature cache, an
``np.memmap``). Rows are read ``chunk_rows`` at a time, always cut at multiples of
``chunk_rows`` from row 0, so an in-memory array and a reader holding the same values give
the same blocks. Every function here accepts an in-memory array as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from memstore._validation import check_int

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FeatureReader",
    "TypedFeatureReader",
    "is_reader",
    "check_reader",
    "check_k",
    "check_chunk_rows",
    "check_finite",
    "iter_blocks",
    "read_all",
    "row_blocks",
    "BLOCK_ELEMENTS",
]

#: rows per block read from a reader; a multiple of the feature cache's 4096-row chunks.
DEFAULT_CHUNK_ROWS = 65536
#: elements of a per-block temporary of in-memory rows (1 MiB of float32: stays in L2).
BLOCK_ELEMENTS = 1 << 18  # elements of a per-block temporary (1 MiB of float32: stays in L2)


@runtime_checkable
class FeatureReader(Protocol):
    """A chunked ``[N, d]`` feature matrix: ``shape`` and ``reader[a:b]`` -> numpy rows."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: slice) -> Any: ...


@runtime_checkable
class TypedFeatureReader(FeatureReader, Protocol):
    """A reader that also declares its ``dtype`` (zarr arrays, numpy arrays): checked up front."""

    @property
    def dtype(self) -> Any: ...


def is_reader(features: Any) -> bool:
    """A chunked array (zarr, h5py, memmap...): a :class:`FeatureReader` not held in memory."""
    return not isinstance(features, (np.ndarray, torch.Tensor, list, tuple)) and isinstance(
        features, FeatureReader
    )


def check_reader(features: Any, owner: str) -> Any:
    """Return ``features`` as a numpy array or a validated chunked reader."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    if isinstance(features, (list, tuple)):
        features = np.asarray(features)
    if not isinstance(features, FeatureReader) or features.shape is None:
        raise TypeError(
            f"The 'features' parameter of {owner} must be an [N, d] array or a chunked reader "
            f"(shape and slicing). Got {type(features).__name__} instead."
        )
    shape = features.shape
    if len(shape) != 2:
        raise ValueError(
            f"The 'features' parameter of {owner} must be 2-D [N, d]. "
            f"Got shape {tuple(shape)} instead."
        )
    if isinstance(features, TypedFeatureReader) and features.dtype is not None:
        try:
            kind = np.dtype(features.dtype).kind
        except TypeError:
            kind = "?"
        if kind not in "fiu":
            raise TypeError(
                f"The 'features' parameter of {owner} must be numeric. "
                f"Got dtype {features.dtype} instead."
            )
    return features


def check_k(k: Any, n: int, owner: str) -> int:
    """``k`` as an int in ``[0, n]``."""
    k = check_int(k, "k", owner, minimum=0)
    if k > n:
        raise ValueError(
            f"The 'k' parameter of {owner} must be at most the number of rows ({n}). "
            f"Got {k} instead."
        )
    return k


def check_chunk_rows(chunk_rows: Any, owner: str) -> int:
    return check_int(chunk_rows, "chunk_rows", owner, minimum=1)


def check_finite(rows: np.ndarray, first_row: np.ndarray | int, owner: str) -> None:
    """Refuse NaN/inf, naming up to five offending row numbers."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)[:5]
        numbers = first_row + bad if isinstance(first_row, int) else first_row[bad]
        raise ValueError(
            f"The 'features' parameter of {owner} must be finite. "
            f"Got NaN/inf in rows {np.asarray(numbers).tolist()} instead."
        )


def iter_blocks(
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
            check_finite(block, start, owner)
        yield start, block


def read_all(reader: Any, chunk_rows: int, owner: str) -> np.ndarray:
    """Every row of ``reader`` as one float32 ``[N, d]`` array (checked finite)."""
    n, d = (int(s) for s in reader.shape)
    out = np.empty((n, d), dtype=np.float32)
    for start, block in iter_blocks(reader, chunk_rows, owner):
        out[start : start + block.shape[0]] = block
    return out


def row_blocks(n: int, d: int) -> list[tuple[int, int]]:
    """Row ranges of an in-memory ``[n, d]`` array, each about 2^18 elements (cache-sized).

    No range holds a single row (unless n == 1): a one-row tensor may be summed by torch's
    parallel two-pass reduction, whose rounding differs from the per-row reduction the
    reference's ``[N, d]`` sum uses.
    """
    step = max(2, BLOCK_ELEMENTS // max(d, 1))
    bounds = [*range(0, n, step), n]
    if n > 1 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))

"""Flat arrays in the store: written once under a fresh prefix, read back checked against the
dtype, shape and checksum recorded for them (a buffer snapshot, a source index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import CorruptStoreError

from .connect import Connection

__all__ = [
    "CHUNK_ROWS",
    "CHUNK_BYTES",
    "checksum",
    "array_specs",
    "chunk_shape",
    "write_arrays",
    "read_arrays",
]

CHUNK_ROWS = 1 << 20  # rows per chunk of a flat array
CHUNK_BYTES = 64 << 20  # at most this many bytes per chunk of an array of rows [n, ...]


def checksum(arr: np.ndarray) -> str:
    """``"blake2b:<32 hex>"`` of the array's C-order bytes (16-byte digest)."""
    data = np.ascontiguousarray(arr)
    return "blake2b:" + hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def array_specs(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """What a manifest or source record says of each array: dtype, shape, checksum."""
    return {
        k: {"dtype": str(v.dtype), "shape": list(v.shape), "checksum": checksum(v)}
        for k, v in arrays.items()
    }


def write_arrays(conn: Connection, prefix: str, arrays: Mapping[str, np.ndarray]) -> None:
    """A new zarr group at ``prefix`` (which must not exist): one array per entry, chunked by
    ``CHUNK_ROWS`` rows. Not synced: call ``files.sync_tree(prefix)`` before publishing it."""
    import zarr

    conn.files.guard(prefix, write=True)  # zarr writes around the files layer
    group = zarr.open_group(store=conn.zarr_store, path=prefix, mode="w-")
    for key, value in arrays.items():
        value = np.ascontiguousarray(value)
        arr = group.create_array(
            key, shape=value.shape, dtype=value.dtype, chunks=chunk_shape(value)
        )
        if value.size:
            arr[...] = value


def chunk_shape(value: np.ndarray) -> tuple[int, ...]:
    """Chunks of whole rows: ``CHUNK_ROWS`` rows of a flat array; an array of rows
    ``[n, ...]`` (a payload column) is cut so a chunk holds at most ``CHUNK_BYTES``."""
    if value.ndim <= 1:
        return (max(1, min(len(value), CHUNK_ROWS)),)
    row_bytes = max(1, value.itemsize * int(np.prod(value.shape[1:])))
    rows = max(1, min(len(value), CHUNK_ROWS, CHUNK_BYTES // row_bytes))
    return (rows, *(max(1, d) for d in value.shape[1:]))


def read_arrays(conn: Connection, prefix: str, specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays ``specs`` lists under ``prefix``, each checked against its shape and checksum.

    Raises :class:`~memstore.errors.CorruptStoreError` naming the array on any mismatch or
    read failure. Cost: reads every byte once, O(total size).
    """
    import zarr

    conn.files.guard(prefix)  # zarr reads around the files layer
    out = {}
    for key, spec in specs.items():
        path = f"{prefix}/{key}"
        try:
            arr = zarr.open_array(store=conn.zarr_store, path=path, mode="r")
            value = arr[...] if arr.size else np.empty(arr.shape, dtype=arr.dtype)
        except Exception as err:  # zarr raises many types for a damaged chunk
            raise CorruptStoreError(
                f"{conn.url}/{path}: cannot read array ({type(err).__name__}: {err})."
            ) from err
        if (
            str(value.dtype) != spec["dtype"]
            or list(value.shape) != spec["shape"]
            or checksum(value) != spec["checksum"]
        ):
            raise CorruptStoreError(
                f"{conn.url}/{path}: content does not match the manifest's checksum "
                "(damaged or modified after commit)."
            )
        out[key] = value
    return out

"""Cached features in the store: ``features/<key>/values`` ``[N, d]`` in chunks of 4096 rows
and a ``done`` mask (one byte per row, same chunking).

A chunk's values are written before its mask, so a run killed mid-way loses at most the chunk
in flight and resumes where it stopped. One writer per chunk (zarr writes whole chunk files).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["FeatureCache", "FeatureCacheStore", "CHUNK_ROWS", "cache_key"]

CHUNK_ROWS = 4096


def cache_key(source_fingerprint: str, model_fingerprint: str, layer_name: str) -> str:
    """The cache entry of (source, model weights, layer): a short stable hash."""
    text = f"{source_fingerprint}|{model_fingerprint}|{layer_name}".encode()
    return hashlib.blake2b(text, digest_size=10).hexdigest()


@runtime_checkable
class FeatureCacheStore(Protocol):
    """What cached features need from a store (``memstore.Store`` implements it).

    The seam between feature-based selection (``feature_cache=`` of the strategies) and the
    store: the store owns where caches live; features only open or create one by key.
    """

    def open_feature_cache(self, key: str) -> FeatureCache | None:
        """The cache entry ``key`` if it exists, else ``None``."""
        ...

    def feature_cache(
        self, key: str, n: int, d: int, dtype: str = "float32", attrs: dict | None = None
    ) -> FeatureCache:
        """The cache entry ``key`` of shape ``[n, d]``, created (with ``attrs``) if absent."""
        ...


class FeatureCache:
    """Features of one source under one model/layer. Create with ``Store.feature_cache``."""

    def __init__(self, group: Any, read_only: bool) -> None:
        self.group = group
        self.values = group["values"]
        self.done = group["done"]
        self.read_only = read_only

    @classmethod
    def open(
        cls, zstore: Any, path: str, n: int, d: int, dtype: str, attrs: dict, read_only: bool
    ) -> FeatureCache:
        import zarr

        try:
            group = zarr.open_group(store=zstore, path=path, mode="r")
        except FileNotFoundError:
            if read_only:
                raise
            group = None
        if group is not None and "values" in group:
            existing = group["values"]
            if existing.shape != (n, d) or str(existing.dtype) != dtype:
                raise ValueError(
                    f"The feature cache at {path} holds {existing.shape} {existing.dtype}, "
                    f"not ({n}, {d}) {dtype}: a different source or model produced it."
                )
            return cls(
                zarr.open_group(store=zstore, path=path, mode="r" if read_only else "r+"), read_only
            )
        group = zarr.open_group(store=zstore, path=path, mode="a")
        group.attrs.update(attrs)
        group.create_array(
            "values", shape=(n, d), dtype=dtype, chunks=(CHUNK_ROWS, d), fill_value=0
        )
        group.create_array("done", shape=(n,), dtype="uint8", chunks=(CHUNK_ROWS,), fill_value=0)
        return cls(group, read_only)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """The ids among ``ids`` whose features are not stored yet (sorted)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if ids.size == 0:
            return ids
        lo, hi = int(ids[0]), int(ids[-1]) + 1
        mask = self.done[lo:hi]
        return ids[mask[ids - lo] == 0]

    def num_done(self) -> int:
        total = 0
        for start in range(0, self.values.shape[0], CHUNK_ROWS * 64):
            total += int(np.count_nonzero(self.done[start : start + CHUNK_ROWS * 64]))
        return total

    def write(self, ids: np.ndarray, features: np.ndarray) -> None:
        """Store rows (any order); values chunk first, then its mask chunk."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        ids, features = ids[order], np.asarray(features)[order]
        for lo, a, b in _chunk_runs(ids):
            hi = min(lo + CHUNK_ROWS, self.values.shape[0])
            rows = ids[a:b] - lo
            if b - a == hi - lo:  # the whole chunk: no read needed
                block = features[a:b].astype(self.values.dtype)
            else:
                block = self.values[lo:hi]
                block[rows] = features[a:b]
            self.values[lo:hi] = block
            mask = self.done[lo:hi]
            mask[rows] = 1
            self.done[lo:hi] = mask

    def read(self, ids: np.ndarray) -> np.ndarray:
        """Features of ``ids`` (float32), reading only the chunks that hold them."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.values.shape[1]), dtype=np.float32)
        if ids.size == 0:
            return out
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        for lo, a, b in _chunk_runs(sorted_ids):
            block = self.values[lo : min(lo + CHUNK_ROWS, self.values.shape[0])]
            out[order[a:b]] = block[sorted_ids[a:b] - lo]
        return out


def _chunk_runs(sorted_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """``(first row of the chunk, a, b)`` for each run ``sorted_ids[a:b]`` in one chunk."""
    if sorted_ids.size == 0:
        return []
    chunk_of = sorted_ids // CHUNK_ROWS
    bounds = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1], True])
    return [
        (int(chunk_of[a]) * CHUNK_ROWS, int(a), int(b))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]

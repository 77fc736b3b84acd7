"""Cached features in the store: ``features/<key>/values`` ``[N, d]`` in chunks of 4096 rows,
a ``done`` mask (one byte per row, same chunking), and per chunk a checksum file
``sums/<chunk>`` and, while a writer works on it, a claim ``claims/<chunk>``.

A chunk is written under its claim (one writer per chunk, :mod:`.claims`): values, then the
done mask, then the checksums of both. Every read checks them: a chunk whose values or mask
differ from its checksums, fail to decode, or hold stored rows without checksums (a writer
killed between the two writes) is *damaged*. Reads raise
:class:`~memstore.errors.CorruptStoreError` naming the chunk's file; ``cached_features``
recomputes the rows of damaged chunks instead (with a warning); ``damaged_chunks`` and
``mark_missing`` let a caller repair by hand. Damaged metadata (the ``zarr.json`` of the
entry or its arrays) is a ``CorruptStoreError`` naming that file when the entry is opened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memstore.errors import CorruptStoreError, ReadOnlyStoreError, SourceMismatchError
from memstore.io import Files

from .claims import ChunkClaims

__all__ = ["FeatureCache", "FeatureCacheStore", "Lookup", "CHUNK_ROWS", "cache_key"]

CHUNK_ROWS = 4096
SUMS_FORMAT = 1
# What zarr and its codecs raise on a damaged chunk (zstd: RuntimeError; size: ValueError).
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError, OSError)


def cache_key(source_fingerprint: str, model_fingerprint: str, layer_name: str) -> str:
    """The cache entry of (source, model weights, layer): a short stable hash."""
    text = f"{source_fingerprint}|{model_fingerprint}|{layer_name}".encode()
    return hashlib.blake2b(text, digest_size=10).hexdigest()


def _digest(block: np.ndarray) -> str:
    data = np.ascontiguousarray(block).astype(block.dtype.newbyteorder("<"), copy=False)
    return "blake2b:" + hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


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


@dataclass(frozen=True)
class Lookup:
    """What the cache holds for some ids: ``features`` (float32, zeros where not found),
    ``found`` (bool per id: stored in an undamaged chunk), ``damaged`` (chunk numbers) and
    ``problems`` (``(path, message)`` per damaged chunk)."""

    features: np.ndarray
    found: np.ndarray
    damaged: list[int]
    problems: list[tuple[str, str]]


class _Damage(Exception):
    """A damaged chunk (internal: turned into a CorruptStoreError or a recomputation)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


class FeatureCache:
    """Features of one source under one model/layer. Create with ``Store.feature_cache``.

    Args:
        group: the entry's zarr group (``values`` and ``done`` arrays).
        files: the store's file layer (checksums and claims are plain files).
        path: the entry's folder relative to the store root (``features/<key>``).
        read_only: refuse writes.
    """

    def __init__(self, group: Any, files: Files, path: str, read_only: bool) -> None:
        self.group, self.files, self.path, self.read_only = group, files, path, read_only
        self.values = group["values"]
        self.done = group["done"]
        self.claims = ChunkClaims(files, f"{path}/claims")

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def attach(cls, zstore: Any, files: Files, path: str, read_only: bool) -> FeatureCache:
        """Open the existing entry at ``path``, checking its metadata (else
        :class:`~memstore.errors.CorruptStoreError` naming the damaged ``zarr.json``)."""
        import zarr

        _check_metadata(files, path)
        try:
            group = zarr.open_group(store=zstore, path=path, mode="r" if read_only else "r+")
            cache = cls(group, files, path, read_only)
        except (*_DECODE_ERRORS, zarr.errors.BaseZarrError) as err:
            raise CorruptStoreError(
                f"The feature cache {path} is damaged ({type(err).__name__}: {err})."
            ) from err
        bad = _layout_problem(cache.values, cache.done)
        if bad:
            raise CorruptStoreError(
                f"The feature cache {path} is damaged ({bad}): its values/zarr.json or "
                "done/zarr.json was changed. Delete the entry to recompute it."
            )
        return cache

    @classmethod
    def open(
        cls,
        zstore: Any,
        files: Files,
        path: str,
        n: int,
        d: int,
        dtype: str,
        attrs: dict,
        read_only: bool,
    ) -> FeatureCache:
        """The entry at ``path`` of shape ``[n, d]``, created (with ``attrs``) if absent."""
        import zarr

        with ChunkClaims(files, f"{path}/claims").hold("create"):  # one creator
            if not cls.exists(files, path):
                group = zarr.open_group(store=zstore, path=path, mode="a")
                group.attrs.update(attrs)
                group.create_array(
                    "values", shape=(n, d), dtype=dtype, chunks=(CHUNK_ROWS, d), fill_value=0
                )
                group.create_array(
                    "done", shape=(n,), dtype="uint8", chunks=(CHUNK_ROWS,), fill_value=0
                )
                return cls(group, files, path, read_only)
        cache = cls.attach(zstore, files, path, read_only)
        if cache.shape != (n, d) or str(cache.values.dtype) != dtype:
            raise SourceMismatchError(
                f"The feature cache at {path} holds {cache.shape} {cache.values.dtype}, "
                f"not ({n}, {d}) {dtype}: a different source or model produced it."
            )
        return cache

    @staticmethod
    def exists(files: Files, path: str) -> bool:
        """Whether an entry was created at ``path`` (either array's metadata is there; a
        run killed while creating the group leaves neither, and the entry is created anew)."""
        return files.exists(f"{path}/values/zarr.json") or files.exists(f"{path}/done/zarr.json")

    # -- chunks --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    @property
    def num_chunks(self) -> int:
        return -(-self.values.shape[0] // CHUNK_ROWS)

    def _bounds(self, chunk: int) -> tuple[int, int]:
        lo = chunk * CHUNK_ROWS
        return lo, min(lo + CHUNK_ROWS, self.values.shape[0])

    def _sums_path(self, chunk: int) -> str:
        return f"{self.path}/sums/{chunk}"

    def _values_path(self, chunk: int) -> str:
        return f"{self.path}/values/c/{chunk}/0 (chunk {chunk})"

    def _done_path(self, chunk: int) -> str:
        return f"{self.path}/done/c/{chunk} (chunk {chunk})"

    def _sums(self, chunk: int) -> dict | None:
        where = self._sums_path(chunk)
        try:
            raw = self.files.read(where)
        except FileNotFoundError:
            return None
        try:
            sums = json.loads(raw)
            if not (isinstance(sums["values"], str) and isinstance(sums["done"], str)):
                raise TypeError("checksums are not strings")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise _Damage(f"{where} (chunk {chunk})", f"damaged checksum file ({err})") from err
        return sums

    def _load(self, chunk: int, *, values: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """``(values, done)`` of ``chunk`` checked against its checksums (else ``_Damage``).

        ``values=False`` reads and checks the done mask only (values come back ``None``).
        """
        lo, hi = self._bounds(chunk)
        sums = self._sums(chunk)
        try:
            mask = np.asarray(self.done[lo:hi])
        except _DECODE_ERRORS as err:
            raise _Damage(self._done_path(chunk), f"does not decode ({err})") from err
        if sums is None:
            if mask.any():
                raise _Damage(
                    f"{self._sums_path(chunk)} (chunk {chunk})",
                    "missing: rows are marked done without checksums",
                )
            zeros = np.zeros((hi - lo, self.values.shape[1]), self.values.dtype)
            return (zeros if values else None), mask
        if _digest(mask) != sums["done"]:
            raise _Damage(self._done_path(chunk), "does not match its checksum")
        if not values:
            return None, mask
        try:
            block = np.asarray(self.values[lo:hi])
        except _DECODE_ERRORS as err:
            raise _Damage(self._values_path(chunk), f"does not decode ({err})") from err
        if _digest(block) != sums["values"]:
            raise _Damage(self._values_path(chunk), "does not match its checksum")
        return block, mask

    def _load_settled(self, chunk: int, *, values: bool = True):
        """:meth:`_load`, waiting out a writer that holds the chunk's claim before judging."""
        try:
            return self._load(chunk, values=values)
        except _Damage:
            if not self.claims.held(chunk):
                raise
        self.claims.wait(chunk)
        return self._load(chunk, values=values)

    # -- reading -------------------------------------------------------------------------
    def lookup(self, ids: Any) -> Lookup:
        """What the cache holds for ``ids``: one checked read of every chunk they touch."""
        ids = np.asarray(ids, dtype=np.int64)
        self._check_ids(ids)
        out = np.zeros((len(ids), self.values.shape[1]), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        damaged: list[int] = []
        problems: list[tuple[str, str]] = []
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        for lo, a, b in _chunk_runs(sorted_ids):
            chunk = lo // CHUNK_ROWS
            try:
                block, mask = self._load_settled(chunk)
            except _Damage as err:
                damaged.append(chunk)
                problems.append((err.path, err.message))
                continue
            rows = sorted_ids[a:b] - lo
            out[order[a:b]] = block[rows]
            found[order[a:b]] = mask[rows] != 0
        return Lookup(out, found, damaged, problems)

    def read(self, ids: Any) -> np.ndarray:
        """Features of ``ids`` (float32), reading and checking only the chunks that hold them.

        Raises :class:`~memstore.errors.CorruptStoreError` naming the file of a damaged
        chunk, and ``KeyError`` for ids whose features are not stored.
        """
        got = self.lookup(ids)
        if got.damaged:
            path, message = got.problems[0]
            raise CorruptStoreError(
                f"The feature cache chunk {path} is damaged: {message}. Recompute it with "
                "cached_features (or mark_missing) or delete the entry."
            )
        if not got.found.all():
            lacking = np.asarray(ids, dtype=np.int64)[~got.found]
            raise KeyError(
                f"The feature cache {self.path} holds no features for ids {lacking[:10].tolist()}"
                f"{' and more' if len(lacking) > 10 else ''}. Compute them with cached_features."
            )
        return got.features

    def missing(self, ids: Any) -> np.ndarray:
        """The ids among ``ids`` whose features are not stored, or stored in a damaged chunk
        (sorted, unique). Reads and checks every chunk they touch."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        return ids[~self.lookup(ids).found]

    def num_done(self) -> int:
        """Rows stored in chunks whose done mask matches its checksum (values not read)."""
        total = 0
        for chunk in range(self.num_chunks):
            try:
                _, mask = self._load(chunk, values=False)
            except _Damage:
                continue
            total += int(np.count_nonzero(mask))
        return total

    def problems(self) -> list[tuple[str, str]]:
        """``(path, message)`` of every damaged chunk. Cost: reads the whole entry once."""
        out = []
        for chunk in range(self.num_chunks):
            try:
                self._load_settled(chunk)
            except _Damage as err:
                out.append((err.path, err.message))
        return out

    def damaged_chunks(self) -> list[int]:
        """Numbers of the damaged chunks, ascending. Cost: reads the whole entry once."""
        out = []
        for chunk in range(self.num_chunks):
            try:
                self._load_settled(chunk)
            except _Damage:
                out.append(chunk)
        return out

    # -- writing -------------------------------------------------------------------------
    def mark_missing(self, chunks: Any) -> None:
        """Forget the rows of ``chunks`` (e.g. the damaged ones): they become missing and the
        next ``cached_features`` recomputes them."""
        self._writable()
        for chunk in sorted({int(c) for c in np.asarray(chunks, dtype=np.int64).ravel()}):
            if not 0 <= chunk < self.num_chunks:
                raise ValueError(
                    f"The 'chunks' parameter of FeatureCache.mark_missing must hold chunk "
                    f"numbers in [0, {self.num_chunks}). Got {chunk} instead."
                )
            lo, hi = self._bounds(chunk)
            with self.claims.hold(chunk):
                self.done[lo:hi] = np.zeros(hi - lo, dtype=np.uint8)
                self.files.delete(self._sums_path(chunk))

    def write(self, ids: Any, features: Any) -> None:
        """Store rows (any order), chunk by chunk under the chunk's claim: merge with the
        rows already stored (a damaged chunk counts as empty), write values, done mask,
        checksums."""
        self._writable()
        ids = np.asarray(ids, dtype=np.int64)
        self._check_ids(ids)
        order = np.argsort(ids, kind="stable")
        ids, features = ids[order], np.asarray(features)[order]
        _check_unique(ids, self.path)
        for lo, a, b in _chunk_runs(ids):
            chunk = lo // CHUNK_ROWS
            hi = self._bounds(chunk)[1]
            rows = ids[a:b] - lo
            with self.claims.hold(chunk):
                if b - a == hi - lo:  # the whole chunk: nothing to merge
                    block = features[a:b].astype(self.values.dtype)
                    mask = np.ones(hi - lo, dtype=np.uint8)
                else:
                    try:
                        block, mask = self._load(chunk)
                        block, mask = block.copy(), mask.copy()
                    except _Damage:
                        block = np.zeros((hi - lo, self.values.shape[1]), self.values.dtype)
                        mask = np.zeros(hi - lo, dtype=np.uint8)
                    block[rows] = features[a:b]
                    mask[rows] = 1
                self.values[lo:hi] = block
                self.done[lo:hi] = mask
                sums = {"format": SUMS_FORMAT, "values": _digest(block), "done": _digest(mask)}
                self.files.write_file(self._sums_path(chunk), json.dumps(sums).encode())

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"The feature cache {self.path} is read-only.")

    def _check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.values.shape[0]):
            bad = ids[(ids < 0) | (ids >= self.values.shape[0])]
            raise ValueError(
                f"The ids of feature cache {self.path} must be in [0, {self.values.shape[0]}). "
                f"Got {bad[:10].tolist()} instead."
            )


def _check_unique(sorted_ids: np.ndarray, path: str) -> None:
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise ValueError(
            f"The ids written to feature cache {path} must be unique. Got duplicates "
            f"{np.unique(dup)[:5].tolist()} instead."
        )


def _check_metadata(files: Files, path: str) -> None:
    """Each ``zarr.json`` of the entry parses and is the node it should be."""
    for name in ("zarr.json", "values/zarr.json", "done/zarr.json"):
        where = f"{path}/{name}"
        try:
            doc = json.loads(files.read(where))
        except FileNotFoundError as err:
            raise CorruptStoreError(f"The feature cache file {where} is missing.") from err
        except (ValueError, UnicodeDecodeError) as err:
            raise CorruptStoreError(f"The feature cache file {where} is damaged: {err}.") from err
        want = "group" if name == "zarr.json" else "array"
        if not isinstance(doc, dict) or doc.get("node_type") != want:
            raise CorruptStoreError(
                f"The feature cache file {where} is damaged: not a zarr {want}."
            )


def _layout_problem(values: Any, done: Any) -> str | None:
    """What is wrong with the arrays' shapes, dtypes or chunks, if anything."""
    if len(values.shape) != 2 or str(values.dtype) not in ("float32", "float16"):
        return f"values is {values.shape} {values.dtype}, not [N, d] float32/float16"
    if tuple(values.chunks) != (CHUNK_ROWS, values.shape[1]):
        return f"values has chunks {values.chunks}, not ({CHUNK_ROWS}, d)"
    if done.shape != values.shape[:1] or str(done.dtype) != "uint8":
        return f"done is {done.shape} {done.dtype}, not [{values.shape[0]}] uint8"
    if tuple(done.chunks) != (CHUNK_ROWS,):
        return f"done has chunks {done.chunks}, not ({CHUNK_ROWS},)"
    return None


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

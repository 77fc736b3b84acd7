"""A persisted IVF index for repeated approximate selection over one cached feature set.

Building the index (k-means, assigning every row) is most of an approximate herding run at
10^7 rows; re-selecting over the same features (a buffer resized, a strategy re-run) can
reuse it. :class:`IndexCache` names where it lives — a writable zarr group, e.g. the feature
cache entry's (:meth:`IndexCache.in_feature_cache`) — and a *key* that must change whenever the
features do (the caller's fingerprint). The index is written with ``faiss.write_index``
streamed into a 1-D ``uint8`` zarr array (never pickle), in 64 MiB pieces, with a SHA-256
checksum (hardware-accelerated: ~2× blake2b here; indexes saved with the former blake2b
checksum still load) and the build parameters in its attributes; reading streams it back through
``faiss.read_index`` while hashing, and returns it only if the checksum, the parameters and
the index's own shape agree. A damaged index is never used: it is rebuilt with a warning, or
(``on_damage="raise"``) a :class:`~memstore.errors.CorruptStoreError` names it. A key or
parameters that differ are not damage: the index is simply rebuilt and replaced.
Cost: writing or reading ``N·(4·d + 8)`` bytes once; memory one piece beyond the index.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from memstore.errors import CorruptStoreError, ReadOnlyStoreError

__all__ = ["IndexCache", "save_index", "load_index", "INDEX_FORMAT"]

INDEX_FORMAT = 1
PIECE_BYTES = 1 << 26  # 64 MiB per zarr chunk and per write
#: checksum algorithms an index may name (``"<name>:<hex>"``); new indexes use the first.
CHECKSUMS = {"sha256": lambda: hashlib.sha256(), "blake2b": lambda: hashlib.blake2b(digest_size=16)}


@dataclass(frozen=True)
class IndexCache:
    """Where approximate herding keeps its IVF index, and what it was built from.

    Args:
        group: a writable zarr group.
        key: names the features (change it whenever they change).
        name: the array's name in ``group``.
        on_damage: ``"rebuild"`` (warn, rebuild, replace) or ``"raise"``
            (:class:`~memstore.errors.CorruptStoreError`).
    """

    group: Any
    key: str
    name: str = "ivf_index"
    on_damage: str = "rebuild"

    @classmethod
    def in_feature_cache(cls, entry: Any, key: str, **options: Any) -> IndexCache:
        """The ``index`` group of a feature cache entry (``Store.feature_cache``): the index
        lives beside the features it was built from, ``features/<key>/index/``."""
        if entry.read_only:
            raise ReadOnlyStoreError(f"The feature cache {entry.path} is read-only.")
        return cls(entry.group.require_group("index"), key, **options)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not isinstance(self.name, str):
            raise TypeError(
                "The 'key' and 'name' parameters of IndexCache must be str. "
                f"Got {type(self.key).__name__} and {type(self.name).__name__} instead."
            )
        if self.on_damage not in ("rebuild", "raise"):
            raise ValueError(
                "The 'on_damage' parameter of IndexCache must be 'rebuild' or 'raise'. "
                f"Got {self.on_damage!r} instead."
            )


def save_index(cache: IndexCache, index: Any, center: np.ndarray, params: dict) -> None:
    """Write ``index`` (streamed, checksummed) with ``center`` and ``params`` to ``cache``."""
    import faiss

    algorithm = next(iter(CHECKSUMS))
    digest = CHECKSUMS[algorithm]()
    pending: list[bytes] = []
    size = [0, 0]  # bytes pending, bytes written
    arrays: list[Any] = []

    def flush(final: bool = False) -> None:
        data = b"".join(pending)
        pending.clear()
        cut = len(data) if final else len(data) // PIECE_BYTES * PIECE_BYTES
        if cut < len(data):  # whole chunks only: no chunk is read back and rewritten
            pending.append(data[cut:])
        size[0] = len(data) - cut
        piece = np.frombuffer(data, dtype=np.uint8, count=cut)
        if not arrays:  # a small index is one chunk of its own size
            chunk = max(1, piece.size) if final else PIECE_BYTES
            arrays.append(
                cache.group.create_array(
                    cache.name,
                    shape=(0,),
                    dtype="uint8",
                    chunks=(chunk,),
                    compressors=None,  # float codes barely compress; the checksum guards
                    overwrite=True,
                    # zarr's all-fill-value test of every written chunk cost 7× the write
                    config={"write_empty_chunks": True},
                )
            )
        arr = arrays[0]
        arr.resize((size[1] + piece.size,))
        arr[size[1] :] = piece
        size[1] += piece.size

    def write(chunk: bytes) -> int:
        data = bytes(chunk)
        digest.update(data)
        pending.append(data)
        size[0] += len(data)
        if size[0] >= PIECE_BYTES:
            flush()
        return len(data)

    writer = faiss.PyCallbackIOWriter(write)
    faiss.write_index(index, writer)
    del writer  # flushes FAISS's own buffer into ``write``
    if pending or not arrays:
        flush(final=True)
    arrays[0].attrs.update(
        {
            "format": INDEX_FORMAT,
            "key": cache.key,
            "params": params,
            "center": [float(v) for v in center],
            "nbytes": size[1],
            "checksum": f"{algorithm}:{digest.hexdigest()}",
        }
    )


def load_index(cache: IndexCache, params: dict) -> tuple[Any, np.ndarray] | None:
    """The index and center saved for ``cache.key`` and ``params``, or ``None`` when there is
    none for them (or it was damaged and ``on_damage="rebuild"``, with a warning)."""
    import faiss

    if cache.name not in cache.group:
        return None
    where = f"{cache.group.path or '.'}/{cache.name}"
    try:
        arr = cache.group[cache.name]
        attrs = dict(arr.attrs)
    except Exception as err:  # zarr raises many kinds on damaged metadata
        return _damaged(cache, where, f"unreadable metadata ({type(err).__name__})")
    if attrs.get("key") != cache.key or attrs.get("params") != params:
        return None  # other features or parameters: not damage, rebuild
    if attrs.get("format") != INDEX_FORMAT or arr.dtype != np.uint8 or arr.ndim != 1:
        return _damaged(cache, where, "not a memstore IVF index array")
    if arr.shape[0] != attrs.get("nbytes"):
        return _damaged(cache, where, f"{arr.shape[0]} bytes, expected {attrs.get('nbytes')}")
    algorithm = str(attrs.get("checksum", "")).partition(":")[0]
    if algorithm not in CHECKSUMS:
        return _damaged(cache, where, f"unknown checksum {attrs.get('checksum')!r}")
    digest = CHECKSUMS[algorithm]()
    state = {"piece": b"", "pos": 0, "next": 0}

    def read(nbytes: int) -> bytes:
        out = []
        while nbytes > 0:
            if state["pos"] == len(state["piece"]):
                if state["next"] >= arr.shape[0]:
                    break
                stop = min(arr.shape[0], state["next"] + PIECE_BYTES)
                state["piece"] = np.asarray(arr[state["next"] : stop]).tobytes()
                digest.update(state["piece"])
                state["next"], state["pos"] = stop, 0
            take = min(nbytes, len(state["piece"]) - state["pos"])
            out.append(state["piece"][state["pos"] : state["pos"] + take])
            state["pos"] += take
            nbytes -= take
        return b"".join(out)

    try:
        index = faiss.read_index(faiss.PyCallbackIOReader(read))
        while state["next"] < arr.shape[0]:  # hash any bytes FAISS did not need
            read(PIECE_BYTES)
    except Exception as err:  # FAISS raises RuntimeError, zarr its own on a damaged chunk
        return _damaged(cache, where, f"does not decode ({type(err).__name__})")
    if f"{algorithm}:{digest.hexdigest()}" != attrs.get("checksum"):
        return _damaged(cache, where, "its bytes differ from their checksum")
    center = np.asarray(attrs.get("center"), dtype=np.float64)
    if index.ntotal != params.get("n") or index.d != params.get("d") or center.shape != (index.d,):
        return _damaged(cache, where, "its index does not match its parameters")
    return index, center


def _damaged(cache: IndexCache, where: str, why: str) -> None:
    message = f"The IVF index {where} is damaged ({why})."
    if cache.on_damage == "raise":
        raise CorruptStoreError(message + " Delete it to rebuild.")
    warnings.warn(message + " Rebuilding it.", stacklevel=3)
    return None

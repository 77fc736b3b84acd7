"""The index side of shard sources: building the index in one streaming pass over every shard,
reusing an index saved in a store, change detection (per-shard size plus a blake2b of the size
and the first and last 64 KiB), the fingerprint, and conversion to the saved record and arrays.

The format is described in :mod:`memstore.shards`. Functions here take the
:class:`~memstore.shards.ShardSource` being opened and read or set its private index fields;
tar parsing lives in :mod:`memstore._tar`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from memstore.errors import CorruptStoreError, FormatVersionError, SourceMismatchError

from .tar import SCAN_CHUNK, group_samples, scan_tar

if TYPE_CHECKING:
    from .source import ShardSource

__all__ = [
    "INDEX_FORMAT",
    "build_index",
    "compute_fingerprint",
    "index_arrays",
    "index_record",
]

INDEX_FORMAT = 1
_OWNER = "ShardSource"  # error messages name the public class
_HASH_SPAN = 64 << 10  # head and tail hashed for change detection


def _hash_ranges(size: int) -> list[tuple[int, int]]:
    """Byte ranges hashed for change detection: head and tail (the whole file if small)."""
    if size <= 2 * _HASH_SPAN:
        return [(0, size)] if size else []
    return [(0, _HASH_SPAN), (size - _HASH_SPAN, size)]


def _shard_states(src: ShardSource) -> tuple[list[int], list[str]]:
    """Per shard: size and blake2b of (size, first and last 64 KiB). No mtime involved."""
    sizes = []
    for url, path in zip(src.urls, src._paths, strict=True):
        try:
            sizes.append(os.stat(path).st_size if src._fs is None else src._fs.size(path))
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"Shard {url!r} of {_OWNER} {src.name!r} does not exist."
            ) from err
    ranges = [(s, a, b) for s, size in enumerate(sizes) for a, b in _hash_ranges(size)]
    if src._fs is None:
        got = [src._read_local(s, a, b) for s, a, b in ranges]
    elif ranges:
        shard_of, starts, ends = zip(*ranges, strict=True)
        paths = [src._paths[s] for s in shard_of]
        got = src._fs.cat_ranges(paths, list(starts), list(ends), on_error="raise")
    else:
        got = []
    hashers = [hashlib.blake2b(b"%d\0" % size, digest_size=16) for size in sizes]
    for (s, _, _), data in zip(ranges, got, strict=True):
        hashers[s].update(data)
    return [int(n) for n in sizes], [h.hexdigest() for h in hashers]


def _index_shard(src: ShardSource, s: int, members: list[str] | None, bar: Any) -> dict:
    if src._fs is None:
        stream = open(src._paths[s], "rb")  # noqa: SIM115 - closed below
    else:
        stream = src._fs.open(src._paths[s], "rb", block_size=SCAN_CHUNK)
    with stream:
        scan = scan_tar(stream, src.urls[s], src.target_key, bar.update)
    return group_samples(src.urls[s], scan, members, src.target_key)


def build_index(src: ShardSource, store: Any, reindex: bool, progress: bool) -> None:
    """Set ``src``'s index fields: reuse the parts of a saved index whose shards are unchanged,
    scan the other shards, and write the index back to ``store`` when anything changed."""
    sizes, hashes = _shard_states(src)
    parts: dict[int, dict] = {}
    members = None
    saved = store.read_source_index(src.name) if store is not None else None
    if saved is not None:
        record, arrays = saved
        parts, members, changed = _reuse(src, record, arrays, sizes, hashes)
        if changed:
            names = ", ".join(
                repr(src.urls[s]) if s < len(src.urls) else str(s) for s in changed[:5]
            )
            msg = (
                f"{_OWNER} {src.name!r}: shard(s) {names}"
                f"{' and more' if len(changed) > 5 else ''} differ from the index saved "
                "in the store (size or content hash changed, or the shard list changed)"
            )
            if not reindex:
                raise SourceMismatchError(msg + ". Pass reindex=True to re-index them.")
            warnings.warn(msg + "; re-indexing them.", stacklevel=3)
    todo = [s for s in range(len(src.urls)) if s not in parts]
    from tqdm.auto import tqdm

    with tqdm(
        total=sum(sizes[s] for s in todo),
        unit="B",
        unit_scale=True,
        desc=f"indexing {src.name}",
        disable=not progress or not todo,
    ) as bar:
        for s in todo:
            parts[s] = _index_shard(src, s, members, bar)
            members = members or parts[s]["members"]
    members = members or [src.target_key]
    ordered = [parts[s] for s in range(len(src.urls))]
    src.members = tuple(members)
    counts = np.asarray([len(p["targets"]) for p in ordered], dtype=np.int64)
    src._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    src._shard = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    src._keys = np.concatenate([p["keys"] for p in ordered]).astype("S")
    src._targets = np.concatenate([p["targets"] for p in ordered])
    m = len(members)
    src._offsets = np.concatenate([p["offsets"].reshape(-1, m) for p in ordered])
    src._sizes = np.concatenate([p["sizes"].reshape(-1, m) for p in ordered])
    for arr in (src._shard, src._keys, src._targets, src._offsets, src._sizes):
        arr.setflags(write=False)
    src._shard_sizes, src._shard_hashes = sizes, hashes
    src._fingerprint = compute_fingerprint(src)
    src.indexed_shards = tuple(todo)
    if store is not None and (todo or saved is None or saved[0].get("shards") != src.urls):
        store.write_source_index(src.name, index_record(src), index_arrays(src))


def _reuse(src: ShardSource, record: dict, arrays: dict, sizes: list[int], hashes: list[str]):
    """Split a saved index into per-shard parts for the shards whose size and hash match."""
    where = f"sources/{src.name}"
    if record.get("kind") != "shards":
        raise SourceMismatchError(
            f"The store's {where} holds a {record.get('kind')!r} source, not shards. "
            f"Pass another name= to {_OWNER}."
        )
    if int(record.get("format", 0)) > INDEX_FORMAT:
        raise FormatVersionError(
            f"The store's {where} index has format {record.get('format')}; this memstore "
            f"reads up to {INDEX_FORMAT}. Upgrade memstore."
        )
    try:
        members = list(record["members"])
        counts = np.asarray(record["shard_counts"], dtype=np.int64)
        width = int(record["key_width"])
        n = int(counts.sum())
        keys = np.ascontiguousarray(np.asarray(arrays["keys"], dtype=np.uint8))
        keys = keys.view(f"S{width}") if width else np.zeros(n, dtype="S1")
        targets = np.asarray(arrays["targets"], dtype=np.int64)
        offsets = np.stack([np.asarray(arrays[f"offset_{m}"]) for m in members], axis=1)
        size_arr = np.stack([np.asarray(arrays[f"size_{m}"]) for m in members], axis=1)
        offsets, size_arr = offsets.astype(np.int64), size_arr.astype(np.int64)
        if not (n == record["length"] == len(keys) == len(targets) == len(offsets)):
            raise ValueError("array lengths disagree with the record")
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise CorruptStoreError(
            f"The store's {where} shard index is damaged ({err}). Remove it to re-index."
        ) from err
    same_config = record.get("target_key") == src.target_key
    if not same_config or len(counts) != len(sizes):
        return {}, None, list(range(len(sizes)))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    parts, changed = {}, []
    for s in range(len(sizes)):
        if record["shard_sizes"][s] != sizes[s] or record["shard_hashes"][s] != hashes[s]:
            changed.append(s)
            continue
        sl = slice(int(bounds[s]), int(bounds[s + 1]))
        parts[s] = {
            "members": members,
            "keys": keys[sl],
            "targets": targets[sl],
            "offsets": offsets[sl],
            "sizes": size_arr[sl],
        }
    return parts, members, changed


def compute_fingerprint(src: ShardSource) -> str:
    """``"<len>:<hash>"`` over shard sizes and content hashes, keys and targets."""
    h = hashlib.blake2b(digest_size=10)
    h.update(
        json.dumps(
            [src.target_key, list(src.members), src._shard_sizes, src._shard_hashes]
        ).encode()
    )
    h.update(np.diff(src._starts).tobytes())
    h.update(src._keys.tobytes())
    h.update(src._targets.tobytes())
    return f"{len(src)}:{h.hexdigest()}"


def index_record(src: ShardSource) -> dict[str, Any]:
    """The JSON part of ``src``'s index (what ``store.write_source_index`` receives)."""
    return {
        "kind": "shards",
        "format": INDEX_FORMAT,
        "spec": src.spec,
        "shards": src.urls,
        "shard_sizes": list(src._shard_sizes),
        "shard_hashes": list(src._shard_hashes),
        "shard_counts": np.diff(src._starts).tolist(),
        "target_key": src.target_key,
        "members": list(src.members),
        "key_width": src._keys.dtype.itemsize,
        "length": len(src),
        "fingerprint": src._fingerprint,
    }


def index_arrays(src: ShardSource) -> dict[str, np.ndarray]:
    """The array part of ``src``'s index, all 1-D: ``keys`` (uint8, ``key_width`` per sample),
    ``targets``, ``offset_<ext>`` and ``size_<ext>`` per member."""
    out = {"keys": np.ascontiguousarray(src._keys).view(np.uint8), "targets": src._targets}
    for c, ext in enumerate(src.members):
        out[f"offset_{ext}"] = np.ascontiguousarray(src._offsets[:, c])
        out[f"size_{ext}"] = np.ascontiguousarray(src._sizes[:, c])
    return out

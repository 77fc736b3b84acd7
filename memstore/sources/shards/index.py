"""The index of a shard source: built in one streaming pass over every shard, or reused from an
index saved in a store; change detection (per-shard size plus a blake2b of the size and the
first and last 64 KiB); the fingerprint; conversion to the saved record and arrays.

The bytes are described in ``FORMAT.md`` next to this module. Everything here works on explicit
values and the public :class:`ShardIndex`; tar parsing lives in :mod:`.tar`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memstore.errors import (
    CorruptStoreError,
    FormatVersionError,
    SourceMismatchError,
    SourceNotFoundError,
)

from ..base import SourceIndexStore
from .files import ShardFiles
from .tar import SCAN_CHUNK, group_samples, scan_tar

__all__ = [
    "INDEX_FORMAT",
    "ShardIndex",
    "build_index",
    "shard_states",
    "compute_fingerprint",
    "content_hashes",
]

INDEX_FORMAT = 1
_OWNER = "ShardSource"  # error messages name the public class
_HASH_SPAN = 64 << 10  # head and tail hashed for change detection


@dataclass(frozen=True, eq=False)
class ShardIndex:
    """Where every sample's members are (all arrays read-only).

    Attributes:
        urls: shard URLs in order; ``target_key``: the target member; ``members``: member
            extensions, sorted.
        starts: first sample id of each shard, plus the length at the end (int64).
        shard: shard number of each sample (int32); ``keys``: ``__key__`` (bytes ``S<w>``);
            ``targets``: class (int64).
        offsets, sizes: ``[N, len(members)]`` int64: byte offset of each member's data (after
            its tar header) and its size.
        shard_sizes, shard_hashes: what change detection compares; ``fingerprint``: see
            :func:`compute_fingerprint`; ``content_hashes``: blake2b of each shard's whole
            content (what ``reindex="verify"`` compares), ``None`` where not computed.
    """

    urls: list[str]
    target_key: str
    members: tuple[str, ...]
    starts: np.ndarray
    shard: np.ndarray
    keys: np.ndarray
    targets: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    shard_sizes: list[int]
    shard_hashes: list[str]
    fingerprint: str
    content_hashes: list[str | None] | None = None  # full-content blake2b per shard, if known

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def record(self, spec: Any) -> dict[str, Any]:
        """The JSON part of the index (what ``store.write_source_index`` receives)."""
        return {
            "kind": "shards",
            "format": INDEX_FORMAT,
            "spec": spec,
            "shards": self.urls,
            "shard_sizes": list(self.shard_sizes),
            "shard_hashes": list(self.shard_hashes),
            "shard_content_hashes": list(self.content_hashes or [None] * len(self.urls)),
            "shard_counts": np.diff(self.starts).tolist(),
            "target_key": self.target_key,
            "members": list(self.members),
            "key_width": self.keys.dtype.itemsize,
            "length": len(self),
            "fingerprint": self.fingerprint,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The array part of the index, all 1-D: ``keys`` (uint8, ``key_width`` per sample),
        ``targets``, ``offset_<ext>`` and ``size_<ext>`` per member."""
        out = {"keys": np.ascontiguousarray(self.keys).view(np.uint8), "targets": self.targets}
        for c, ext in enumerate(self.members):
            out[f"offset_{ext}"] = np.ascontiguousarray(self.offsets[:, c])
            out[f"size_{ext}"] = np.ascontiguousarray(self.sizes[:, c])
        return out


def _hash_ranges(size: int) -> list[tuple[int, int]]:
    """Byte ranges hashed for change detection: head and tail (the whole file if small)."""
    if size <= 2 * _HASH_SPAN:
        return [(0, size)] if size else []
    return [(0, _HASH_SPAN), (size - _HASH_SPAN, size)]


def shard_states(files: ShardFiles, urls: Sequence[str], name: str) -> tuple[list[int], list[str]]:
    """Per shard: size and blake2b of (size, first and last 64 KiB). No mtime involved."""
    sizes = []
    for s, url in enumerate(urls):
        try:
            sizes.append(files.size(s))
        except FileNotFoundError as err:
            raise SourceNotFoundError(
                f"Shard {url!r} of {_OWNER} {name!r} does not exist."
            ) from err
    ranges = [(s, a, b) for s, size in enumerate(sizes) for a, b in _hash_ranges(size)]
    got = files.read_ranges(*map(list, zip(*ranges, strict=True))) if ranges else []
    hashers = [hashlib.blake2b(b"%d\0" % size, digest_size=16) for size in sizes]
    for (s, _, _), data in zip(ranges, got, strict=True):
        hashers[s].update(data)
    return [int(n) for n in sizes], [h.hexdigest() for h in hashers]


def content_hashes(files: ShardFiles, urls: Sequence[str]) -> list[str]:
    """Per shard: blake2b (16 bytes) of its whole content. Cost: one full read of every shard."""
    out = []
    for s in range(len(urls)):
        h = hashlib.blake2b(digest_size=16)
        with files.open_stream(s, SCAN_CHUNK) as stream:
            while block := stream.read(SCAN_CHUNK):
                h.update(block)
        out.append(h.hexdigest())
    return out


def _index_shard(
    files: ShardFiles, url: str, s: int, target_key: str, members: list[str] | None, bar: Any
) -> dict:
    with files.open_stream(s, SCAN_CHUNK) as stream:
        scan = scan_tar(stream, url, target_key, bar.update)
    return group_samples(url, scan, members, target_key)


def build_index(
    files: ShardFiles,
    urls: list[str],
    *,
    name: str,
    target_key: str,
    spec: Any,
    store: SourceIndexStore | None,
    reindex: bool | str,
    progress: bool,
) -> tuple[ShardIndex, tuple[int, ...]]:
    """The index of shards ``urls`` and the shards that were scanned.

    Reuses the parts of an index saved in ``store`` under ``name`` whose shards are unchanged,
    scans the other shards, and writes the index back to ``store`` when anything changed.
    ``reindex="verify"`` also compares every shard's full-content hash with the recorded one
    (one full read of every shard) and re-indexes shards that differ or have none recorded.
    """
    sizes, hashes = shard_states(files, urls, name)
    full = content_hashes(files, urls) if reindex == "verify" else None
    recorded_full: list = [None] * len(urls)
    parts: dict[int, dict] = {}
    members = None
    saved = store.read_source_index(name) if store is not None else None
    if saved is not None:
        record, arrays = saved
        parts, members, changed = _reuse(name, target_key, record, arrays, sizes, hashes)
        recorded_full = _recorded_content_hashes(record, len(urls))
        if full is not None:
            unknown = [s for s in parts if recorded_full[s] is None]
            edited = [s for s in parts if recorded_full[s] not in (None, full[s])]
            if unknown:
                warnings.warn(
                    f"{_OWNER} {name!r}: {len(unknown)} shard(s) have no content hash in the "
                    "saved index (indexed without reindex='verify'); re-indexing them.",
                    stacklevel=3,
                )
            for s in unknown + edited:
                del parts[s]
            changed = sorted(set(changed) | set(edited))
        if changed:
            names = ", ".join(repr(urls[s]) if s < len(urls) else str(s) for s in changed[:5])
            msg = (
                f"{_OWNER} {name!r}: shard(s) {names}"
                f"{' and more' if len(changed) > 5 else ''} differ from the index saved "
                "in the store (size or content hash changed, or the shard list changed)"
            )
            if not reindex:
                raise SourceMismatchError(msg + ". Pass reindex=True to re-index them.")
            warnings.warn(msg + "; re-indexing them.", stacklevel=3)
    todo = [s for s in range(len(urls)) if s not in parts]
    from tqdm.auto import tqdm

    with tqdm(
        total=sum(sizes[s] for s in todo),
        unit="B",
        unit_scale=True,
        desc=f"indexing {name}",
        disable=not progress or not todo,
    ) as bar:
        for s in todo:
            parts[s] = _index_shard(files, urls[s], s, target_key, members, bar)
            members = members or parts[s]["members"]
    members = members or [target_key]
    ordered = [parts[s] for s in range(len(urls))]
    counts = np.asarray([len(p["targets"]) for p in ordered], dtype=np.int64)
    m = len(members)
    arrays = {
        "starts": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "shard": np.repeat(np.arange(len(counts), dtype=np.int32), counts),
        "keys": np.concatenate([p["keys"] for p in ordered]).astype("S"),
        "targets": np.concatenate([p["targets"] for p in ordered]),
        "offsets": np.concatenate([p["offsets"].reshape(-1, m) for p in ordered]),
        "sizes": np.concatenate([p["sizes"].reshape(-1, m) for p in ordered]),
    }
    for key in ("shard", "keys", "targets", "offsets", "sizes"):
        arrays[key].setflags(write=False)
    fp = compute_fingerprint(
        target_key, members, sizes, hashes, arrays["starts"], arrays["keys"], arrays["targets"]
    )
    if full is None:  # keep what is known of unchanged shards, nothing of scanned ones
        full = [None if s in todo else recorded_full[s] for s in range(len(urls))]
    index = ShardIndex(
        urls=list(urls),
        content_hashes=list(full),
        target_key=target_key,
        members=tuple(members),
        shard_sizes=sizes,
        shard_hashes=hashes,
        fingerprint=fp,
        **arrays,
    )
    if store is not None and (
        todo or saved is None or saved[0].get("shards") != urls or recorded_full != list(full)
    ):
        store.write_source_index(name, index.record(spec), index.arrays())
    return index, tuple(todo)


def _recorded_content_hashes(record: dict, n: int) -> list[str | None]:
    """The record's ``shard_content_hashes`` (absent before they existed: all ``None``)."""
    got = record.get("shard_content_hashes")
    if not isinstance(got, list) or len(got) != n:
        return [None] * n
    return [h if isinstance(h, str) else None for h in got]


def _reuse(
    name: str, target_key: str, record: dict, arrays: dict, sizes: list[int], hashes: list[str]
):
    """Split a saved index into per-shard parts for the shards whose size and hash match."""
    where = f"sources/{name}"
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
    same_config = record.get("target_key") == target_key
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


def compute_fingerprint(
    target_key: str,
    members: Sequence[str],
    shard_sizes: Sequence[int],
    shard_hashes: Sequence[str],
    starts: np.ndarray,
    keys: np.ndarray,
    targets: np.ndarray,
) -> str:
    """``"<len>:<hash>"`` over the target key, members, shard sizes and content hashes, samples
    per shard, keys and targets."""
    h = hashlib.blake2b(digest_size=10)
    h.update(
        json.dumps([target_key, list(members), list(shard_sizes), list(shard_hashes)]).encode()
    )
    h.update(np.diff(starts).tobytes())
    h.update(keys.tobytes())
    h.update(targets.tobytes())
    return f"{len(targets)}:{h.hexdigest()}"

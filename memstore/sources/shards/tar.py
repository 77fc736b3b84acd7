"""The tar side of shard sources: one streaming pass over a webdataset tar that records each
member's data offset and size (payloads skipped, except the target's), and grouping of members
into samples. Member bytes are decoded in :mod:`.decode`.

Tar layout read here: 512-byte headers (ustar / GNU / v7, checksum verified when not ustar; the
POSIX ``prefix`` field only under the POSIX magic), pax ``x`` headers (``path``, ``size``), pax
globals ``g`` (skipped) and GNU long names ``L``; a member's data follows its header, padded to
512 bytes; a zero block ends the archive. As webdataset's tar reader does, a member
``dir/key.ext.more`` belongs to sample ``dir/key`` with extension ``ext.more`` (lower-cased);
names without an extension and ``__meta__``-style names are skipped. Compressed shards
(``.tar.gz`` and others) are refused: byte offsets into a compressed stream cannot be read by
random access.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from memstore.errors import CorruptShardError

__all__ = [
    "BLOCK",
    "SCAN_CHUNK",
    "Window",
    "scan_tar",
    "group_samples",
    "split_name",
]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
SCAN_CHUNK = 8 << 20  # bytes read per call while indexing
_POSIX_MAGIC = b"ustar\0"  # GNU headers say b"ustar  \0" and have no prefix field
_SKIP_META = re.compile(r"__[^/]*__($|/)")  # the names webdataset's tar reader skips
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
}


# -- one streaming pass over a tar ------------------------------------------------------------
class Window:
    """A sliding window over a sequential stream: ``cover(a, b)`` makes ``buf`` hold bytes
    ``[a, b)`` (``base`` = offset of ``buf[0]``), dropping what lies before ``a``."""

    def __init__(self, stream: Any, on_bytes: Callable[[int], Any]) -> None:
        self.stream, self.on_bytes = stream, on_bytes
        self.seekable = bool(stream.seekable())
        self.buf, self.base = b"", 0

    def cover(self, start: int, end: int) -> bool:
        buf_end = self.base + len(self.buf)
        if self.base <= start and end <= buf_end:
            return True
        if start < buf_end:
            self.buf = self.buf[start - self.base :]
        else:
            gap = start - buf_end
            if gap and self.seekable:
                self.stream.seek(start)
                self.on_bytes(gap)
                gap = 0
            while gap > 0:
                skipped = len(self.stream.read(min(gap, SCAN_CHUNK)))
                if not skipped:
                    return False
                self.on_bytes(skipped)
                gap -= skipped
            self.buf = b""
        self.base = start
        while self.base + len(self.buf) < end:
            chunk = self.stream.read(max(SCAN_CHUNK, end - self.base - len(self.buf)))
            if not chunk:
                return False
            self.on_bytes(len(chunk))
            self.buf += chunk
        return True


def _octal(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    field = field.strip(b"\0 ")
    return int(field, 8) if field else 0


def _pax_records(payload: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(payload):
        space = payload.index(b" ", pos)
        length = int(payload[pos:space])
        key, _, value = payload[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _refuse_compressed(head: bytes, url: str) -> None:
    """Raise ValueError when ``head`` (a shard's first bytes) starts a compressed stream."""
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise ValueError(
                f"Shard {url!r} is {kind}-compressed. A ShardSource reads members by byte "
                "offset, which a compressed stream does not allow; decompress the shards first "
                f"(e.g. `gzip -dk` gives the plain .tar) and pass those."
            )


def split_name(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name as webdataset's tar reader splits it (key: the
    path up to the first dot of the file name; extension lower-cased), or ``None`` for the
    names it skips (no extension, ``__meta__``-style)."""
    if ("/" not in name and name.startswith("__") and name.endswith("__")) or _SKIP_META.match(
        name
    ):
        return None
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot > slash + 1:
        return name[:dot], name[dot + 1 :].lower()
    from webdataset.tariterators import base_plus_ext  # rare names: webdataset's own rule

    key, ext = base_plus_ext(name)
    return None if key is None else (key, ext.lower())


def scan_tar(stream: Any, url: str, target_key: str, on_bytes: Callable[[int], Any]):
    """Read every tar header of one shard (payloads are skipped, except target members).

    Returns per-member lists ``(keys, exts, data_offsets, sizes)`` and the parsed targets
    ``(member_positions, values)``. Cost: one sequential read of the shard, O(members) Python.
    """
    win = Window(stream, on_bytes)
    keys: list[str] = []
    exts: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    tpos: list[int] = []
    tvals: list[int] = []
    pos, long_name, pax = 0, None, {}
    last = None
    win.cover(0, 8)
    _refuse_compressed(bytes(win.buf[:8]), url)
    while True:
        if not win.cover(pos, pos + BLOCK):
            where = (
                "before its first member"
                if last is None
                else f"after member {last[0]!r} (sample key {last[1]!r}, {last[3]} bytes of data "
                f"at byte {last[2]})"
            )
            raise CorruptShardError(
                f"Shard {url!r} is truncated: it ends {where} without an end-of-archive marker. "
                "Re-create the shard."
            )
        rel = pos - win.base
        header = win.buf[rel : rel + BLOCK]
        if header == _ZERO_BLOCK:
            break
        try:
            if header[257:262] != b"ustar" and _octal(header[148:156]) != (
                sum(header[:148]) + sum(header[156:]) + 256
            ):
                raise ValueError("bad checksum")
            size = _octal(header[124:136])
        except ValueError as err:
            where = "at its start" if last is None else f"after sample key {last[1]!r}"
            raise CorruptShardError(
                f"Shard {url!r} has a damaged tar header at byte {pos} ({where}): {err}. "
                "Re-create the shard."
            ) from err
        kind = header[156]
        data = pos + BLOCK
        if kind in (0x78, 0x4C, 0x67):  # pax header 'x', GNU long name 'L', pax global 'g'
            if not win.cover(data, data + size):
                raise CorruptShardError(f"Shard {url!r} is truncated inside a header at {pos}.")
            payload = win.buf[data - win.base : data - win.base + size]
            if kind == 0x78:
                pax = _pax_records(payload)
            elif kind == 0x4C:
                long_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            pos = data + ((size + BLOCK - 1) & ~(BLOCK - 1))
            continue
        if "size" in pax:
            size = int(pax["size"])
        pos = data + ((size + BLOCK - 1) & ~(BLOCK - 1))
        if kind not in (0x30, 0, 0x37):  # only regular files are members
            long_name, pax = None, {}
            continue
        if long_name is not None or "path" in pax:
            name = long_name if long_name is not None else pax["path"]
        else:
            raw = header[:100].split(b"\0", 1)[0]
            if header[257:263] == _POSIX_MAGIC and header[345]:
                raw = header[345:500].split(b"\0", 1)[0] + b"/" + raw
            name = raw.decode("utf-8", "surrogateescape")
        long_name, pax = None, {}
        split = split_name(name)
        if split is None:
            continue  # no extension, or webdataset metadata: webdataset skips these too
        key, ext = split
        last = (name, key, data, size)
        if ext == target_key:
            if not win.cover(data, data + size):
                continue  # the truncation is reported at the next header
            raw_target = win.buf[data - win.base : data - win.base + size]
            try:
                tvals.append(int(raw_target))
            except ValueError:
                raise CorruptShardError(
                    f"Shard {url!r}, sample key {key!r}: the target member {ext!r} must hold an "
                    f"int as text. Got {bytes(raw_target[:40])!r} instead."
                ) from None
            tpos.append(len(keys))
        keys.append(key)
        exts.append(ext)
        offsets.append(data)
        sizes.append(size)
    return keys, exts, offsets, sizes, tpos, tvals


def group_samples(url: str, scan, members: list[str] | None, target_key: str) -> dict:
    """Turn per-member lists into per-sample arrays; check every sample's member set."""
    keys, exts, offs, sizes, tpos, tvals = scan
    if not keys:
        m = len(members or ())
        return {
            "members": members,
            "keys": np.empty(0, dtype="S1"),
            "targets": np.empty(0, np.int64),
            "offsets": np.empty((0, m), np.int64),
            "sizes": np.empty((0, m), np.int64),
        }
    karr = np.asarray(keys)
    new = np.ones(len(keys), dtype=bool)
    new[1:] = karr[1:] != karr[:-1]
    sample_of = np.cumsum(new) - 1
    skeys = karr[new]
    uniq, counts = np.unique(skeys, return_counts=True)
    if (counts > 1).any():
        raise CorruptShardError(
            f"Shard {url!r}: sample key {str(uniq[counts > 1][0])!r} appears in two places "
            "(its members are not adjacent). Re-create the shard with one block per sample."
        )
    if members is None:
        first = np.asarray(exts[: int(np.searchsorted(sample_of, 1))])
        members = sorted(set(first.tolist()))
    if target_key not in members:
        raise CorruptShardError(
            f"Shard {url!r}, sample key {str(skeys[0])!r}: no target member {target_key!r} "
            f"(members: {members}). Pass target_key= naming the member that holds the class."
        )
    col_of = {ext: c for c, ext in enumerate(members)}
    uexts, inv = np.unique(np.asarray(exts), return_inverse=True)
    col = np.asarray([col_of.get(e, -1) for e in uexts.tolist()], dtype=np.int64)[inv]
    if (col < 0).any():
        j = int(np.argmax(col < 0))
        raise CorruptShardError(
            f"Shard {url!r}, sample key {keys[j]!r}: unexpected member {exts[j]!r}; every sample "
            f"must hold exactly the members {members}."
        )
    n, m = len(skeys), len(members)
    count = np.bincount(sample_of * m + col, minlength=n * m).reshape(n, m)
    if (count != 1).any():
        s, c = np.argwhere(count != 1)[0]
        what = "is missing member" if count[s, c] == 0 else "holds twice the member"
        raise CorruptShardError(
            f"Shard {url!r}, sample key {str(skeys[s])!r} {what} {members[c]!r}; every sample "
            f"must hold exactly the members {members}."
        )
    offsets = np.empty((n, m), dtype=np.int64)
    size_arr = np.empty((n, m), dtype=np.int64)
    offsets[sample_of, col] = offs
    size_arr[sample_of, col] = sizes
    targets = np.empty(n, dtype=np.int64)
    targets[sample_of[np.asarray(tpos, dtype=np.int64)]] = tvals
    return {
        "members": members,
        "keys": np.char.encode(skeys, "utf-8"),
        "targets": targets,
        "offsets": offsets,
        "sizes": size_arr,
    }

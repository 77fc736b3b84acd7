"""Random access into indexed shards: one sample by one ranged read, many samples by reads in
(shard, offset) order with neighbours merged, equally sized ``.npy`` inputs straight into one
matrix, and the decoding of what was read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from memstore.errors import CorruptShardError

from .decode import NpyDecoder, decode_member
from .files import ShardFiles
from .index import ShardIndex

__all__ = ["ShardReader"]

_OWNER = "ShardSource"  # error messages name the public class
_COALESCE_GAP = 8 << 10  # adjacent reads closer than this are merged into one
_RUN_BLOCK = 1 << 20  # ... but a merged read never straddles a 1 MiB boundary


class ShardReader:
    """Reads and decodes samples of ``index`` from ``files``.

    Args:
        index: the shard index.
        files: the shards.
        decode: ``True``: items are ``(input, target)`` (``input_key`` decoded; just the target
            when ``input_key`` is None); ``False``: a dict of raw member bytes with
            ``__key__``; a callable: applied to that dict.
        input_key: the member holding the model input (or None).
    """

    def __init__(
        self,
        index: ShardIndex,
        files: ShardFiles,
        decode: bool | Callable[[dict[str, Any]], Any],
        input_key: str | None,
    ) -> None:
        self.index, self.files, self.decode, self.input_key = index, files, decode, input_key
        members = index.members
        self.input_col = members.index(input_key) if input_key else -1
        self.npy_input = bool(decode is True and input_key and input_key.endswith("npy"))
        if decode is True:
            cols = [members.index(input_key)] if input_key else []
            self.read_cols = np.asarray(cols, dtype=np.int64)
        else:
            self.read_cols = np.arange(len(members), dtype=np.int64)
        self.npy = NpyDecoder()

    def short_read(self, shard: int, sample: int, start: int, end: int, got: int) -> Exception:
        """The error for a read that ended early: the shard changed after indexing."""
        return CorruptShardError(
            f"Shard {self.index.urls[shard]!r}, sample key "
            f"{self.index.keys[sample].decode()!r}: bytes [{start}, {end}) are beyond the end of "
            f"the file (read {got} bytes). The shard was truncated or replaced after indexing; "
            f"re-open the {_OWNER} to re-index it."
        )

    def spans(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per id, the byte range covering the members that are read."""
        offsets, sizes = self.index.offsets, self.index.sizes
        if self.read_cols.size == 0:
            return offsets[ids, 0], offsets[ids, 0]
        off = offsets[ids][:, self.read_cols]
        return off.min(axis=1), (off + sizes[ids][:, self.read_cols]).max(axis=1)

    def decode_sample(self, i: int, buf: Any, base: int) -> Any:
        """Decode sample ``i`` from ``buf`` holding file bytes from offset ``base``."""
        idx = self.index
        if self.decode is True:
            if self.input_key is None:
                return int(idx.targets[i])
            c = int(self.read_cols[0])
            a = int(idx.offsets[i, c]) - base
            x = decode_member(
                self.input_key, memoryview(buf)[a : a + int(idx.sizes[i, c])], self.npy
            )
            return x, int(idx.targets[i])
        raw: dict[str, Any] = {"__key__": idx.keys[i].decode()}
        for c, ext in enumerate(idx.members):
            a = int(idx.offsets[i, c]) - base
            raw[ext] = bytes(buf[a : a + int(idx.sizes[i, c])])
        return raw if self.decode is False else self.decode(raw)

    def item(self, i: int) -> Any:
        """Sample ``i`` (a valid, non-negative id): one ranged read."""
        idx = self.index
        if self.input_col >= 0 and self.decode is True:
            start = int(idx.offsets[i, self.input_col])
            end = start + int(idx.sizes[i, self.input_col])
        else:
            start, end = (int(v[0]) for v in self.spans(np.asarray([i])))
        s = int(idx.shard[i])
        buf = self.files.read(s, start, end)
        if len(buf) != end - start:
            raise self.short_read(s, i, start, end, len(buf))
        if self.npy_input:
            return self.npy(buf), int(idx.targets[i])
        return self.decode_sample(i, buf, start)

    def get_many(self, ids: np.ndarray) -> list[Any]:
        """Samples ``ids`` (valid, non-negative) in request order, read in (shard, offset)
        order with one read per sample or per run of neighbouring samples."""
        if ids.size == 0:
            return []
        batch = self.npy_batch(ids)
        if batch is not None:
            return list(zip(batch.unbind(0), self.index.targets[ids].tolist(), strict=True))
        starts, ends = self.spans(ids)
        shards = self.index.shard[ids]
        order = np.lexsort((starts, shards))
        st, en, sh = starts[order], ends[order], shards[order]
        new_run = np.ones(len(order), dtype=bool)
        new_run[1:] = (
            (sh[1:] != sh[:-1])
            | (st[1:] - en[:-1] > _COALESCE_GAP)
            | (st[1:] // _RUN_BLOCK != st[:-1] // _RUN_BLOCK)
        )
        first = np.flatnonzero(new_run)
        run_start, run_end = st[first], np.maximum.reduceat(en, first)
        run_of = np.cumsum(new_run) - 1
        rs_l = run_start.tolist()
        runs = self.files.read_ranges(sh[first].tolist(), rs_l, run_end.tolist())
        out: list[Any] = [None] * len(order)
        sh_l, en_l = sh.tolist(), en.tolist()
        for j, (pos, r, i) in enumerate(
            zip(order.tolist(), run_of.tolist(), ids[order].tolist(), strict=True)
        ):
            buf = runs[r]
            if len(buf) < en_l[j] - rs_l[r]:
                start = int(st[j])
                raise self.short_read(sh_l[j], i, start, en_l[j], len(buf) + rs_l[r] - start)
            out[pos] = self.decode_sample(i, buf, rs_l[r])
        return out

    def npy_batch(self, ids: np.ndarray) -> torch.Tensor | None:
        """Inputs of ``ids`` (request order) as one tensor when they are equally sized
        ``.npy`` members: one read per sample straight into a ``[n, size]`` matrix, one
        vectorised decode. ``None`` when that does not apply."""
        if not self.npy_input:
            return None
        c = self.input_col
        sizes = self.index.sizes[ids, c]
        size = int(sizes[0])
        if (sizes != size).any() or size == 0:
            return None
        starts, shards = self.index.offsets[ids, c], self.index.shard[ids]
        order = np.lexsort((starts, shards))
        mat = np.empty((len(ids), size), dtype=np.uint8)
        flat = memoryview(mat.reshape(-1))
        order_l = order.tolist()
        starts_l = starts[order].tolist()
        got = self.files.readinto_ranges(
            shards[order].tolist(), starts_l, [flat[k * size : (k + 1) * size] for k in order_l]
        )
        for j, n in enumerate(got):
            if n != size:
                k = order_l[j]
                a = starts_l[j]
                raise self.short_read(int(shards[k]), int(ids[k]), a, a + size, n)
        return self.npy.rows(mat)

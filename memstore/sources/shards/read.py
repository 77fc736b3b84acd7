"""Random access into indexed shards: one sample by one ranged read, many samples by reads in
(shard, offset) order with neighbours merged, equally sized ``.npy`` inputs straight into one
matrix, and the turning of what was read into items (webdataset's decoders, then the
transform)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from memstore.errors import CorruptShardError
from memstore.io import is_local_url

from ..inputs import item_input
from .decode import NpyDecoder, as_tensor, make_decoder
from .files import ShardFiles
from .index import ShardIndex

__all__ = ["ShardReader"]

_OWNER = "ShardSource"  # error messages name the public class
_COALESCE_GAP = 8 << 10  # adjacent reads closer than this are merged into one
_RUN_BLOCK = 1 << 20  # ... but a merged read never straddles a 1 MiB boundary


class ShardReader:
    """Reads samples of ``index`` from ``files`` and makes them into items.

    Args:
        index: the shard index.
        files: the shards.
        decode: ``True``: items are ``(input, target)`` (``input_key`` decoded, arrays as
            tensors; just the target when ``input_key`` is None); ``False``: webdataset's raw
            sample dict (``__key__``, ``__url__``, member -> bytes); a webdataset decoder spec:
            that dict decoded by ``webdataset.autodecode.Decoder`` (see :mod:`.decode`).
        input_key: the member holding the model input (or None).
        transform: applied to every item last (like webdataset's ``.map``), or None.
    """

    def __init__(
        self,
        index: ShardIndex,
        files: ShardFiles,
        decode: Any,
        input_key: str | None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.index, self.files, self.input_key = index, files, input_key
        self.tuples, self.transform = decode is True, transform
        self.decoder = make_decoder(decode)
        members = index.members
        self.input_col = members.index(input_key) if input_key else -1
        self.npy_member = bool(input_key and input_key.rsplit(".", 1)[-1] == "npy")
        self.npy_input = self.tuples and self.npy_member and transform is None
        if self.tuples:
            cols = [members.index(input_key)] if input_key else []
            self.read_cols = np.asarray(cols, dtype=np.int64)
        else:
            self.read_cols = np.arange(len(members), dtype=np.int64)
        self.all_cols = np.arange(len(members), dtype=np.int64)
        # webdataset's opener adds "__local_path__" (the URL's path) for local shards
        self.local_paths = [urlparse(u).path if is_local_url(u) else None for u in index.urls]
        self.npy = NpyDecoder()

    def short_read(self, shard: int, sample: int, start: int, end: int, got: int) -> Exception:
        """The error for a read that ended early: the shard changed after indexing."""
        return CorruptShardError(
            f"Shard {self.index.urls[shard]!r}, sample key "
            f"{self.index.keys[sample].decode()!r}: bytes [{start}, {end}) are beyond the end of "
            f"the file (read {got} bytes). The shard was truncated or replaced after indexing; "
            f"re-open the {_OWNER} to re-index it."
        )

    def spans(self, ids: np.ndarray, cols: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Per id, the byte range covering the members that are read (``cols``: which)."""
        cols = self.read_cols if cols is None else cols
        offsets, sizes = self.index.offsets, self.index.sizes
        if cols.size == 0:
            return offsets[ids, 0], offsets[ids, 0]
        off = offsets[ids][:, cols]
        return off.min(axis=1), (off + sizes[ids][:, cols]).max(axis=1)

    # -- making items ----------------------------------------------------------------------
    def raw_sample(self, i: int, buf: Any, base: int) -> dict[str, Any]:
        """Sample ``i`` as ``webdataset.WebDataset`` yields it undecoded: ``__key__``,
        ``__url__``, ``__local_path__`` (local shards) and each member's bytes, from ``buf``
        holding file bytes from offset ``base``."""
        idx = self.index
        s = int(idx.shard[i])
        raw: dict[str, Any] = {"__key__": idx.keys[i].decode(), "__url__": idx.urls[s]}
        if self.local_paths[s] is not None:
            raw["__local_path__"] = self.local_paths[s]
        for c, ext in enumerate(idx.members):
            a = int(idx.offsets[i, c]) - base
            raw[ext] = bytes(buf[a : a + int(idx.sizes[i, c])])
        return raw

    def decode_input(self, buf: Any) -> Any:
        """The input member's bytes decoded as ``decode=True`` does (arrays as tensors)."""
        if self.npy_member:
            return self.npy(buf)
        return as_tensor(self.decoder.decode1(self.input_key, bytes(buf)))

    def item_from_raw(self, i: int, raw: dict[str, Any]) -> Any:
        """The item of sample ``i`` from its raw sample dict."""
        if self.tuples:
            target = int(self.index.targets[i])
            item: Any = (
                target
                if self.input_key is None
                else (self.decode_input(raw[self.input_key]), target)
            )
        else:
            item = raw if self.decoder is None else self.decoder(raw)
        return item if self.transform is None else self.transform(item)

    def decode_sample(self, i: int, buf: Any, base: int) -> Any:
        """The item of sample ``i`` from ``buf`` holding file bytes from offset ``base``."""
        if self.tuples and self.input_key is not None:
            c = int(self.read_cols[0])
            a = int(self.index.offsets[i, c]) - base
            x = self.decode_input(memoryview(buf)[a : a + int(self.index.sizes[i, c])])
            item = (x, int(self.index.targets[i]))
            return item if self.transform is None else self.transform(item)
        if self.tuples:
            return self.item_from_raw(i, {})
        return self.item_from_raw(i, self.raw_sample(i, buf, base))

    def model_input(self, item: Any) -> Any:
        """What feature extraction feeds the model from an item: the first element of a
        tuple, the ``input_key`` member of a sample dict, else as :func:`item_input` finds it."""
        if isinstance(item, dict) and self.input_key in item:
            return item[self.input_key]
        if isinstance(item, dict) and self.transform is None:
            raise ValueError(
                f"{_OWNER} samples hold several members besides the target "
                f"({list(self.index.members)}): pass input_key= to say which one is the model "
                "input."
            )
        return item_input(item)

    def item(self, i: int) -> Any:
        """Sample ``i`` (a valid, non-negative id): one ranged read."""
        idx = self.index
        start, end = (int(v[0]) for v in self.spans(np.asarray([i])))
        s = int(idx.shard[i])
        buf = self.files.read(s, start, end)
        if len(buf) != end - start:
            raise self.short_read(s, i, start, end, len(buf))
        if self.npy_input:
            return self.npy(buf), int(idx.targets[i])
        return self.decode_sample(i, buf, start)

    def get_many(self, ids: np.ndarray) -> list[Any]:
        """Items of ``ids`` (valid, non-negative) in request order, read in (shard, offset)
        order with one read per sample or per run of neighbouring samples."""
        if ids.size == 0:
            return []
        batch = self.npy_batch(ids)
        if batch is not None:
            return list(zip(batch.unbind(0), self.index.targets[ids].tolist(), strict=True))
        return self.read_many(ids, self.read_cols, self.decode_sample)

    def raw_many(self, ids: np.ndarray) -> list[dict[str, Any]]:
        """Raw sample dicts (every member's bytes) of ``ids``, in request order."""
        return self.read_many(ids, self.all_cols, self.raw_sample) if ids.size else []

    def read_many(
        self, ids: np.ndarray, cols: np.ndarray, make: Callable[[int, Any, int], Any]
    ) -> list[Any]:
        """``make(i, buf, base)`` for each of ``ids`` (request order), the members ``cols``
        read in (shard, offset) order with neighbouring reads merged."""
        starts, ends = self.spans(ids, cols)
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
            out[pos] = make(i, buf, rs_l[r])
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

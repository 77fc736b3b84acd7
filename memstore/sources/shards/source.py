"""Webdataset tar shards as a source: a one-pass index of member offsets, random access by
offset (``os.pread`` locally, ranged GETs through fsspec) and sequential streaming.

Index (format version 1). A sample's id is its position in shard order, then tar order within
its shard. Saved in a store under ``sources/<name>`` as a JSON record plus flat 1-D arrays:

* record: ``kind="shards"``, ``format``, ``spec``, ``shards`` (URLs), ``shard_sizes``,
  ``shard_hashes`` (blake2b of size + first and last 64 KiB), ``shard_counts`` (samples per
  shard), ``target_key``, ``members`` (member extensions, sorted), ``key_width``, ``length``,
  ``fingerprint``;
* ``keys`` uint8 ``[N * key_width]`` (UTF-8 ``__key__``, NUL-padded), ``targets`` int64
  ``[N]``, and per member ``offset_<ext>`` / ``size_<ext>`` int64 ``[N]``: the byte offset of
  the member's *data* (after its tar header) and its size.

Every sample must hold exactly the members of the first sample; the target member holds an
int as text (webdataset's ``cls``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from memstore._validation import as_int_array, check_bool, check_int
from memstore.errors import CorruptShardError
from memstore.experiences import Experience

from . import index as _shard_index
from .index import INDEX_FORMAT
from .tar import NpyDecoder, collate, decode_member

__all__ = ["ShardSource", "expand_spec", "INDEX_FORMAT"]

_OWNER = "ShardSource"
_STREAM_CHUNK = 16 << 20  # bytes read per call while streaming
_MAX_OPEN_FILES = 64
_COALESCE_GAP = 8 << 10  # adjacent reads closer than this are merged into one
_RUN_BLOCK = 1 << 20  # ... but a merged read never straddles a 1 MiB boundary
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


# -- shard lists -----------------------------------------------------------------------------
_BRACE = re.compile(r"\{([^{}]*)\}")


def _expand_braces(pattern: str) -> list[str]:
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        if int(hi) < int(lo):
            raise ValueError(f"The 'spec' parameter of {_OWNER} has a descending range {{{body}}}.")
        padded = (len(lo) > 1 and lo[0] == "0") or (len(hi) > 1 and hi[0] == "0")
        width = max(len(lo), len(hi)) if padded else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [out for item in items for out in _expand_braces(head + item + tail)]


def expand_spec(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard URLs of a brace spec (``"d/train-{000000..000255}.tar"``, ``{a,b}`` lists) or of a
    list of paths, in order. Raises ValueError on an empty or duplicated list."""
    if isinstance(spec, (str, os.PathLike)):
        urls = _expand_braces(os.fspath(spec))
    elif isinstance(spec, Sequence) and all(isinstance(u, (str, os.PathLike)) for u in spec):
        urls = [os.fspath(u) for u in spec]
    else:
        raise TypeError(
            f"The 'spec' parameter of {_OWNER} must be a str (brace pattern) or a list of shard "
            f"paths/URLs. Got {type(spec).__name__} instead."
        )
    if not urls or any(not u for u in urls):
        raise ValueError(f"The 'spec' parameter of {_OWNER} names no shards. Got {spec!r} instead.")
    if len(set(urls)) != len(urls):
        dup = next(u for u in urls if urls.count(u) > 1)
        raise ValueError(f"The 'spec' parameter of {_OWNER} lists shard {dup!r} twice.")
    return urls


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


# -- the source -------------------------------------------------------------------------------
class ShardSource(torch.utils.data.Dataset):
    """Webdataset tar shards as an id-addressable source.

    Args:
        spec: a brace pattern (``"data/train-{000000..000255}.tar"``) or a list of shard paths
            or fsspec URLs (``s3://...``).
        name: source name used in experiences, exemplar sets and the store.
        target_key: member holding the class as text (webdataset's ``cls``).
        input_key: member holding the model input; default: the one member besides the target.
        decode: ``True``: ``source[i] == (input, target)`` with ``.npy`` members as tensors,
            images via Pillow (HWC uint8 tensors); ``False``: a dict of raw bytes with
            ``__key__``; a callable: applied to that dict.
        storage_options: passed to fsspec for URLs.
        store: where the index is kept (``sources/<name>``) and reused on the next open.
        reindex: re-index shards that changed since they were indexed (default); ``False``
            raises :class:`~memstore.errors.SourceMismatchError` instead.
        progress: show a tqdm bar while indexing.

    Opening costs one sequential read of every shard without a saved index; with one, two
    64 KiB reads per shard. ``source[i]`` is one ``pread`` (local) or ranged GET (fsspec).
    """

    def __init__(
        self,
        spec: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        name: str = "shards",
        target_key: str = "cls",
        input_key: str | None = None,
        decode: bool | Callable[[dict[str, Any]], Any] = True,
        storage_options: dict[str, Any] | None = None,
        store: Any = None,
        reindex: bool = True,
        progress: bool = True,
    ) -> None:
        urls = expand_spec(spec)
        for pname, value in (("name", name), ("target_key", target_key)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise (TypeError if not isinstance(value, str) else ValueError)(
                    f"The {pname!r} parameter of {_OWNER} must be a non-empty str of letters, "
                    f"digits, '_', '.', '-'. Got {value!r} instead."
                )
        if input_key is not None and not isinstance(input_key, str):
            raise TypeError(
                f"The 'input_key' parameter of {_OWNER} must be a str or None. "
                f"Got {input_key!r} instead."
            )
        if not (isinstance(decode, bool) or callable(decode)):
            raise TypeError(
                f"The 'decode' parameter of {_OWNER} must be a bool or a callable. "
                f"Got {decode!r} instead."
            )
        if storage_options is not None and not isinstance(storage_options, dict):
            raise TypeError(
                f"The 'storage_options' parameter of {_OWNER} must be a dict or None. "
                f"Got {type(storage_options).__name__} instead."
            )
        if store is not None and not all(
            callable(getattr(store, m, None)) for m in ("read_source_index", "write_source_index")
        ):
            raise TypeError(
                f"The 'store' parameter of {_OWNER} must be a memstore store (with "
                f"read_source_index/write_source_index). Got {type(store).__name__} instead."
            )
        reindex = check_bool(reindex, "reindex", _OWNER)
        progress = check_bool(progress, "progress", _OWNER)
        self.name, self.target_key, self.decode = name, target_key, decode
        self.spec = spec if isinstance(spec, str) else [os.fspath(u) for u in spec]
        self.urls = urls
        self._open_locations(urls, storage_options)
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()
        self._npy = NpyDecoder()
        self.indexed_shards: tuple[int, ...] = ()
        _shard_index.build_index(self, store, reindex, progress)
        self._choose_input(input_key)

    # -- opening ---------------------------------------------------------------------------
    def _open_locations(self, urls: list[str], storage_options: dict | None) -> None:
        local = [_is_local(u) for u in urls]
        if any(local) and not all(local):
            raise ValueError(f"The 'spec' parameter of {_OWNER} mixes local paths and URLs.")
        if all(local):
            self._fs = None
            self._paths = [os.path.abspath(u[7:] if u.startswith("file://") else u) for u in urls]
            return
        import fsspec

        pairs = [fsspec.core.url_to_fs(u, **(storage_options or {})) for u in urls]
        if len({type(fs) for fs, _ in pairs}) > 1:
            raise ValueError(f"The 'spec' parameter of {_OWNER} mixes URL protocols.")
        self._fs = pairs[0][0]
        self._paths = [p for _, p in pairs]

    def _choose_input(self, input_key: str | None) -> None:
        others = [m for m in self.members if m != self.target_key]
        if input_key is not None and input_key not in others:
            raise ValueError(
                f"The 'input_key' parameter of {_OWNER} must name a member of the samples "
                f"other than the target, one of {others}. Got {input_key!r} instead."
            )
        if input_key is None and len(others) == 1:
            input_key = others[0]
        if input_key is None and self.decode is True and len(self):
            raise ValueError(
                f"The 'input_key' parameter of {_OWNER} must be given when samples hold "
                f"several members besides the target ({others}). Got None instead."
            )
        self.input_key = input_key
        self._input_col = self.members.index(input_key) if input_key else -1
        self._npy_input = bool(self.decode is True and input_key and input_key.endswith("npy"))
        if self.decode is True:
            self._read_cols = np.asarray(
                [self.members.index(input_key)] if input_key else [], dtype=np.int64
            )
        else:
            self._read_cols = np.arange(len(self.members), dtype=np.int64)

    # -- the index -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """``"<len>:<hash>"`` over shard sizes and content hashes, keys and targets."""
        return self._fingerprint

    def index_record(self) -> dict[str, Any]:
        """The JSON part of the index (what ``store.write_source_index`` receives)."""
        return _shard_index.index_record(self)

    def index_arrays(self) -> dict[str, np.ndarray]:
        """The array part of the index, all 1-D: ``keys`` (uint8, ``key_width`` per sample),
        ``targets``, ``offset_<ext>`` and ``size_<ext>`` per member."""
        return _shard_index.index_arrays(self)

    def __len__(self) -> int:
        return int(self._targets.shape[0])

    @property
    def targets(self) -> np.ndarray:
        """Class of each sample (int64, read-only), from the index: no shard is read."""
        return self._targets

    @property
    def keys(self) -> np.ndarray:
        """``__key__`` of each sample (str array)."""
        return np.char.decode(self._keys, "utf-8")

    @property
    def shards(self) -> np.ndarray:
        """Shard number of each sample (int32, read-only)."""
        return self._shard

    @property
    def shard_starts(self) -> np.ndarray:
        """First sample id of each shard, plus ``len(self)`` at the end."""
        return self._starts

    def __repr__(self) -> str:
        return (
            f"ShardSource(name={self.name!r}, shards={len(self.urls)}, len={len(self)}, "
            f"members={list(self.members)})"
        )

    # -- random access ---------------------------------------------------------------------
    def _check_ids(self, ids: Any) -> np.ndarray:
        ids = as_int_array(ids, "ids", f"{_OWNER}.get_many")
        n = len(self)
        bad = (ids < -n) | (ids >= n)
        if bad.any():
            raise IndexError(f"{_OWNER} {self.name!r} has {n} samples; got id {int(ids[bad][0])}.")
        return np.where(ids < 0, ids + n, ids)

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked (DataLoader worker): never share offsets/fds
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN_FILES:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def _read_local(self, shard: int, start: int, end: int) -> bytearray:
        buf = bytearray(end - start)
        got = os.preadv(self._fd(shard), [buf], start) if end > start else 0
        return buf if got == len(buf) else buf[:got]

    def _short_read(self, shard: int, sample: int, start: int, end: int, got: int) -> Exception:
        return CorruptShardError(
            f"Shard {self.urls[shard]!r}, sample key {self._keys[sample].decode()!r}: bytes "
            f"[{start}, {end}) are beyond the end of the file (read {got} bytes). The shard was "
            f"truncated or replaced after indexing; re-open the {_OWNER} to re-index it."
        )

    def _item(self, i: int, buf: Any, base: int) -> Any:
        """Decode sample ``i`` from ``buf`` holding file bytes from offset ``base``."""
        if self.decode is True:
            if self.input_key is None:
                return int(self._targets[i])
            c = int(self._read_cols[0])
            a = int(self._offsets[i, c]) - base
            x = decode_member(
                self.input_key, memoryview(buf)[a : a + int(self._sizes[i, c])], self._npy
            )
            return x, int(self._targets[i])
        raw: dict[str, Any] = {"__key__": self._keys[i].decode()}
        for c, ext in enumerate(self.members):
            a = int(self._offsets[i, c]) - base
            raw[ext] = bytes(buf[a : a + int(self._sizes[i, c])])
        return raw if self.decode is False else self.decode(raw)

    def _spans(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._read_cols.size == 0:
            return self._offsets[ids, 0], self._offsets[ids, 0]
        off = self._offsets[ids][:, self._read_cols]
        return off.min(axis=1), (off + self._sizes[ids][:, self._read_cols]).max(axis=1)

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{_OWNER} indices must be ints. Got {type(index).__name__} instead.")
        n, i = len(self._targets), int(index)
        if not -n <= i < n:
            raise IndexError(f"{_OWNER} {self.name!r} has {n} samples; got id {i}.")
        i = i + n if i < 0 else i
        if self._input_col >= 0 and self.decode is True:
            start = int(self._offsets[i, self._input_col])
            end = start + int(self._sizes[i, self._input_col])
        else:
            start, end = (int(v[0]) for v in self._spans(np.asarray([i])))
        s = int(self._shard[i])
        if self._fs is None:
            buf: Any = self._read_local(s, start, end)
        else:
            buf = self._fs.cat_file(self._paths[s], start=start, end=end) if end > start else b""
        if len(buf) != end - start:
            raise self._short_read(s, i, start, end, len(buf))
        if self._npy_input:
            return self._npy(buf), int(self._targets[i])
        return self._item(i, buf, start)

    def get_many(self, ids: Any) -> list[Any]:
        """``[source[i] for i in ids]``, read in (shard, offset) order with one ``pread`` per
        sample (or per run of neighbouring samples); results come back in request order."""
        ids = self._check_ids(ids)
        if ids.size == 0:
            return []
        batch = self._read_npy_batch(ids)
        if batch is not None:
            return list(zip(batch.unbind(0), self._targets[ids].tolist(), strict=True))
        starts, ends = self._spans(ids)
        shards = self._shard[ids]
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
        if self._fs is None:
            runs: list[Any] = [None] * len(first)
        else:
            runs = self._fs.cat_ranges(
                [self._paths[s] for s in sh[first].tolist()],
                run_start.tolist(),
                run_end.tolist(),
                on_error="raise",
            )
        out: list[Any] = [None] * len(order)
        rs_l, re_l, sh_l, en_l = run_start.tolist(), run_end.tolist(), sh.tolist(), en.tolist()
        for j, (pos, r, i) in enumerate(
            zip(order.tolist(), run_of.tolist(), ids[order].tolist(), strict=True)
        ):
            buf = runs[r]
            if buf is None:  # runs are read in (shard, offset) order: fd eviction is safe
                buf = runs[r] = self._read_local(sh_l[j], rs_l[r], re_l[r])
            if len(buf) < en_l[j] - rs_l[r]:
                start = int(st[j])
                raise self._short_read(sh_l[j], i, start, en_l[j], len(buf) + rs_l[r] - start)
            out[pos] = self._item(i, buf, rs_l[r])
        return out

    def _read_npy_batch(self, ids: np.ndarray) -> torch.Tensor | None:
        """Inputs of ``ids`` (request order) as one tensor when they are equally sized
        ``.npy`` members: one ``preadv`` per sample straight into a ``[n, size]`` matrix, one
        vectorised decode. ``None`` when that does not apply."""
        if not self._npy_input:
            return None
        c = self._input_col
        sizes = self._sizes[ids, c]
        size = int(sizes[0])
        if (sizes != size).any() or size == 0:
            return None
        starts, shards = self._offsets[ids, c], self._shard[ids]
        order = np.lexsort((starts, shards))
        mat = np.empty((len(ids), size), dtype=np.uint8)
        if self._fs is None:
            flat = memoryview(mat.reshape(-1))
            current, fd = -1, -1
            for k, s, a in zip(
                order.tolist(), shards[order].tolist(), starts[order].tolist(), strict=True
            ):
                if s != current:  # shards come in order: evicting earlier fds is safe
                    current, fd = s, self._fd(s)
                got = os.preadv(fd, [flat[k * size : (k + 1) * size]], a)
                if got != size:
                    raise self._short_read(s, int(ids[k]), a, a + size, got)
        else:
            parts = self._fs.cat_ranges(
                [self._paths[s] for s in shards[order].tolist()],
                starts[order].tolist(),
                (starts[order] + size).tolist(),
                on_error="raise",
            )
            for j, part in enumerate(parts):
                if len(part) != size:
                    k = int(order[j])
                    a = int(starts[k])
                    raise self._short_read(int(shards[k]), int(ids[k]), a, a + size, len(part))
            mat[order] = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(len(ids), size)
        return self._npy.rows(mat)

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """Batched access for ``torch.utils.data.DataLoader`` (same as :meth:`get_many`)."""
        return self.get_many(indices)

    # -- streaming -------------------------------------------------------------------------
    def iter_batches(
        self, ids: Any = None, *, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(ids, inputs)`` batches; inputs are stacked into one tensor when they share a
        shape. ``ids=None``: every sample, in id order, by one sequential read of each shard
        (16 MiB reads). Otherwise the given ids in the given order, by offset reads."""
        from memstore.features.extract import item_input

        batch_size = check_int(batch_size, "batch_size", f"{_OWNER}.iter_batches", minimum=1)
        if ids is not None:
            ids = self._check_ids(ids)
            for k in range(0, len(ids), batch_size):
                chunk = ids[k : k + batch_size]
                inputs = self._read_npy_batch(chunk) if len(chunk) else None
                if inputs is None:
                    inputs = collate([item_input(it) for it in self.get_many(chunk)])
                yield chunk, inputs
            return
        pending_ids: list[np.ndarray] = []
        pending: list[Any] = []
        held = 0
        for part_ids, inputs in self._stream_parts():
            pending_ids.append(part_ids)
            pending.append(inputs)
            held += len(part_ids)
            while held >= batch_size:
                yield self._take(pending_ids, pending, batch_size)
                held -= batch_size
        if held:
            yield self._take(pending_ids, pending, held)

    @staticmethod
    def _take(pending_ids: list, pending: list, n: int) -> tuple[np.ndarray, Any]:
        """Pop the first ``n`` rows of the queued parts."""
        got_ids, got, need = [], [], n
        while need:
            p_ids, p = pending_ids[0], pending[0]
            k = min(need, len(p_ids))
            got_ids.append(p_ids[:k])
            got.append(p[:k])
            if k == len(p_ids):
                pending_ids.pop(0)
                pending.pop(0)
            else:
                pending_ids[0], pending[0] = p_ids[k:], p[k:]
            need -= k
        if all(isinstance(g, torch.Tensor) for g in got):
            inputs: Any = got[0] if len(got) == 1 else torch.cat(got)
        else:
            inputs = collate([x for g in got for x in g])
        return np.concatenate(got_ids), inputs

    def _stream_parts(self) -> Iterator[tuple[np.ndarray, Any]]:
        from memstore.features.extract import item_input

        all_ids = np.arange(len(self), dtype=np.int64)
        span_start, span_end = self._spans(all_ids)
        for s in range(len(self.urls)):
            lo, hi = int(self._starts[s]), int(self._starts[s + 1])
            stream = open(self._paths[s], "rb", buffering=0) if self._fs is None else None
            try:
                j = lo
                while j < hi:
                    begin = int(span_start[j])
                    k = int(np.searchsorted(span_end[j:hi], begin + _STREAM_CHUNK, "right")) + j
                    k = min(max(k, j + 1), hi)
                    end = int(span_end[k - 1])
                    if stream is not None:
                        stream.seek(begin)
                        data = stream.read(end - begin)
                    else:
                        data = self._fs.cat_file(self._paths[s], start=begin, end=end)
                    if len(data) != end - begin:
                        bad = j + int(np.searchsorted(span_end[j:k], begin + len(data), "right"))
                        raise self._short_read(
                            s,
                            bad,
                            int(span_start[bad]),
                            int(span_end[bad]),
                            max(0, begin + len(data) - int(span_start[bad])),
                        )
                    part = np.arange(j, k, dtype=np.int64)
                    fast = self._stack_npy(data, span_start[j:k] - begin, part)
                    if fast is None:
                        fast = collate(
                            [item_input(self._item(i, data, begin)) for i in range(j, k)]
                        )
                    yield part, fast
                    j = k
            finally:
                if stream is not None:
                    stream.close()

    def _stack_npy(self, data: bytes, rel: np.ndarray, ids: np.ndarray) -> torch.Tensor | None:
        """Vectorised decode of equally sized ``.npy`` inputs held in ``data``."""
        if not self._npy_input:
            return None
        sizes = self._sizes[ids, self._input_col]
        size = int(sizes[0])
        if (sizes != size).any():
            return None
        mv = memoryview(data)
        joined = b"".join([mv[a : a + size] for a in rel.tolist()])
        return self._npy.rows(np.frombuffer(joined, dtype=np.uint8).reshape(len(ids), size))

    # -- experiences -----------------------------------------------------------------------
    def experiences(
        self, *, by_shards: int | None = None, by_classes: Sequence[Sequence[int]] | None = None
    ) -> list[Experience]:
        """Split the source into experiences: ``by_shards=n`` gives ``n`` contiguous shard
        ranges (as equal as possible); ``by_classes=[[0, 1], [2, 3]]`` one experience per class
        list (lists must be disjoint). Ids ascend within each experience."""
        owner = f"{_OWNER}.experiences"
        if (by_shards is None) == (by_classes is None):
            raise TypeError(f"{owner} takes exactly one of by_shards= and by_classes=.")
        if by_shards is not None:
            n = check_int(by_shards, "by_shards", owner, minimum=1)
            if n > len(self.urls):
                raise ValueError(
                    f"The 'by_shards' parameter of {owner} must be at most the number of shards "
                    f"({len(self.urls)}). Got {n} instead."
                )
            bounds = [int(g[0]) for g in np.array_split(np.arange(len(self.urls)), n)]
            cuts = self._starts[bounds + [len(self.urls)]]
            id_lists = [np.arange(cuts[k], cuts[k + 1], dtype=np.int64) for k in range(n)]
        else:
            if isinstance(by_classes, (str, bytes)) or not isinstance(by_classes, Sequence):
                raise TypeError(
                    f"The 'by_classes' parameter of {owner} must be a list of class "
                    f"lists. Got {by_classes!r} instead."
                )
            splits = [as_int_array(c, "by_classes", owner) for c in by_classes]
            flat = np.concatenate(splits) if splits else np.empty(0, np.int64)
            if not splits or any(c.size == 0 for c in splits) or np.unique(flat).size != flat.size:
                raise ValueError(
                    f"The 'by_classes' parameter of {owner} must be non-empty, "
                    f"disjoint class lists. Got {by_classes!r} instead."
                )
            absent = np.setdiff1d(flat, self._targets)
            if absent.size:
                raise ValueError(
                    f"The 'by_classes' parameter of {owner} names classes "
                    f"{absent[:5].tolist()} that no sample of {self.name!r} has."
                )
            id_lists = [np.flatnonzero(np.isin(self._targets, c)) for c in splits]
        return [
            Experience(
                targets=self._targets[ids],
                ids=ids,
                source=self.name,
                index=k,
                data=None,
                source_data=self,
            )
            for k, ids in enumerate(id_lists)
        ]

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close cached file descriptors (they are reopened on the next read)."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

"""Webdataset tar shards as an id-addressable source: indexed once (:mod:`.index`), read by
byte offset (:mod:`.read`), streamed (:mod:`.stream`). The bytes are described in ``FORMAT.md``
next to this module.

A sample's id is its position in shard order, then tar order within its shard. Every sample
must hold exactly the members of the first sample; the target member holds an int as text
(webdataset's ``cls``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from memstore._validation import as_int_array, check_bool, check_int, check_name, param_error
from memstore.experiences import Experience
from memstore.io import is_local_url

from ..base import SourceIndexStore
from .decode import DecodeSpec, check_decode
from .files import ShardFiles
from .index import INDEX_FORMAT, ShardIndex, build_index
from .read import ShardReader
from .spec import expand_spec
from .stream import iter_batches

__all__ = ["ShardSource", "expand_spec", "INDEX_FORMAT"]

_OWNER = "ShardSource"
_TARGET_KEY = re.compile(r"[A-Za-z0-9_.\-]+")


class ShardSource(torch.utils.data.Dataset):
    """Webdataset tar shards as an id-addressable source.

    Args:
        spec: a brace pattern (``"data/train-{000000..000255}.tar"``) or a list of shard paths
            or fsspec URLs (``s3://...``).
        name: source name used in experiences, exemplar sets and the store (the rule of
            buffer names: letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit).
        target_key: member holding the class as text (webdataset's ``cls``).
        input_key: member holding the model input; default: the one member besides the target.
        decode: what an item is (see "Items" below): ``True`` (default) for ``(input, target)``;
            ``False`` for webdataset's raw sample dict; or what ``webdataset.WebDataset(...)
            .decode(...)`` takes -- an image spec (``"pil"``, ``"torchrgb"``, ``"rgb8"``,
            ``"l"``, ...), a handler ``f(key, data)``, a list of them, or a
            ``webdataset.autodecode.Decoder`` -- for the decoded sample dict.
        transform: applied to every item after decoding (like webdataset's ``.map``); e.g.
            ``lambda s: (s["jpg"], s["cls"])``. Must pickle for DataLoader workers that spawn.
        storage_options: passed to fsspec for URLs.
        store: where the index is kept (``sources/<name>``) and reused on the next open: a
            :class:`~memstore.sources.base.SourceIndexStore` (a memstore ``Store``).
        reindex: ``True`` (default): re-index shards whose size or first / last 64 KiB
            changed since they were indexed (an edit in the middle that keeps the size is not
            seen); ``False``: raise :class:`~memstore.errors.SourceMismatchError` instead;
            ``"verify"``: also hash every shard's full content and re-index shards whose hash
            differs from the one recorded at index time (or have none recorded). ``"verify"``
            costs one full read of every shard on every open.
        progress: show a tqdm bar while indexing.

    Items (``source[i]``, ``get_many``; then ``transform``):

    * ``decode=True``: ``(input, target)``: the ``input_key`` member decoded by webdataset's
      handlers with images as its ``"torch"`` spec (float CHW in [0, 1]) and arrays as tensors
      (raw ``.npy`` through memstore's fast decoder, equal to webdataset's); ``target`` from the
      index (an int). Just the target when there is no input member.
    * ``decode=False``: ``{"__key__", "__url__", <member>: bytes}``, what
      ``webdataset.WebDataset(urls, shardshuffle=False)`` yields for that sample.
    * a decoder spec: exactly what ``WebDataset(urls, shardshuffle=False).decode(spec)`` yields
      for that sample (webdataset's own ``Decoder`` runs on the bytes read by offset).

    Feature extraction takes the model input of an item from its first element (tuples) or
    its ``input_key`` member (dicts). ``iter_batches`` over every sample, or over ascending ids
    that make up at least half of the shards they touch (an experience), streams through
    webdataset's tar reader; raw ``.npy`` inputs with ``decode=True`` take memstore's
    sequential fast path instead (``tools/bench_shards.py`` measures both).

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
        decode: DecodeSpec = True,
        transform: Callable[[Any], Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        store: SourceIndexStore | None = None,
        reindex: bool | str = True,
        progress: bool = True,
    ) -> None:
        urls = expand_spec(spec)
        for url in urls:
            if is_local_url(url) and os.path.isdir(url.removeprefix("file://")):
                raise ValueError(
                    f"The 'spec' parameter of {_OWNER} must list tar shard files. Got "
                    f"{url!r}, a directory, instead. Pass a brace pattern or a list of the "
                    "shards inside it (e.g. 'dir/train-{000000..000099}.tar')."
                )
        reindex, progress = _check_options(
            name,
            target_key,
            input_key,
            decode,
            transform,
            storage_options,
            store,
            reindex,
            progress,
        )
        self.name, self.target_key, self.decode = name, target_key, decode
        self.transform = transform
        self.spec = spec if isinstance(spec, str) else [os.fspath(u) for u in spec]
        self.urls = urls
        self._files = ShardFiles(urls, storage_options)
        self.index: ShardIndex
        self.index, self.indexed_shards = build_index(
            self._files,
            urls,
            name=name,
            target_key=target_key,
            spec=self.spec,
            store=store,
            reindex=reindex,
            progress=progress,
        )
        self.members = self.index.members
        self.input_key = self._choose_input(input_key)
        self._reader = ShardReader(self.index, self._files, decode, self.input_key, transform)

    def _choose_input(self, input_key: str | None) -> str | None:
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
        return input_key

    # -- the index -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """``"<len>:<hash>"`` over shard sizes and content hashes, keys and targets."""
        return self.index.fingerprint

    def index_record(self) -> dict[str, Any]:
        """The JSON part of the index (what ``store.write_source_index`` receives)."""
        return self.index.record(self.spec)

    def index_arrays(self) -> dict[str, np.ndarray]:
        """The array part of the index, all 1-D: ``keys`` (uint8, ``key_width`` per sample),
        ``targets``, ``offset_<ext>`` and ``size_<ext>`` per member."""
        return self.index.arrays()

    def __len__(self) -> int:
        return len(self.index)

    @property
    def targets(self) -> np.ndarray:
        """Class of each sample (int64, read-only), from the index: no shard is read."""
        return self.index.targets

    @property
    def keys(self) -> np.ndarray:
        """``__key__`` of each sample (str array)."""
        return np.char.decode(self.index.keys, "utf-8")

    @property
    def shards(self) -> np.ndarray:
        """Shard number of each sample (int32, read-only)."""
        return self.index.shard

    @property
    def shard_starts(self) -> np.ndarray:
        """First sample id of each shard, plus ``len(self)`` at the end."""
        return self.index.starts

    def __repr__(self) -> str:
        return (
            f"ShardSource(name={self.name!r}, shards={len(self.urls)}, len={len(self)}, "
            f"members={list(self.members)})"
        )

    # -- reading ---------------------------------------------------------------------------
    def _check_ids(self, ids: Any) -> np.ndarray:
        ids = as_int_array(ids, "ids", f"{_OWNER}.get_many")
        n = len(self)
        bad = (ids < -n) | (ids >= n)
        if bad.any():
            raise IndexError(f"{_OWNER} {self.name!r} has {n} samples; got id {int(ids[bad][0])}.")
        return np.where(ids < 0, ids + n, ids)

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{_OWNER} indices must be ints. Got {type(index).__name__} instead.")
        n, i = len(self), int(index)
        if not -n <= i < n:
            raise IndexError(f"{_OWNER} {self.name!r} has {n} samples; got id {i}.")
        return self._reader.item(i + n if i < 0 else i)

    def get_many(self, ids: Any) -> list[Any]:
        """``[source[i] for i in ids]``, read in (shard, offset) order with one ``pread`` per
        sample (or per run of neighbouring samples); results come back in request order."""
        return self._reader.get_many(self._check_ids(ids))

    def get_raw(self, ids: Any) -> list[dict[str, Any]]:
        """The undecoded samples of ``ids`` (request order), whatever ``decode`` is:
        webdataset's raw sample dicts ``{"__key__", "__url__", <member>: bytes}`` holding every
        member's original bytes, read by offset as :meth:`get_many` reads. What
        ``memstore export`` copies."""
        return self._reader.raw_many(self._check_ids(ids))

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """Batched access for ``torch.utils.data.DataLoader`` (same as :meth:`get_many`)."""
        return self.get_many(indices)

    def iter_batches(
        self, ids: Any = None, *, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(ids, inputs)`` batches; inputs are stacked into one tensor when they share a
        shape. ``ids=None``: every sample, in id order, by one sequential pass over each shard
        (webdataset's tar reader; 16 MiB reads on the raw-``.npy`` fast path). Otherwise the
        given ids in the given order: streamed the same way when they ascend and make up at
        least half of the shards they touch, else by offset reads."""
        batch_size = check_int(batch_size, "batch_size", f"{_OWNER}.iter_batches", minimum=1)
        checked = None if ids is None else self._check_ids(ids)
        yield from iter_batches(self._reader, checked, batch_size)

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
            cuts = self.index.starts[bounds + [len(self.urls)]]
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
            absent = np.setdiff1d(flat, self.targets)
            if absent.size:
                raise ValueError(
                    f"The 'by_classes' parameter of {owner} names classes "
                    f"{absent[:5].tolist()} that no sample of {self.name!r} has."
                )
            id_lists = [np.flatnonzero(np.isin(self.targets, c)) for c in splits]
        return [
            Experience(
                targets=self.targets[ids],
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
        self._files.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _check_options(
    name: Any,
    target_key: Any,
    input_key: Any,
    decode: Any,
    transform: Any,
    storage_options: Any,
    store: Any,
    reindex: Any,
    progress: Any,
) -> tuple[bool | str, bool]:
    """Check the constructor's arguments (before any shard is opened); returns the checked
    ``reindex`` and ``progress``."""
    check_name(name, "name", _OWNER)
    if not isinstance(target_key, str) or not _TARGET_KEY.fullmatch(target_key):
        raise (TypeError if not isinstance(target_key, str) else ValueError)(
            f"The 'target_key' parameter of {_OWNER} must be a non-empty str of letters, "
            f"digits, '_', '.', '-'. Got {target_key!r} instead."
        )
    if input_key is not None and not isinstance(input_key, str):
        raise param_error("input_key", _OWNER, "a str or None", input_key, kind=TypeError)
    check_decode(decode)
    if transform is not None and not callable(transform):
        raise param_error("transform", _OWNER, "a callable or None", transform, kind=TypeError)
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(
            f"The 'storage_options' parameter of {_OWNER} must be a dict or None. "
            f"Got {type(storage_options).__name__} instead."
        )
    if store is not None and not isinstance(store, SourceIndexStore):
        raise TypeError(
            f"The 'store' parameter of {_OWNER} must be a memstore store (with "
            f"read_source_index/write_source_index). Got {type(store).__name__} instead."
        )
    if isinstance(reindex, str):
        if reindex != "verify":
            raise ValueError(
                f"The 'reindex' parameter of {_OWNER} must be True, False or 'verify'. "
                f"Got {reindex!r} instead."
            )
    else:
        reindex = check_bool(reindex, "reindex", _OWNER)
    return reindex, check_bool(progress, "progress", _OWNER)

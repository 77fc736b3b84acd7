"""Streaming input batches out of shards, regrouped into fixed-size batches.

When decoding is webdataset's (anything but raw ``.npy`` inputs with ``decode=True``), every
sample -- or ascending ids that make up at least half of the shards they touch, as feature
extraction over an experience asks -- goes through a webdataset pipeline: webdataset's tar
reader and sample grouping over the shards' streams, then the source's decoding. Raw ``.npy``
inputs take the fast path: one sequential pass per shard (16 MiB ranged reads) decoded as one
matrix. Other ids are read by offset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from memstore.errors import CorruptShardError

from .decode import collate
from .read import ShardReader

__all__ = ["iter_batches"]

_STREAM_CHUNK = 16 << 20  # bytes read per call while streaming


def iter_batches(
    reader: ShardReader, ids: np.ndarray | None, batch_size: int
) -> Iterator[tuple[np.ndarray, Any]]:
    """Yield ``(ids, inputs)`` batches of ``batch_size`` (the last may be shorter); inputs are
    one tensor when they share a shape. ``ids=None``: every sample in id order; otherwise the
    given (valid, non-negative) ids in the given order."""
    if ids is not None and not reader.npy_input and _dense(reader, ids):
        yield from _pipeline_parts(reader, batch_size, ids)
        return
    if ids is not None:
        for k in range(0, len(ids), batch_size):
            chunk = ids[k : k + batch_size]
            inputs = reader.npy_batch(chunk) if len(chunk) else None
            if inputs is None:
                inputs = collate([reader.model_input(it) for it in reader.get_many(chunk)])
            yield chunk, inputs
        return
    pending_ids: list[np.ndarray] = []
    pending: list[Any] = []
    held = 0
    if not reader.npy_input:
        yield from _pipeline_parts(reader, batch_size)
        return
    for part_ids, inputs in _stream_parts(reader):
        pending_ids.append(part_ids)
        pending.append(inputs)
        held += len(part_ids)
        while held >= batch_size:
            yield _take(pending_ids, pending, batch_size)
            held -= batch_size
    if held:
        yield _take(pending_ids, pending, held)


def _dense(reader: ShardReader, ids: np.ndarray) -> bool:
    """Whether ``ids`` ascend and are at least half of the samples of the shards they touch
    (then streaming those shards beats reading each id by offset)."""
    if len(ids) == 0 or (len(ids) > 1 and not (np.diff(ids) > 0).all()):
        return False
    shards = np.unique(reader.index.shard[ids])
    starts = reader.index.starts
    return 2 * len(ids) >= int((starts[shards + 1] - starts[shards]).sum())


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


def _stream_parts(reader: ShardReader) -> Iterator[tuple[np.ndarray, Any]]:
    """Per read of up to 16 MiB of one shard: the ids it holds and their inputs."""
    index = reader.index
    span_start, span_end = reader.spans(np.arange(len(index), dtype=np.int64))
    for s in range(len(index.urls)):
        lo, hi = int(index.starts[s]), int(index.starts[s + 1])
        j = lo
        while j < hi:
            begin = int(span_start[j])
            k = int(np.searchsorted(span_end[j:hi], begin + _STREAM_CHUNK, "right")) + j
            k = min(max(k, j + 1), hi)
            end = int(span_end[k - 1])
            data = reader.files.read(s, begin, end)
            if len(data) != end - begin:
                bad = j + int(np.searchsorted(span_end[j:k], begin + len(data), "right"))
                raise reader.short_read(
                    s,
                    bad,
                    int(span_start[bad]),
                    int(span_end[bad]),
                    max(0, begin + len(data) - int(span_start[bad])),
                )
            part = np.arange(j, k, dtype=np.int64)
            fast = _stack_npy(reader, data, span_start[j:k] - begin, part)
            if fast is None:
                fast = collate(
                    [reader.model_input(reader.decode_sample(i, data, begin)) for i in range(j, k)]
                )
            yield part, fast
            j = k


def _stack_npy(
    reader: ShardReader, data: Any, rel: np.ndarray, ids: np.ndarray
) -> torch.Tensor | None:
    """Vectorised decode of equally sized ``.npy`` inputs held in ``data``."""
    if not reader.npy_input:
        return None
    sizes = reader.index.sizes[ids, reader.input_col]
    size = int(sizes[0])
    if (sizes != size).any():
        return None
    mv = memoryview(data)
    joined = b"".join([mv[a : a + size] for a in rel.tolist()])
    return reader.npy.rows(np.frombuffer(joined, dtype=np.uint8).reshape(len(ids), size))


def _pipeline_parts(
    reader: ShardReader, batch_size: int, ids: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, Any]]:
    """Samples (every one, or the ascending ``ids``) through webdataset: its tar reader and key
    grouping (``tar_file_expander``, ``group_by_keys``) over each shard's stream (opened
    through the source's file layer, so local paths and fsspec URLs alike), then the source's
    decoding and transform, in batches of ``batch_size``. Each sample's ``__key__`` is checked
    against the index (a shard replaced after indexing is named, never silently
    misaligned)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    index = reader.index
    keys, starts = index.keys, index.starts
    wanted = None if ids is None else np.zeros(len(index), dtype=bool)
    if wanted is not None:
        wanted[ids] = True
    shards = range(len(index.urls)) if ids is None else np.unique(index.shard[ids]).tolist()
    batch_ids: list[int] = []
    got: list[Any] = []
    for s in shards:
        url, i, end = index.urls[s], int(starts[s]), int(starts[s + 1])
        with reader.files.open_stream(s, _STREAM_CHUNK) as stream:
            source = [{"url": url, "stream": stream, "local_path": reader.local_paths[s]}]
            for raw in group_by_keys(tar_file_expander(source)):
                if i >= end or raw["__key__"].encode("utf-8", "surrogateescape") != keys[i]:
                    expected = f"key {keys[i].decode()!r}" if i < end else "no more samples"
                    raise CorruptShardError(
                        f"Shard {url!r}, sample key {raw['__key__']!r}: webdataset yields a "
                        f"sample where the index expects {expected}. The shard changed after "
                        "indexing; re-open the ShardSource to re-index it."
                    )
                if wanted is None or wanted[i]:
                    batch_ids.append(i)
                    got.append(reader.model_input(reader.item_from_raw(i, raw)))
                    if len(batch_ids) == batch_size:
                        yield np.asarray(batch_ids, dtype=np.int64), collate(got)
                        batch_ids, got = [], []
                i += 1
        if i != end:
            raise CorruptShardError(
                f"Shard {url!r} yields {i - int(starts[s])} samples through webdataset; the "
                f"index holds {end - int(starts[s])}. The shard changed after indexing; re-open "
                "the ShardSource to re-index it."
            )
    if batch_ids:
        yield np.asarray(batch_ids, dtype=np.int64), collate(got)

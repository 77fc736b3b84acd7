"""Streaming input batches out of shards, regrouped into fixed-size batches: every sample
through a webdataset pipeline (webdataset's tar reader and sample grouping over the shards'
streams, then the source's decoding), or -- the fast path for raw ``.npy`` inputs -- by one
sequential pass per shard (16 MiB ranged reads) decoded as one matrix; given ids by offset
reads."""

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
    parts = _stream_parts(reader) if reader.npy_input else _pipeline_parts(reader, batch_size)
    for part_ids, inputs in parts:
        pending_ids.append(part_ids)
        pending.append(inputs)
        held += len(part_ids)
        while held >= batch_size:
            yield _take(pending_ids, pending, batch_size)
            held -= batch_size
    if held:
        yield _take(pending_ids, pending, held)


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


def _pipeline_parts(reader: ShardReader, batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
    """Every sample through webdataset: its tar reader and key grouping
    (``tar_file_expander``, ``group_by_keys``) over each shard's stream (opened through the
    source's file layer, so local paths and fsspec URLs alike), then the source's decoding and
    transform. Each sample's ``__key__`` is checked against the index (a shard replaced after
    indexing is named, never silently misaligned)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    index = reader.index
    keys = index.keys

    def streams() -> Iterator[dict[str, Any]]:
        for s, url in enumerate(index.urls):
            with reader.files.open_stream(s, _STREAM_CHUNK) as stream:
                yield {"url": url, "stream": stream, "local_path": reader.local_paths[s]}

    i, n = 0, len(index)
    ids: list[int] = []
    got: list[Any] = []
    for raw in group_by_keys(tar_file_expander(streams())):
        if i >= n or raw["__key__"].encode("utf-8", "surrogateescape") != keys[i]:
            where = f"index holds {n} samples" if i >= n else f"expected key {keys[i].decode()!r}"
            raise CorruptShardError(
                f"Shard {raw['__url__']!r}, sample key {raw['__key__']!r}: webdataset yields a "
                f"sample the index does not have at id {i} ({where}). The shard changed after "
                "indexing; re-open the ShardSource to re-index it."
            )
        ids.append(i)
        got.append(reader.model_input(reader.item_from_raw(i, raw)))
        i += 1
        if len(ids) == batch_size:
            yield np.asarray(ids, dtype=np.int64), collate(got)
            ids, got = [], []
    if ids:
        yield np.asarray(ids, dtype=np.int64), collate(got)
    if i != n:
        raise CorruptShardError(
            f"The shards of this ShardSource yield {i} samples through webdataset; the index "
            f"holds {n}. A shard changed after indexing; re-open the ShardSource to re-index it."
        )

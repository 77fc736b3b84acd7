"""How payload rows cross the wire: the C-order bytes of each row, packed into int64 words.

A row's payload (every column of ``Experience.payload``: any bool / int / uint / float dtype,
any trailing shape) is the concatenation of its columns' bytes, in sorted column-name order,
zero-padded to a multiple of 8 bytes and viewed as int64 words, so it travels in the same
int64 tensor collectives (``all_gather``) as the (id, target, task) metadata, and comes back
with exact bytes, dtype and shape. Ranks first agree on the schema (:func:`wire_schema`), so
every rank packs and unpacks the same layout. Cost: ``ceil(row bytes / 8)`` words per row,
O(rows · row bytes) to pack or unpack.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from memstore.experiences import payload_schema

__all__ = ["wire_schema", "payload_words", "words_payload"]


def wire_schema(payload: Mapping[str, np.ndarray]) -> list[list]:
    """``[[name, dtype, trailing shape], ...]`` sorted by name: JSON-able, comparable across
    ranks (what they must agree on before rows are packed)."""
    return [[k, d, list(s)] for k, (d, s) in sorted(payload_schema(payload).items())]


def _row_bytes(value: np.ndarray) -> int:
    return int(value.dtype.itemsize * np.prod(value.shape[1:], dtype=np.int64))


def payload_words(payload: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The payload of ``n`` rows as int64 words ``[n, w]`` (``w = 0`` without payload)."""
    parts = [
        np.frombuffer(np.ascontiguousarray(payload[k]).tobytes(), np.uint8).reshape(
            n, _row_bytes(payload[k])
        )
        for k in sorted(payload)
    ]
    width = sum(p.shape[1] for p in parts)
    out = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
    start = 0
    for part in parts:
        out[:, start : start + part.shape[1]] = part
        start += part.shape[1]
    return out.view(np.int64)


def words_payload(words: np.ndarray, like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The payload columns packed in ``words`` ``[n, w]`` by :func:`payload_words`, with the
    names, dtypes and trailing shapes of ``like`` (this rank's payload: the agreed schema)."""
    n = words.shape[0]
    raw = np.ascontiguousarray(words, dtype=np.int64).view(np.uint8).reshape(n, 8 * words.shape[1])
    out, start = {}, 0
    offsets = {}
    for k in sorted(like):
        offsets[k] = start
        start += _row_bytes(like[k])
    for k, value in like.items():  # the caller's column order
        size = _row_bytes(value)
        data = raw[:, offsets[k] : offsets[k] + size].tobytes()
        out[k] = np.frombuffer(data, dtype=value.dtype).reshape(n, *value.shape[1:])
    return out

"""How a source's fingerprint is computed (the rule :func:`memstore.fingerprint` applies to
arrays and map-style datasets; shard sources have their own, see ``shards/FORMAT.md``).

Version 2 (``"v2:<n>:<20 hex>"``, written since memstore 0.2): a BLAKE2b of the targets, the
task labels (when given) and the items of a seeded sample of ``FINGERPRINT_SAMPLE`` ids
(32, or all ids of a smaller source; the same ids for every source of one length). Items are
hashed by content: tensors and arrays by dtype, shape and bytes, numbers and strings by value,
tuples / lists / dicts element by element. The sample is read with every global generator
(torch, numpy, ``random``) seeded and restored afterwards, so a random augmentation does not
change the fingerprint and the caller's generators are untouched. Cost: O(N) over the targets
plus ``FINGERPRINT_SAMPLE`` item reads, never the whole dataset.

What it cannot see: a change to inputs outside the sample (same targets, same sampled items).

Version 1 (``"<n>:<20 hex>"``, no prefix): the targets and task labels only; kept for comparing
fingerprints recorded by earlier versions (:func:`targets_fingerprint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from memstore._validation import as_int_array

__all__ = [
    "FINGERPRINT_SAMPLE",
    "FINGERPRINT_VERSION",
    "sample_ids",
    "content_fingerprint",
    "targets_fingerprint",
    "seeded_generators",
]

FINGERPRINT_SAMPLE = 32
FINGERPRINT_VERSION = "v2"
_SAMPLE_SEED = 0x6D656D73  # "mems"


def targets_fingerprint(n: int, targets: Any = None, task_labels: Any = None) -> str:
    """Version 1: ``"<n>:<hash>"``, a blake2b of the targets and task labels (each when
    given). Cost O(N) over the targets, never over the samples."""
    return f"{n}:{_targets_hash(targets, task_labels).hexdigest()}"


def _targets_hash(targets: Any, task_labels: Any) -> Any:
    h = hashlib.blake2b(digest_size=10)
    if targets is not None:
        h.update(as_int_array(targets, "targets", "fingerprint").tobytes())
    if task_labels is not None:
        h.update(b"tasks" + as_int_array(task_labels, "task_labels", "fingerprint").tobytes())
    return h


def sample_ids(n: int) -> np.ndarray:
    """The ids whose items a fingerprint hashes: ``min(n, 32)`` distinct ids, ascending, the
    same for every source of length ``n``."""
    if n <= FINGERPRINT_SAMPLE:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(_SAMPLE_SEED)
    return np.sort(rng.choice(n, FINGERPRINT_SAMPLE, replace=False)).astype(np.int64)


@contextlib.contextmanager
def seeded_generators() -> Iterator[None]:
    """Seed torch's, numpy's and ``random``'s global generators for the block; restore after."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SAMPLE_SEED)
        random.seed(_SAMPLE_SEED)
        np.random.seed(_SAMPLE_SEED)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def content_fingerprint(n: int, targets: Any, task_labels: Any, items: Any) -> str:
    """Version 2: ``"v2:<n>:<hash>"`` of the targets, task labels and sampled ``items``."""
    h = _targets_hash(targets, task_labels)
    h.update(b"items")
    for item in items:
        _hash_item(h, item)
    return f"{FINGERPRINT_VERSION}:{n}:{h.hexdigest()}"


def _hash_item(h: Any, item: Any) -> None:
    import torch

    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().contiguous().numpy()
    if isinstance(item, np.ndarray) and item.dtype != object:
        data = np.ascontiguousarray(item)
        h.update(b"A" + data.dtype.str.encode() + repr(data.shape).encode())
        h.update(data.tobytes())
    elif isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        h.update(b"B" + struct.pack("<q", len(data)) + data)
    elif isinstance(item, str):
        data = item.encode()
        h.update(b"S" + struct.pack("<q", len(data)) + data)
    elif item is None or isinstance(item, (bool, int, float, complex, np.generic)):
        h.update(b"N" + repr(item.item() if isinstance(item, np.generic) else item).encode())
    elif isinstance(item, (tuple, list)) or (
        isinstance(item, np.ndarray)  # an object array: element by element
    ):
        seq = list(item.ravel()) if isinstance(item, np.ndarray) else item
        h.update(b"L" + struct.pack("<q", len(seq)))
        for x in seq:
            _hash_item(h, x)
    elif isinstance(item, Mapping):
        h.update(b"D" + struct.pack("<q", len(item)))
        for k in sorted(item, key=str):
            _hash_item(h, str(k))
            _hash_item(h, item[k])
    else:  # e.g. a PIL image: its pixels, when numpy can read them
        data = np.asarray(item)
        if data.dtype == object:
            h.update(b"O" + type(item).__qualname__.encode())
        else:
            _hash_item(h, data)

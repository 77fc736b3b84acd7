"""Sources: whatever maps a sample id to a sample, and the fingerprints that tie a stored
buffer to the data it was built from."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from memstore._validation import as_int_array

__all__ = ["Source", "ArraySource", "fingerprint"]


@runtime_checkable
class Source(Protocol):
    """Anything with ``len`` and ``source[id] -> item`` (a map-style dataset)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class ArraySource(torch.utils.data.Dataset):
    """In-memory arrays as a source: ``source[i] == (inputs[i], targets[i])``.

    ``get_inputs(ids)`` slices the inputs in one go, so feature extraction batches without a
    Python loop over samples; ``__getitems__`` returns the same items as ``__getitem__``.
    """

    def __init__(self, inputs: Any, targets: Any, task_labels: Any = None) -> None:
        self.inputs = (
            torch.as_tensor(np.asarray(inputs)) if not isinstance(inputs, torch.Tensor) else inputs
        )
        self.targets = as_int_array(targets, "targets", "ArraySource", length=len(self.inputs))
        if task_labels is not None:
            self.targets_task_labels = as_int_array(
                task_labels, "task_labels", "ArraySource", length=len(self.inputs)
            )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], int(self.targets[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """The items ``self[i]`` for ``indices`` (what ``DataLoader`` batches), one gather."""
        targets = self.targets[np.asarray(indices, dtype=np.int64)].tolist()
        return list(zip(self.get_inputs(indices), targets, strict=True))

    def get_inputs(self, indices: Any) -> torch.Tensor:
        """The inputs of ``indices`` as one batch tensor (feature extraction reads this)."""
        return self.inputs[torch.as_tensor(np.asarray(indices, dtype=np.int64))]


def fingerprint(dataset: Any) -> str:
    """``"<len>:<hash>"`` of a source: its length and a hash of all its targets (if any).

    Sources with a ``fingerprint()`` method (shard sources) supply their own. Cost O(N) over
    the targets, never over the samples.
    """
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        return str(own())
    n = len(dataset)
    h = hashlib.blake2b(digest_size=10)
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        h.update(as_int_array(targets, "targets", "fingerprint").tobytes())
    tasks = getattr(dataset, "targets_task_labels", None)
    if tasks is not None:
        h.update(b"tasks" + as_int_array(tasks, "task_labels", "fingerprint").tobytes())
    return f"{n}:{h.hexdigest()}"

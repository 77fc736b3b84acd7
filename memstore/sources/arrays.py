"""In-memory arrays as a source, and the fingerprint that ties a stored buffer to the data it
was built from."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from memstore._validation import as_int_array

from .base import Source, fingerprint
from .fingerprints import content_fingerprint, sample_ids, targets_fingerprint

__all__ = ["Source", "ArraySource", "fingerprint"]


class ArraySource(torch.utils.data.Dataset):
    """In-memory arrays as a source: ``source[i] == (inputs[i], targets[i])``.

    A :class:`~memstore.sources.base.Source` with the batched reads
    :meth:`get_many` (one gather for inputs and targets) and :meth:`get_inputs` (the inputs
    alone as one tensor: feature extraction batches without a Python loop over samples).
    """

    def __init__(self, inputs: Any, targets: Any, task_labels: Any = None) -> None:
        self.inputs = (
            torch.as_tensor(np.asarray(inputs)) if not isinstance(inputs, torch.Tensor) else inputs
        )
        self.targets = as_int_array(targets, "targets", "ArraySource", length=len(self.inputs))
        self._task_labels = None
        if task_labels is not None:
            self._task_labels = self.targets_task_labels = as_int_array(
                task_labels, "task_labels", "ArraySource", length=len(self.inputs)
            )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], int(self.targets[index])

    def get_many(self, ids: Any) -> list[tuple[torch.Tensor, int]]:
        """The items ``self[i]`` for ``ids``, in order: one gather of inputs and targets."""
        ids = np.asarray(ids, dtype=np.int64)
        targets = self.targets[ids].tolist()
        return list(zip(self.get_inputs(ids), targets, strict=True))

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched access for ``torch.utils.data.DataLoader`` (same as :meth:`get_many`)."""
        return self.get_many(indices)

    def get_inputs(self, ids: Any) -> torch.Tensor:
        """The inputs of ``ids`` as one batch tensor (feature extraction reads this)."""
        return self.inputs[torch.as_tensor(np.asarray(ids, dtype=np.int64))]

    def fingerprint(self) -> str:
        """``"v2:<len>:<hash>"`` over the targets, task labels (if given) and a seeded sample
        of 32 items (:mod:`memstore.sources.fingerprints`). O(N) over the targets."""
        items = self.get_many(sample_ids(len(self)))
        return content_fingerprint(len(self), self.targets, self._task_labels, items)

    def legacy_fingerprint(self) -> str:
        """Version 1 (``"<len>:<hash>"`` over the targets and task labels), for comparing
        fingerprints recorded by earlier versions."""
        return targets_fingerprint(len(self), self.targets, self._task_labels)

"""The contracts of a source: what the rest of memstore may ask of the data a sample id points
into, declared as Protocols (never probed), and :func:`as_source`, the one adapter that turns
any map-style dataset into a :class:`Source`.

Roles:

* :class:`Source` — length, ``targets``, ``source[id]``, a batched read ``get_many(ids)`` and a
  ``fingerprint()`` tying a stored buffer to the data it was built from.
* :class:`BatchStream` — optional: ``iter_batches(ids, batch_size=)`` yields input batches
  (shard sources read them by offset or sequentially).
* :class:`InputBatchSource` — optional: ``get_inputs(ids)`` gathers the model inputs of many
  ids as one tensor (in-memory arrays).
* :class:`SourceIndexStore` — what a shard source needs of a store to keep its index.

Datasets that are not :class:`Source` s (a torch ``Dataset``, a ``Subset``, a list) are wrapped
by :func:`as_source`; it is the only place that looks at which attributes a dataset happens to
have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .fingerprints import (
    FINGERPRINT_SAMPLE,
    FINGERPRINT_VERSION,
    content_fingerprint,
    sample_ids,
    seeded_generators,
    targets_fingerprint,
)

__all__ = [
    "Source",
    "BatchStream",
    "InputBatchSource",
    "SourceIndexStore",
    "DatasetSource",
    "as_source",
    "fingerprint",
    "fingerprint_matches",
    "legacy_fingerprint",
    "LegacyFingerprint",
    "targets_fingerprint",
    "FINGERPRINT_SAMPLE",
]


@runtime_checkable
class Source(Protocol):
    """An id-addressable source of samples.

    ``targets`` is the class of each sample (an int array of length ``len(source)``), or
    ``None`` when the source does not know them.
    """

    @property
    def targets(self) -> Any: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def get_many(self, ids: Any) -> Sequence[Any]:
        """``[source[i] for i in ids]``, possibly read in one go (request order kept)."""
        ...

    def fingerprint(self) -> str:
        """A short string that changes when the samples' ids or targets change."""
        ...


@runtime_checkable
class BatchStream(Protocol):
    """A source that streams its own input batches (``(ids, inputs)`` pairs)."""

    def iter_batches(
        self, ids: Any = None, *, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, Any]]: ...


@runtime_checkable
class InputBatchSource(Protocol):
    """A source that gathers the model inputs of many ids as one batch tensor."""

    def get_inputs(self, ids: Any) -> Any: ...


@runtime_checkable
class SourceIndexStore(Protocol):
    """Where a source keeps an index between runs (a memstore ``Store``)."""

    def read_source_index(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(record, arrays)`` saved under ``name``, or ``None``."""
        ...

    def write_source_index(
        self, name: str, record: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> None: ...


@runtime_checkable
class LegacyFingerprint(Protocol):
    """A source whose fingerprints were computed by another rule before (version 1, no
    ``v2:`` prefix): ``legacy_fingerprint()`` recomputes that one for comparison."""

    def legacy_fingerprint(self) -> str: ...


class DatasetSource:
    """A map-style dataset seen as a :class:`Source` (made by :func:`as_source`).

    ``get_many`` uses the dataset's ``__getitems__`` when it has one (as ``torch`` datasets
    and ``Subset`` do), else one ``dataset[i]`` per id. ``targets`` (and the task labels used
    by :meth:`fingerprint`) are the dataset's ``targets`` / ``targets_task_labels``
    attributes, if any; a dataset with its own ``fingerprint()`` keeps it.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    @property
    def targets(self) -> Any:
        return getattr(
            self.dataset, "targets", None
        )  # shape: allow the one adapter of plain datasets

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def get_many(self, ids: Any) -> Sequence[Any]:
        ids = np.asarray(ids, dtype=np.int64)
        getitems = getattr(
            self.dataset, "__getitems__", None
        )  # shape: allow the one adapter of plain datasets
        if getitems is not None:
            return getitems(ids.tolist())
        return [self.dataset[int(i)] for i in ids]

    def _own_fingerprint(self) -> Any:
        return getattr(
            self.dataset, "fingerprint", None
        )  # shape: allow the one adapter of plain datasets

    def _task_labels(self) -> Any:
        return getattr(
            self.dataset, "targets_task_labels", None
        )  # shape: allow the one adapter of plain datasets

    def fingerprint(self) -> str:
        """The dataset's own ``fingerprint()`` if it has one, else version 2 (see
        :mod:`memstore.sources.fingerprints`): targets, task labels and a seeded sample of 32
        items. Cost O(N) over the targets plus 32 item reads."""
        own = self._own_fingerprint()
        if callable(own):
            return str(own())
        ids = sample_ids(len(self.dataset))
        with seeded_generators():
            items = [self.dataset[int(i)] for i in ids]
        return content_fingerprint(len(self.dataset), self.targets, self._task_labels(), items)

    def legacy_fingerprint(self) -> str:
        """Version 1 (targets and task labels only), or the dataset's own fingerprint."""
        own = self._own_fingerprint()
        if callable(own):
            return str(own())
        return targets_fingerprint(len(self.dataset), self.targets, self._task_labels())

    def __repr__(self) -> str:
        return f"DatasetSource({type(self.dataset).__name__})"


class StreamingDatasetSource(DatasetSource):
    """A :class:`DatasetSource` over a dataset that streams batches itself."""

    def iter_batches(
        self, ids: Any = None, *, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, Any]]:
        return self.dataset.iter_batches(ids=ids, batch_size=batch_size)


def as_source(dataset: Any) -> Source:
    """``dataset`` itself if it is a :class:`Source`, else a :class:`DatasetSource` over it.

    O(1): nothing is read.
    """
    if isinstance(dataset, Source):
        return dataset
    stream = getattr(dataset, "iter_batches", None)  # shape: allow the adapter of plain datasets
    if callable(stream):
        return StreamingDatasetSource(dataset)
    return DatasetSource(dataset)


def fingerprint(dataset: Any) -> str:
    """``"v2:<len>:<hash>"`` of a dataset: its length, its targets and task labels, and a
    seeded sample of 32 items (:mod:`memstore.sources.fingerprints`).

    Sources supply their own (:meth:`Source.fingerprint`; a ``ShardSource``'s covers its
    index, see its ``FORMAT.md``). Cost O(N) over the targets plus 32 item reads, never the
    whole dataset.
    """
    return str(as_source(dataset).fingerprint())


def legacy_fingerprint(dataset: Any, current: str | None = None) -> str:
    """The fingerprint earlier versions recorded (version 1: length, targets, task labels)
    for sources whose rule changed, else the current one (``current``, if the caller already
    has it: ``fingerprint(dataset)``)."""
    source = as_source(dataset)
    if isinstance(source, LegacyFingerprint):
        return str(source.legacy_fingerprint())
    return str(source.fingerprint()) if current is None else current


def fingerprint_matches(dataset: Any, recorded: str, current: str | None = None) -> bool:
    """Whether ``dataset`` is the one whose fingerprint ``recorded`` is.

    A versioned value (``"v2:..."``) is compared with the current computation; an unversioned
    one (recorded by an earlier memstore, or a source's own rule) with
    :func:`legacy_fingerprint` — which, for arrays and plain datasets, covers only length and
    targets: save the buffer again to record a version-2 fingerprint. ``current``:
    ``fingerprint(dataset)`` if the caller already has it (not computed again).
    """
    if not isinstance(recorded, str):
        return False
    if recorded.startswith(f"{FINGERPRINT_VERSION}:"):
        return (fingerprint(dataset) if current is None else current) == recorded
    return legacy_fingerprint(dataset, current) == recorded

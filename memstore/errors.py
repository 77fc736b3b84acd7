"""The exceptions memstore raises.

Every error inherits :class:`MemstoreError` *and* the built-in a user would naturally catch,
so ``except ValueError`` keeps working for code written against Avalanche.
"""

from __future__ import annotations

__all__ = [
    "MemstoreError",
    "CorruptStoreError",
    "BufferNotFoundError",
    "ReadOnlyStoreError",
    "ConcurrentCommitError",
    "UnrelatedHistoryError",
    "FormatVersionError",
    "SourceMismatchError",
    "MissingSourceError",
    "DetachedStrategyError",
    "StoreNotFoundError",
    "CorruptShardError",
    "SourceNotFoundError",
    "StoreAccessError",
    "StrategyMismatchError",
    "StoreExistsError",
    "StorePermissionError",
    "InvalidParameterError",
    "InvalidParameterTypeError",
    "UnsafePathError",
    "IdConflictError",
    "PayloadMismatchError",
]


class MemstoreError(Exception):
    """Base class of every error raised by memstore."""


class CorruptStoreError(MemstoreError, ValueError):
    """A store file is damaged: bad checksum, truncated chunk, unparsable manifest."""


class BufferNotFoundError(MemstoreError, KeyError):
    """A buffer name (or commit) that the store does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ReadOnlyStoreError(MemstoreError, PermissionError):
    """A write was attempted on a store opened with ``mode="r"``."""


class ConcurrentCommitError(MemstoreError, RuntimeError):
    """The commit a save would publish (its parent + 1) is taken: another writer published it
    first, or gc pruned it. Reload the buffer, apply the update again and save."""


class UnrelatedHistoryError(MemstoreError, ValueError):
    """A buffer that was not loaded from (or saved as) a buffer name was saved under that
    existing name without saying what to build on (``parent=`` or ``overwrite=True``)."""


class FormatVersionError(MemstoreError, ValueError):
    """The store was written by a newer memstore, or is not a memstore at all."""


class SourceMismatchError(MemstoreError, ValueError):
    """A source's fingerprint differs from the one recorded with the buffer."""


class MissingSourceError(MemstoreError, KeyError):
    """Inputs of exemplars from a source that was not provided are needed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DetachedStrategyError(MemstoreError, RuntimeError):
    """A loaded feature-based buffer was asked to select without a model re-attached."""


class StoreNotFoundError(MemstoreError, FileNotFoundError):
    """No store at the given location (and the mode does not create one)."""


class SourceNotFoundError(MemstoreError, FileNotFoundError):
    """A source's data (e.g. a shard named by a ShardSource spec) does not exist."""


class CorruptShardError(MemstoreError, ValueError):
    """A shard is damaged or no longer matches its index (truncated tar, a sample missing a
    member, a target that is not an int)."""


class StoreAccessError(MemstoreError, OSError):
    """The store's location cannot be reached or created (not a directory, no network...)."""


class StrategyMismatchError(MemstoreError, ValueError):
    """A selection strategy given to re-attach differs from the one a buffer was saved with."""


class StoreExistsError(MemstoreError, FileExistsError):
    """A store already exists where one was to be created (``mode="w-"``)."""


class StorePermissionError(MemstoreError, PermissionError):
    """The store refused access: missing or wrong credentials, no write permission."""


class InvalidParameterError(MemstoreError, ValueError):
    """A store operation got a parameter of the right type but a wrong value."""


class InvalidParameterTypeError(MemstoreError, TypeError):
    """A store operation got a parameter of the wrong type."""


class UnsafePathError(MemstoreError, PermissionError):
    """A path would lead outside the store root, or a write or delete would go through a
    symbolic link inside it; memstore refuses both."""


class IdConflictError(MemstoreError, ValueError):
    """An update brings a (source, id) the buffer holds, with another target or task label:
    the ids do not name one sample (positions local to each experience, say)."""


class PayloadMismatchError(MemstoreError, ValueError):
    """Per-exemplar payload columns that do not fit: an array whose first dimension is not
    the number of rows, or an update whose payload names, dtypes or trailing shapes differ
    from those the buffer's exemplars hold."""

"""Sources: what a sample id points into (arrays, map-style datasets, webdataset shards).

The contracts are in :mod:`.base` (:class:`Source`, :class:`BatchStream`,
:class:`InputBatchSource`, :class:`SourceIndexStore`, and :func:`as_source` for any map-style
dataset); reading model inputs out of a source is :mod:`.inputs`.
"""

from .arrays import ArraySource
from .base import (
    BatchStream,
    InputBatchSource,
    Source,
    SourceIndexStore,
    as_source,
    fingerprint,
)
from .shards import ShardSource, write_shards

__all__ = [
    "ArraySource",
    "BatchStream",
    "InputBatchSource",
    "ShardSource",
    "Source",
    "SourceIndexStore",
    "as_source",
    "fingerprint",
    "write_shards",
]

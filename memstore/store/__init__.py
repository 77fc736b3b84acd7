"""The store: named buffers with their commit history in a Zarr v3 hierarchy.

:func:`open_store` and :class:`Store` are the API; the format is documented in ``FORMAT.md``
next to this package.
"""

from .export import Export, export_memory, open_export
from .history import Commit, Origin
from .maintenance import Problem
from .store import FORMAT_VERSION, Store, open_store

__all__ = [
    "FORMAT_VERSION",
    "Commit",
    "Export",
    "Origin",
    "Problem",
    "Store",
    "export_memory",
    "open_export",
    "open_store",
]

"""The store: named buffers with their commit history in a Zarr v3 hierarchy.

:func:`open_store` and :class:`Store` are the API; the format is documented in ``FORMAT.md``
next to this package.
"""

from .history import Commit, Origin
from .maintenance import Problem
from .store import FORMAT_VERSION, Store, open_store

__all__ = ["FORMAT_VERSION", "Commit", "Origin", "Problem", "Store", "open_store"]

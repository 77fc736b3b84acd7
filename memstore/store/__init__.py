"""The store: named buffers with their commit history in a Zarr v3 hierarchy."""

from .store import FORMAT_VERSION, Commit, Problem, Store, open_store

__all__ = ["FORMAT_VERSION", "Commit", "Problem", "Store", "open_store"]

"""The feature-cache registry: entries ``features/<key>/`` of a store (the cache itself is
:class:`memstore.features.cache.FeatureCache`, handed the zarr group)."""

from __future__ import annotations

from memstore.errors import ReadOnlyStoreError
from memstore.features.cache import FeatureCache

from . import layout
from .connect import Connection

__all__ = ["FeatureCaches"]


class FeatureCaches:
    """The feature caches of one store."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def keys(self) -> list[str]:
        return self.conn.files.listdir(layout.FEATURES)

    def open(self, key: str) -> FeatureCache | None:
        """The entry ``key``, or ``None`` if it does not exist."""
        import zarr

        if not self.conn.files.exists(layout.feature_values_metadata(key)):
            return None
        group = zarr.open_group(
            store=self.conn.zarr_store,
            path=layout.feature_dir(key),
            mode="r" if self.conn.read_only else "r+",
        )
        return FeatureCache(group, self.conn.read_only)

    def open_or_create(self, key: str, n: int, d: int, dtype: str, attrs: dict) -> FeatureCache:
        """The entry ``key`` of shape ``[n, d]``, created if absent (read-only: must exist)."""
        if self.conn.read_only:
            cache = self.open(key)
            if cache is None:
                raise ReadOnlyStoreError(f"No feature cache {key!r} and the store is read-only.")
            return cache
        self.conn.files.guard(layout.feature_dir(key), write=True)  # zarr writes around files
        return FeatureCache.open(
            self.conn.zarr_store, layout.feature_dir(key), n, d, dtype, dict(attrs), False
        )

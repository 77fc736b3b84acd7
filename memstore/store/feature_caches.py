"""The feature-cache registry: entries ``features/<key>/`` of a store (the cache itself is
:class:`memstore.features.cache.FeatureCache`, handed the zarr group and the file layer), and
what ``verify`` checks of them (:func:`feature_cache_problems`)."""

from __future__ import annotations

from memstore.errors import MemstoreError, ReadOnlyStoreError
from memstore.features.cache import FeatureCache

from . import checks, layout
from .connect import Connection

__all__ = ["FeatureCaches", "feature_cache_problems"]


class FeatureCaches:
    """The feature caches of one store."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def keys(self) -> list[str]:
        return [k for k in self.conn.files.listdir(layout.FEATURES) if k != layout.ROOT_METADATA]

    def open(self, key: str) -> FeatureCache | None:
        """The entry ``key``, or ``None`` if it does not exist.

        Raises :class:`~memstore.errors.CorruptStoreError` naming the damaged file when the
        entry exists but its metadata is damaged.
        """
        folder = layout.feature_dir(key)
        if not FeatureCache.exists(self.conn.files, folder):
            return None
        return FeatureCache.attach(
            self.conn.zarr_store, self.conn.files, folder, self.conn.read_only
        )

    def open_or_create(
        self, key: str, n: int, d: int, dtype: str, attrs: dict | None
    ) -> FeatureCache:
        """The entry ``key`` of shape ``[n, d]``, created if absent (read-only: must exist).

        Every argument is checked before anything is read or written."""
        owner = "Store.feature_cache"
        checks.valid_name(key, owner)
        n, d = (checks.int_at_least(v, name, owner, 1) for name, v in (("n", n), ("d", d)))
        checks.choice(dtype, "dtype", owner, ("float32", "float16"))
        attrs = dict(checks.mapping(attrs, "attrs", owner) or {})
        if self.conn.read_only:
            cache = self.open(key)
            if cache is None:
                raise ReadOnlyStoreError(f"No feature cache {key!r} and the store is read-only.")
            return cache
        self.conn.files.guard(layout.feature_dir(key), write=True)  # zarr writes around files
        return FeatureCache.open(
            self.conn.zarr_store,
            self.conn.files,
            layout.feature_dir(key),
            n,
            d,
            dtype,
            dict(attrs),
            False,
        )


def feature_cache_problems(conn: Connection) -> list[tuple[str, str]]:
    """``(path, message)`` for every damaged file of every feature cache entry: metadata that
    does not open, chunks that fail their checksums. Cost: reads every entry once."""
    caches = FeatureCaches(conn)
    out: list[tuple[str, str]] = []
    for key in caches.keys():
        try:
            cache = caches.open(key)
        except MemstoreError as err:
            out.append((layout.feature_dir(key), str(err)))
            continue
        if cache is not None:
            out.extend(cache.problems())
    return out

"""The one file layer: raw file operations under a root, local or fsspec.

Two backends with one interface (:class:`Files`): local disk (fsync, ``os.link``
create-if-absent) and any fsspec filesystem (``pipe_file(mode="create")`` — ``If-None-Match: *``
on S3). :func:`open_files` is the single place that decides which one a URL gets; the store
and the shard sources both go through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import CreateConflict, Files
from .local import LocalFiles
from .remote import FsspecFiles

__all__ = ["Files", "LocalFiles", "FsspecFiles", "CreateConflict", "is_local_url", "open_files"]

# Object stores whose listings must never come from a cache: commits appear from other processes.
_UNCACHED_LISTINGS = ("s3", "s3a", "gs", "gcs", "az", "abfs")


def is_local_url(url: str) -> bool:
    """A plain path or a ``file://`` URL (everything else goes through fsspec)."""
    return "://" not in url or url.startswith("file://")


def open_files(
    url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> LocalFiles | FsspecFiles:
    """The file backend for ``url``: :class:`LocalFiles` for paths, :class:`FsspecFiles` else.

    Raises ``ValueError`` for an unknown or unavailable URL scheme, or ``storage_options``
    given with a local path.
    """
    url = os.fspath(url)
    if is_local_url(url):
        if storage_options:
            raise ValueError("storage_options only apply to fsspec URLs, not local paths.")
        return LocalFiles(url[len("file://") :] if url.startswith("file://") else url)
    import fsspec

    protocol = url.split("://", 1)[0]
    options = dict(storage_options or {})
    if protocol in _UNCACHED_LISTINGS:
        options.setdefault("use_listings_cache", False)
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except (ValueError, ImportError) as err:
        raise ValueError(
            f"Cannot open {url!r}: unknown or unavailable URL scheme {protocol!r} "
            f"({err}). Use a local path or an fsspec URL such as s3://bucket/prefix."
        ) from err
    return FsspecFiles(fs, root, options)

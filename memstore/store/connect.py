"""Opening a store: URL -> files + zarr store, the root check, the conditional-write probe.

Every failure to reach or read the location becomes a memstore error:
:class:`~memstore.errors.StorePermissionError` (access refused, no credentials),
:class:`~memstore.errors.StoreAccessError` (unreachable, not a directory),
:class:`~memstore.errors.FormatVersionError` (not a memstore, or a newer one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memstore.errors import (
    CorruptStoreError,
    FormatVersionError,
    InvalidParameterError,
    MemstoreError,
    StoreAccessError,
    StorePermissionError,
)
from memstore.io import CreateConflict, FsspecFiles, LocalFiles, open_files

from . import layout

__all__ = [
    "Connection",
    "connect",
    "store_exists",
    "create_root",
    "probe_conditional_writes",
    "access_error",
    "as_url",
]


@dataclass(frozen=True)
class Connection:
    """An open store location: its URL, raw files and the zarr store over the same root."""

    url: str
    files: LocalFiles | FsspecFiles
    zarr_store: Any
    read_only: bool

    @property
    def remote(self) -> bool:
        """Whether the files live on an fsspec filesystem (object store) rather than disk."""
        return isinstance(self.files, FsspecFiles)


def connect(url: str, storage_options: Mapping[str, Any] | None, read_only: bool) -> Connection:
    """The files and zarr store behind ``url`` (nothing read or written yet).

    Raises :class:`~memstore.errors.InvalidParameterError` (a ``ValueError``) for an unknown
    URL scheme or ``storage_options`` given with a local path.
    """
    import zarr.storage

    try:
        files = open_files(url, storage_options)
    except ValueError as err:
        raise InvalidParameterError(str(err)) from err
    if isinstance(files, LocalFiles):
        zstore = zarr.storage.LocalStore(files.root, read_only=read_only)
    else:
        zstore = zarr.storage.FsspecStore.from_url(
            url, storage_options=dict(files.storage_options), read_only=read_only
        )
    return Connection(url, files, zstore, read_only)


def access_error(err: OSError, url: str, what: str) -> MemstoreError:
    """``err`` (raised while doing ``what`` at ``url``) as a memstore error of the same kind."""
    if isinstance(err, PermissionError):
        return StorePermissionError(
            f"Access to {url!r} was refused while trying to {what} ({err}): check the "
            "credentials in storage_options (key/secret) or the environment, and the "
            "permissions of the location."
        )
    return StoreAccessError(f"Cannot {what} at {url!r}: {err}")


def _credential_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:  # no S3 support installed: no such errors can occur
        return ()
    return (NoCredentialsError, PartialCredentialsError)


def store_exists(conn: Connection) -> bool:
    """Whether a memstore of a readable format is at the root (``False``: empty or absent)."""
    url = conn.url
    try:
        raw = conn.files.read(layout.ROOT_METADATA)
    except FileNotFoundError:
        if conn.files.listdir(""):
            raise FormatVersionError(
                f"{url!r} is not empty and is not a Zarr group, so not a memstore."
            ) from None
        return False
    except PermissionError as err:
        raise StorePermissionError(
            f"Access to {url!r} was refused ({err}): check the credentials in "
            "storage_options (key/secret) or the environment."
        ) from err
    except OSError as err:
        raise StoreAccessError(f"Cannot reach the store at {url!r}: {err}") from err
    except _credential_errors() as err:
        raise StorePermissionError(
            f"No credentials to access {url!r} ({err}): pass "
            "storage_options={'key': ..., 'secret': ...} or set AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY."
        ) from err
    try:
        meta = json.loads(raw)
    except ValueError as err:
        raise CorruptStoreError(f"{url}/zarr.json is not valid JSON ({err}).") from err
    version = (meta.get("attributes") or {}).get(layout.FORMAT_ATTRIBUTE)
    if version is None:
        raise FormatVersionError(
            f"{url!r} is a Zarr {meta.get('node_type', 'node')} but not a memstore "
            "(no 'memstore_format' attribute)."
        )
    if not isinstance(version, int) or version > layout.FORMAT_VERSION:
        raise FormatVersionError(
            f"{url!r} was written with memstore format {version!r}; this memstore "
            f"reads format {layout.FORMAT_VERSION} and older. Upgrade memstore to open it."
        )
    return True


def create_root(conn: Connection) -> None:
    """Write the root group with its ``memstore_format`` attribute."""
    import zarr

    try:
        zarr.open_group(
            store=conn.zarr_store,
            mode="a",
            attributes={layout.FORMAT_ATTRIBUTE: layout.FORMAT_VERSION},
        )
    except PermissionError as err:
        raise StorePermissionError(f"Cannot create a memstore at {conn.url!r}: {err}") from err
    except OSError as err:
        raise StoreAccessError(f"Cannot create a memstore at {conn.url!r}: {err}") from err


def probe_conditional_writes(conn: Connection) -> bool:
    """Whether a second create-if-absent of the same path is refused (``If-None-Match``)."""
    folder = layout.new_probe_dir()
    try:
        conn.files.create_if_absent(f"{folder}/p", b"1")
        try:
            conn.files.create_if_absent(f"{folder}/p", b"2")
        except CreateConflict:
            return True
        return False
    except OSError as err:
        raise access_error(err, conn.url, "probe conditional writes") from err
    finally:
        conn.files.delete(folder)


def as_url(url: Any) -> str:
    """``url`` as a str (``os.PathLike`` accepted); ``None`` if it is neither."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    return url if isinstance(url, str) and url else None

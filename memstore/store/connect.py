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
from dataclasses import dataclass, field
from typing import Any

from memstore.errors import (
    CorruptStoreError,
    FormatVersionError,
    InvalidParameterError,
    InvalidParameterTypeError,
    MemstoreError,
    StoreAccessError,
    StorePermissionError,
)
from memstore.io import CreateConflict, FsspecFiles, LocalFiles, open_files

from . import layout

__all__ = [
    "LEGACY_ATTRIBUTE",
    "RootFormat",
    "Connection",
    "connect",
    "store_exists",
    "create_root",
    "probe_conditional_writes",
    "access_error",
    "as_url",
]


LEGACY_ATTRIBUTE = "legacy_commits"  # root attribute: newest format-1 commit of each buffer


@dataclass
class RootFormat:
    """What the root group says of the store's format: its version and, for a store
    upgraded from format 1, the newest format-1 (checksum-less) commit of each buffer."""

    version: int = layout.FORMAT_VERSION
    legacy: dict[str, int] = field(default_factory=dict)

    def legacy_seq(self, name: str) -> int | None:
        """Up to which seq buffer ``name`` may hold format-1 manifests (``None``: any, in a
        format-1 store; ``-1``: none)."""
        if self.version < layout.CHECKSUM_FORMAT:
            return None
        return self.legacy.get(name, -1)


@dataclass(frozen=True)
class Connection:
    """An open store location: its URL, raw files and the zarr store over the same root,
    and the root's format (filled in by :func:`store_exists` / :func:`create_root`)."""

    url: str
    files: LocalFiles | FsspecFiles
    zarr_store: Any
    read_only: bool
    root: RootFormat = field(default_factory=RootFormat)

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

    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise InvalidParameterTypeError(
            "The 'storage_options' parameter of open_store must be None or a mapping. "
            f"Got {storage_options!r} instead."
        )
    if url.startswith("file://") and not url[len("file://") :]:
        raise InvalidParameterError(
            "The 'url' parameter of open_store must name a location. Got 'file://' (no "
            "path) instead; pass a path such as file:///data/m.zarr."
        )
    try:
        files = open_files(url, storage_options)
    except ValueError as err:
        raise InvalidParameterError(str(err)) from err
    except OSError as err:  # an unreachable server (ftp://), a missing archive (zip://)
        raise access_error(err, url, "open the location") from err
    if isinstance(files, LocalFiles):
        zstore = zarr.storage.LocalStore(files.root, read_only=read_only)
    else:
        zstore = zarr.storage.FsspecStore.from_url(
            url, storage_options=dict(files.storage_options), read_only=read_only
        )
    return Connection(url, files, zstore, read_only)


def access_error(err: OSError, url: str, what: str) -> MemstoreError:
    """``err`` (raised while doing ``what`` at ``url``) as a memstore error of the same kind
    (one that already is a memstore error, such as an unsafe path, keeps its own kind)."""
    if isinstance(err, MemstoreError):
        return type(err)(*err.args)
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
    """Whether a memstore of a readable format is at the root (``False``: empty or absent).

    Records the root's format in ``conn.root``. A root of an older format (1 or 2) opened for
    writing is upgraded to the current format first (``FORMAT.md``, "Compatibility");
    read-only, a store is never modified (call again to see a later upgrade).
    """
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
    meta = _root_metadata(raw, url)
    attributes = meta.get("attributes")
    version = attributes.get(layout.FORMAT_ATTRIBUTE)
    if version is None:
        raise FormatVersionError(
            f"{url!r} is a Zarr {meta.get('node_type', 'node')} but not a memstore "
            "(no 'memstore_format' attribute)."
        )
    if type(version) is not int or version > layout.FORMAT_VERSION:
        raise FormatVersionError(
            f"{url!r} was written with memstore format {version!r}; this memstore "
            f"reads format {layout.FORMAT_VERSION} and older. Upgrade memstore to open it."
        )
    legacy = attributes.get(LEGACY_ATTRIBUTE, {})
    if not isinstance(legacy, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in legacy.items()
    ):
        raise CorruptStoreError(
            f"{url}/zarr.json: attribute {LEGACY_ATTRIBUTE!r} is damaged (not an object of "
            "int commit numbers)."
        )
    conn.root.version, conn.root.legacy = version, dict(legacy)
    if version < layout.FORMAT_VERSION and not conn.read_only:
        _upgrade_root(conn, meta)
    return True


def _root_metadata(raw: bytes, url: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or not isinstance(meta.get("attributes", {}), dict):
            raise ValueError("not a Zarr group document")
    except ValueError as err:
        raise CorruptStoreError(f"{url}/zarr.json is damaged ({err}).") from err
    meta.setdefault("attributes", {})
    return meta


def _upgrade_root(conn: Connection, meta: dict[str, Any]) -> None:
    """Upgrade an older root to the current format. From format 1, record the newest
    (format-1, checksum-less) commit of each buffer: every manifest above it must carry a
    checksum. From format 2 nothing else changes: the version alone keeps a format-2
    memstore, whose gc ignores ``run_state.refs``, from opening the store (``FORMAT.md``)."""
    meta = dict(meta, attributes=dict(meta["attributes"]))
    meta["attributes"][layout.FORMAT_ATTRIBUTE] = layout.FORMAT_VERSION
    legacy = dict(conn.root.legacy)
    if conn.root.version < layout.CHECKSUM_FORMAT:
        for name in conn.files.listdir(layout.BUFFERS):
            entries = conn.files.listdir(layout.commits_dir(name))
            seqs = [s for s in map(layout.manifest_seq, entries) if s is not None]
            if seqs:
                legacy[name] = max(seqs)
        meta["attributes"][LEGACY_ATTRIBUTE] = legacy
    try:
        conn.files.write_file(layout.ROOT_METADATA, json.dumps(meta, indent=2).encode())
    except OSError as err:
        raise access_error(err, conn.url, "upgrade the store's format") from err
    conn.root.version, conn.root.legacy = layout.FORMAT_VERSION, legacy


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
    conn.root.version, conn.root.legacy = layout.FORMAT_VERSION, {}


def conditional_writes(conn: Connection, path: str, single_writer: bool) -> bool:
    """Probe a remote store for create-if-absent writes; without them, refuse to open it
    unless the caller vouches that only one process ever writes (``single_writer``)."""
    supported = probe_conditional_writes(conn)
    if not supported and not single_writer:
        raise MemstoreError(
            f"The object store behind {path!r} ignores conditional writes "
            "(If-None-Match), so two writers could silently overwrite each other's "
            "commits. Use a server that supports them, or pass single_writer=True "
            "to open_store if only one process ever writes to this store."
        )
    return supported


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

"""The one file layer: raw file operations under a root, local or fsspec.

Two backends with one interface (:class:`Files`): local disk (fsync, ``os.link``
create-if-absent) and any fsspec filesystem (``pipe_file(mode="create")`` — ``If-None-Match: *``
on S3). :func:`open_files` is the single place that decides which one a URL gets; the store
and the shard sources both go through it.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, Protocol

from memstore.errors import StoreAccessError, UnsafePathError

__all__ = ["Files", "LocalFiles", "FsspecFiles", "CreateConflict", "is_local_url", "open_files"]

_MAX_OPEN_FILES = 64  # file descriptors a LocalFiles keeps open for ranged reads
# Object stores whose listings must never come from a cache: commits appear from other processes.
_UNCACHED_LISTINGS = ("s3", "s3a", "gs", "gcs", "az", "abfs")


class Files(Protocol):
    """What the rest of memstore needs of a storage root (paths are '/'-separated, relative)."""

    root: str
    durable: bool

    def guard(self, path: str, write: bool = False) -> None: ...
    def read(self, path: str) -> bytes: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def mtime(self, path: str) -> float: ...
    def delete(self, path: str) -> None: ...
    def sync_tree(self, path: str) -> None: ...
    def write_file(self, path: str, data: bytes) -> None: ...
    def create_if_absent(self, path: str, data: bytes) -> None: ...
    # Reads by byte range (shard sources): ranges past the end of a file come back short.
    def size(self, path: str) -> int: ...
    def read_range(self, path: str, start: int, end: int) -> Any: ...
    def read_ranges(
        self, paths: Sequence[str], starts: Sequence[int], ends: Sequence[int]
    ) -> list[Any]: ...
    def readinto_ranges(
        self, paths: Sequence[str], starts: Sequence[int], buffers: Sequence[Any]
    ) -> list[int]: ...
    def open_stream(self, path: str, block_size: int) -> BinaryIO: ...
    def close(self) -> None: ...


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


class CreateConflict(Exception):
    """``create_if_absent`` found the path already there (another writer won)."""


def _relative_parts(path: str, root: str) -> list[str]:
    """The '/'-separated parts of ``path``; :class:`~memstore.errors.UnsafePathError` for a
    path that is absolute or could climb out of ``root`` (``..``, ``.``, empty parts)."""
    if not path:
        return []
    parts = path.split("/")
    if any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise UnsafePathError(f"{path!r} is not a path inside the store root {root!r}.")
    return parts


class LocalFiles:
    """Files under a local directory; durable writes via fsync.

    Paths never leave the root: ``..`` is refused, reads never follow a symbolic link out of
    the root, and writes and deletes never go through one (a link itself is deleted, not its
    target) — :class:`~memstore.errors.UnsafePathError` otherwise.
    """

    durable = True

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _p(self, path: str) -> str:
        parts = _relative_parts(path, self.root)
        return os.path.join(self.root, *parts) if parts else self.root

    def _link_in(self, path: str, final: bool) -> str | None:
        """The first symbolic link among the folders of ``path`` below the root (and the
        path itself if ``final``), or ``None``."""
        parts = _relative_parts(path, self.root)
        current = self.root
        for part in parts if final else parts[:-1]:
            current = os.path.join(current, part)
            if os.path.islink(current):
                return current
            if not os.path.exists(current):
                return None
        return None

    def guard(self, path: str, write: bool = False) -> None:
        """Refuse (:class:`~memstore.errors.UnsafePathError`) a read a symbolic link leads
        out of the root, or a write through any symbolic link. Cost: a few ``lstat``."""
        full = self._p(path)
        if write:
            link = self._link_in(path, final=True)
            if link is not None:
                raise UnsafePathError(
                    f"Refusing to write {path!r} in the store at {self.root!r}: {link!r} is a "
                    "symbolic link, and memstore never writes or deletes through one. Replace "
                    "it by a real folder (or open the store at the link's target)."
                )
            return
        real, top = os.path.realpath(full), os.path.realpath(self.root)
        if real != top and not real.startswith(top + os.sep):
            raise UnsafePathError(
                f"Refusing to read {path!r} in the store at {self.root!r}: a symbolic link "
                f"leads it out of the store root (to {real!r})."
            )

    def _read_path(self, path: str) -> str:
        self.guard(path)
        return self._p(path)

    def _write_path(self, path: str) -> str:
        self.guard(path, write=True)
        return self._p(path)

    def read(self, path: str) -> bytes:
        with open(self._read_path(path), "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(self._read_path(path))

    def listdir(self, path: str) -> list[str]:
        """Child names (zarr's own ``zarr.json`` metadata excluded)."""
        try:
            names = os.listdir(self._read_path(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if n != "zarr.json")

    def mtime(self, path: str) -> float:
        """Modification time of the path itself (a symbolic link is not followed)."""
        return os.lstat(self._p(path)).st_mtime

    def delete(self, path: str) -> None:
        """Remove a file or a whole directory tree (missing is fine); a symbolic link is
        removed itself, never what it points at. Raises :class:`~memstore.errors.UnsafePathError`
        if a folder above ``path`` is a link, ``StoreAccessError`` if it cannot be removed."""
        import shutil

        full = self._p(path)
        link = self._link_in(path, final=False)
        if link is not None:
            raise UnsafePathError(
                f"Refusing to delete {path!r} in the store at {self.root!r}: {link!r} is a "
                "symbolic link, and memstore never writes or deletes through one."
            )
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)  # never follows links inside the tree
        else:
            try:
                os.unlink(full)
            except FileNotFoundError:
                pass
        if os.path.lexists(full):
            raise StoreAccessError(f"Cannot remove {full!r} (permissions?).")

    def _fsync_dir(self, full: str) -> None:
        fd = os.open(full, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_tree(self, path: str) -> None:
        """fsync every file and directory under ``path``, then the directories above it."""
        top = self._write_path(path)
        for dirpath, _dirs, files in os.walk(top, topdown=False):
            for name in files:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._fsync_dir(dirpath)
        parent = os.path.dirname(top)
        while parent.startswith(self.root) and os.path.isdir(parent):
            self._fsync_dir(parent)
            if parent == self.root:
                break
            parent = os.path.dirname(parent)

    def write_file(self, path: str, data: bytes) -> None:
        """Write via temp file + fsync + rename (whole file or nothing)."""
        full = self._write_path(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = os.path.join(os.path.dirname(full), f".tmp-{uuid.uuid4().hex[:12]}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, full)
        self._fsync_dir(os.path.dirname(full))

    def create_if_absent(self, path: str, data: bytes) -> None:
        """Publish ``data`` at ``path`` only if nothing is there: temp file, fsync, link."""
        full = self._write_path(path)
        folder = os.path.dirname(full)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, full)
        except FileExistsError as err:
            raise CreateConflict(path) from err
        finally:
            os.unlink(tmp)
        self._fsync_dir(folder)

    # -- ranged reads (shard sources) ------------------------------------------------------
    # Descriptors are cached per process (at most 64, oldest closed first) and never shared
    # with a forked child (a DataLoader worker): the cache is reset when the pid changes and
    # dropped when pickled.
    _fds: dict[str, int] | None = None
    _fds_pid = 0

    def _open_fds(self) -> dict[str, int]:
        """This process's descriptor cache (a fresh one after a fork)."""
        if self._fds is None or self._fds_pid != os.getpid():
            self._fds, self._fds_pid = {}, os.getpid()
        return self._fds

    def _fd(self, fds: dict[str, int], path: str) -> int:
        fd = fds.get(path)
        if fd is None:
            if len(fds) >= _MAX_OPEN_FILES:
                os.close(fds.pop(next(iter(fds))))
            fd = fds[path] = os.open(self._p(path), os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def size(self, path: str) -> int:
        """Size in bytes (``FileNotFoundError`` if missing)."""
        return os.stat(self._p(path)).st_size

    def read_range(self, path: str, start: int, end: int) -> bytearray:
        """Bytes ``[start, end)`` of a file by one ``preadv`` (short where the file ends)."""
        buf = bytearray(end - start)
        got = os.preadv(self._fd(self._open_fds(), path), [buf], start) if end > start else 0
        return buf if got == len(buf) else buf[:got]

    def read_ranges(
        self, paths: Sequence[str], starts: Sequence[int], ends: Sequence[int]
    ) -> list[bytearray]:
        """Bytes ``[start, end)`` of each file, one ``preadv`` per range, in the given order
        (short where the file ends first)."""
        fds, out, last, fd = self._open_fds(), [], None, -1
        for path, start, end in zip(paths, starts, ends, strict=True):
            if path != last:  # the descriptor in hand is never the one evicted
                last, fd = path, self._fd(fds, path)
            buf = bytearray(end - start)
            got = os.preadv(fd, [buf], start) if end > start else 0
            out.append(buf if got == len(buf) else buf[:got])
        return out

    def readinto_ranges(
        self, paths: Sequence[str], starts: Sequence[int], buffers: Sequence[Any]
    ) -> list[int]:
        """Fill each writable buffer from its file at ``start`` (one ``preadv`` each, no copy);
        returns the byte counts read (short where the file ends first)."""
        fds, out, last, fd = self._open_fds(), [], None, -1
        for path, start, buf in zip(paths, starts, buffers, strict=True):
            if path != last:
                last, fd = path, self._fd(fds, path)
            out.append(os.preadv(fd, [buf], start))
        return out

    def open_stream(self, path: str, block_size: int) -> BinaryIO:
        """An unbuffered sequential reader (each ``read`` is one system call)."""
        return open(self._p(path), "rb", buffering=0)  # noqa: SIM115 - the caller closes it

    def close(self) -> None:
        """Close cached descriptors (reopened on the next read); a forked child's copies of
        its parent's descriptors are left alone."""
        if self._fds and self._fds_pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_fds", None)
        state.pop("_fds_pid", None)
        return state


class FsspecFiles:
    """Files under an fsspec URL; publishing relies on the server's conditional PUT."""

    durable = False

    def __init__(self, fs: Any, root: str, storage_options: Mapping[str, Any] | None = None):
        self.fs = fs
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def _p(self, path: str) -> str:
        parts = _relative_parts(path, self.root)
        return posixpath.join(self.root, *parts) if parts else self.root

    def guard(self, path: str, write: bool = False) -> None:
        """Refuse a path that could climb out of the root (object stores have no links)."""
        self._p(path)

    def read(self, path: str) -> bytes:
        return self.fs.cat_file(self._p(path))

    def exists(self, path: str) -> bool:
        return self.fs.exists(self._p(path))

    def listdir(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(self._p(path), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        except TypeError:  # filesystems without a listing cache
            entries = self.fs.ls(self._p(path), detail=False)
        full = self._p(path).rstrip("/")
        names = (posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != full)
        return sorted(n for n in names if n != "zarr.json")

    def mtime(self, path: str) -> float:
        """Newest modification time of the file, or of any file under the prefix.

        Object stores have no directory times; an empty prefix counts as infinitely old.
        """
        found = self.fs.find(self._p(path), detail=True)
        stamps = [_stamp(info) for info in found.values()] or [0.0]
        return max(stamps)

    def delete(self, path: str) -> None:
        full = self._p(path)
        try:
            found = self.fs.find(full, withdirs=True, detail=True)
        except FileNotFoundError:
            found = {}
        files = [p for p, info in found.items() if info.get("type") != "directory"]
        if files:
            self.fs.rm(files)
        elif not found:
            try:
                self.fs.rm_file(full)
            except FileNotFoundError:
                pass
        # Some servers (SeaweedFS) keep emptied "folders" listed until their folder keys are
        # deleted, deepest first; elsewhere this is a no-op.
        folders = {full}
        for p in files:
            folder = posixpath.dirname(p)
            while folder.startswith(full + "/") and folder not in folders:
                folders.add(folder)
                folder = posixpath.dirname(folder)
        for folder in sorted(folders, key=len, reverse=True):
            self._delete_folder_key(folder)

    def _delete_folder_key(self, folder: str) -> None:
        call = getattr(self.fs, "call_s3", None)  # shape: allow s3fs-only folder keys
        if call is None:
            return
        bucket, _, key = folder.partition("/")
        try:
            call("delete_object", Bucket=bucket, Key=key.rstrip("/") + "/")
        except (OSError, FileNotFoundError):
            pass

    def sync_tree(self, path: str) -> None:
        """Object stores make each PUT durable on success; nothing to do."""

    def write_file(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(path), data)

    def create_if_absent(self, path: str, data: bytes) -> None:
        # ``pipe_file(mode="create")`` sends ``If-None-Match: *``; never ``open("xb")``, which
        # commits an empty file without the header.
        try:
            self.fs.pipe_file(self._p(path), data, mode="create")
        except FileExistsError as err:
            raise CreateConflict(path) from err
        except OSError as err:
            if _is_precondition_failure(err):  # SeaweedFS: s3fs maps its 412 to EINVAL
                raise CreateConflict(path) from err
            raise

    # -- ranged reads (shard sources) ------------------------------------------------------
    def size(self, path: str) -> int:
        """Size in bytes (``FileNotFoundError`` if missing)."""
        return int(self.fs.size(self._p(path)))

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a file by one ranged read (short where the file ends)."""
        return self.fs.cat_file(self._p(path), start=start, end=end) if end > start else b""

    def read_ranges(
        self, paths: Sequence[str], starts: Sequence[int], ends: Sequence[int]
    ) -> list[bytes]:
        """Bytes ``[start, end)`` of each file by ranged reads (``cat_ranges``: concurrent on
        async filesystems such as s3fs); short where the file ends first."""
        wanted = [k for k, (a, b) in enumerate(zip(starts, ends, strict=True)) if b > a]
        out: list[bytes] = [b""] * len(starts)
        if wanted:
            got = self.fs.cat_ranges(
                [self._p(paths[k]) for k in wanted],
                [int(starts[k]) for k in wanted],
                [int(ends[k]) for k in wanted],
                on_error="raise",
            )
            for k, data in zip(wanted, got, strict=True):
                out[k] = data
        return out

    def readinto_ranges(
        self, paths: Sequence[str], starts: Sequence[int], buffers: Sequence[Any]
    ) -> list[int]:
        """Fill each buffer from its file at ``start`` (one batch of ranged reads); returns
        the byte counts read."""
        ends = [int(a) + memoryview(b).nbytes for a, b in zip(starts, buffers, strict=True)]
        got = self.read_ranges(paths, starts, ends)
        for buf, data in zip(buffers, got, strict=True):
            memoryview(buf).cast("B")[: len(data)] = data
        return [len(data) for data in got]

    def open_stream(self, path: str, block_size: int) -> BinaryIO:
        """A sequential reader fetching ``block_size`` bytes per request."""
        return self.fs.open(self._p(path), "rb", block_size=block_size)

    def close(self) -> None:
        """Nothing is held open between reads."""


def _is_precondition_failure(err: BaseException) -> bool:
    """An S3 412 PreconditionFailed / 409 ConditionalRequestConflict, however s3fs wrapped it."""
    for exc in (err, err.__cause__):
        response = getattr(exc, "response", None)  # shape: allow botocore ClientError payload
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                return True
    return False


def _stamp(info: dict) -> float:
    stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
    if isinstance(stamp, datetime.datetime):
        return float(stamp.timestamp())
    return float(stamp) if stamp is not None else time.time()

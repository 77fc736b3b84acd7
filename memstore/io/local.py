"""Local disk: durable writes (fsync), ``os.link`` create-if-absent, no path out of the root."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any, BinaryIO

from memstore.errors import StoreAccessError, UnsafePathError

from .base import CreateConflict, relative_parts

__all__ = ["LocalFiles"]

_MAX_OPEN_FILES = 64  # file descriptors a LocalFiles keeps open for ranged reads


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
        parts = relative_parts(path, self.root)
        return os.path.join(self.root, *parts) if parts else self.root

    def _link_in(self, path: str, final: bool) -> str | None:
        """The first symbolic link among the folders of ``path`` below the root (and the
        path itself if ``final``), or ``None``."""
        parts = relative_parts(path, self.root)
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
        failed: list[str] = []

        def note(_fn: Any, where: str, exc_info: Any) -> None:
            if not isinstance(exc_info[1], FileNotFoundError):  # removed meanwhile is fine
                failed.append(f"{where}: {exc_info[1]}")

        # Judged by the removals, not a second look: a claim may be re-created at once.
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, onerror=note)  # never follows links inside the tree
        else:
            try:
                os.unlink(full)
            except FileNotFoundError:
                pass
            except OSError as err:
                failed.append(f"{full}: {err}")
        if failed:
            raise StoreAccessError(f"Cannot remove {full!r}: {failed[0]}")

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

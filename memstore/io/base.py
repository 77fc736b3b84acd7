"""The contract of the file layer (:class:`Files`), its one shared exception and the path
rule both backends apply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

from memstore.errors import UnsafePathError

__all__ = ["Files", "CreateConflict", "relative_parts"]


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


class CreateConflict(Exception):
    """``create_if_absent`` found the path already there (another writer won)."""


def relative_parts(path: str, root: str) -> list[str]:
    """The '/'-separated parts of ``path``; :class:`~memstore.errors.UnsafePathError` for a
    path that is absolute or could climb out of ``root`` (``..``, ``.``, empty parts)."""
    if not path:
        return []
    parts = path.split("/")
    if any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise UnsafePathError(f"{path!r} is not a path inside the store root {root!r}.")
    return parts

"""Where the shards of a source live: each shard is a file in a folder opened with
:func:`memstore.io.open_files` (local disk or fsspec), so shards read through the same file
layer as the store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, BinaryIO

from memstore.io import Files, FsspecFiles, is_local_url, open_files

__all__ = ["ShardFiles"]

_OWNER = "ShardSource"  # error messages name the public class


def _folder_and_name(url: str) -> tuple[str, str]:
    """``("d/x", "t.tar")`` of ``"d/x/t.tar"``; a local path is made absolute first."""
    if is_local_url(url):
        path = os.path.abspath(url[len("file://") :] if url.startswith("file://") else url)
        return os.path.dirname(path), os.path.basename(path)
    head, _, name = url.rpartition("/")
    return (head + "/" if head.endswith(":/") else head), name


class ShardFiles:
    """Shard ``s`` is file ``names[s]`` of ``folders[folder_of[s]]`` (one :class:`Files` per
    distinct folder). All shards are local paths, or all are URLs of one protocol.

    Reads take shard numbers; ranges past the end of a shard come back short (the caller
    reports the truncation). Local reads are ``preadv`` on descriptors cached per process.
    """

    def __init__(self, urls: Sequence[str], storage_options: dict[str, Any] | None) -> None:
        local = [is_local_url(u) for u in urls]
        if any(local) and not all(local):
            raise ValueError(f"The 'spec' parameter of {_OWNER} mixes local paths and URLs.")
        by_folder: dict[str, int] = {}
        self.folders: list[Files] = []
        self.folder_of: list[int] = []
        self.names: list[str] = []
        for url in urls:
            folder, name = _folder_and_name(url)
            if folder not in by_folder:
                by_folder[folder] = len(self.folders)
                self.folders.append(
                    open_files(folder, None if all(local) else dict(storage_options or {}))
                )
            self.folder_of.append(by_folder[folder])
            self.names.append(name)
        remote = [f.fs for f in self.folders if isinstance(f, FsspecFiles)]
        if len({type(fs) for fs in remote}) > 1:
            raise ValueError(f"The 'spec' parameter of {_OWNER} mixes URL protocols.")

    def _group(self, shards: Sequence[int]) -> dict[int, list[int]]:
        """Positions of ``shards`` per folder, in order."""
        groups: dict[int, list[int]] = {}
        for k, s in enumerate(shards):
            groups.setdefault(self.folder_of[s], []).append(k)
        return groups

    def size(self, shard: int) -> int:
        """Size of shard ``shard`` in bytes (``FileNotFoundError`` if missing)."""
        return self.folders[self.folder_of[shard]].size(self.names[shard])

    def read(self, shard: int, start: int, end: int) -> Any:
        """Bytes ``[start, end)`` of one shard."""
        return self.folders[self.folder_of[shard]].read_range(self.names[shard], start, end)

    def read_ranges(
        self, shards: Sequence[int], starts: Sequence[int], ends: Sequence[int]
    ) -> list[Any]:
        """Bytes ``[start, end)`` of each listed shard, in request order."""
        if len(self.folders) == 1:
            return self.folders[0].read_ranges([self.names[s] for s in shards], starts, ends)
        out: list[Any] = [None] * len(shards)
        for folder, pos in self._group(shards).items():
            got = self.folders[folder].read_ranges(
                [self.names[shards[k]] for k in pos],
                [starts[k] for k in pos],
                [ends[k] for k in pos],
            )
            for k, data in zip(pos, got, strict=True):
                out[k] = data
        return out

    def readinto_ranges(
        self, shards: Sequence[int], starts: Sequence[int], buffers: Sequence[Any]
    ) -> list[int]:
        """Fill each buffer from its shard at ``start``; the byte counts read."""
        if len(self.folders) == 1:
            return self.folders[0].readinto_ranges([self.names[s] for s in shards], starts, buffers)
        out = [0] * len(shards)
        for folder, pos in self._group(shards).items():
            got = self.folders[folder].readinto_ranges(
                [self.names[shards[k]] for k in pos],
                [starts[k] for k in pos],
                [buffers[k] for k in pos],
            )
            for k, n in zip(pos, got, strict=True):
                out[k] = n
        return out

    def open_stream(self, shard: int, block_size: int) -> BinaryIO:
        """A sequential reader over one shard (the caller closes it)."""
        return self.folders[self.folder_of[shard]].open_stream(self.names[shard], block_size)

    def close(self) -> None:
        """Close cached descriptors (reopened on the next read)."""
        for files in self.folders:
            files.close()

"""Any fsspec filesystem: publishing relies on the server's conditional PUT
(``pipe_file(mode="create")`` — ``If-None-Match: *`` on S3)."""

from __future__ import annotations

import datetime
import posixpath
import time
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

from .base import CreateConflict, relative_parts

__all__ = ["FsspecFiles"]


class FsspecFiles:
    """Files under an fsspec URL; publishing relies on the server's conditional PUT."""

    durable = False

    def __init__(self, fs: Any, root: str, storage_options: Mapping[str, Any] | None = None):
        self.fs = fs
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def _p(self, path: str) -> str:
        parts = relative_parts(path, self.root)
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

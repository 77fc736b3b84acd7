"""Looking at a store's files from outside it, through fsspec (any backend)."""

from __future__ import annotations

import hashlib
import json

import fsspec

__all__ = ["fs_root", "tree", "put", "flip_byte", "manifest", "snapshot_path"]


def fs_root(url: str, options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url, **(options or {}))
    return fs, root.rstrip("/")


def tree(url: str, options: dict | None) -> dict[str, str]:
    """Every path under ``url`` with a digest of its content ("dir" for directories)."""
    fs, root = fs_root(url, options)
    fs.invalidate_cache()  # another Store may have written since this instance listed
    if not fs.exists(root):
        return {}
    out = {}
    local = "file" in fs.protocol or "local" in fs.protocol
    # Object stores have no real directories (SeaweedFS lists emptied ones for a while):
    # compare files only there.
    for path, info in fs.find(root, withdirs=local, detail=True).items():
        rel = path[len(root) :]
        if info["type"] == "directory":
            out[rel] = "dir"
        else:
            out[rel] = hashlib.md5(fs.cat_file(path)).hexdigest()
    return out


def put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    fs.mkdirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def flip_byte(url: str, options: dict | None, path: str, offset: int) -> None:
    """Damage ``path`` (relative to the store's root) in place: invert the byte at ``offset``
    (negative: from the end), size unchanged, as bit rot would. Cost: rewrites the file."""
    fs, root = fs_root(url, options)
    data = bytearray(fs.cat_file(f"{root}/{path}"))
    data[offset] ^= 0xFF
    fs.pipe_file(f"{root}/{path}", bytes(data))


def manifest(url: str, options: dict | None, name: str, seq: int) -> dict:
    fs, root = fs_root(url, options)
    fs.invalidate_cache()  # a listing cached by tree() would hide files written since
    return json.loads(fs.cat_file(f"{root}/buffers/{name}/commits/{seq:010d}.json"))


def snapshot_path(url, options, name, seq) -> str:
    return f"buffers/{name}/{manifest(url, options, name, seq)['snapshot']}"

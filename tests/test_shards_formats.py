"""Issue 12, item 2: shards written by real tools -- webdataset's ShardWriter / TarWriter, GNU
tar (gnu, pax, ustar), Python's tarfile (all three formats) -- with long names (> 100 bytes) and
non-ASCII keys index and read back as webdataset itself reads them; compressed shards are
refused with a message naming the file."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from memstore.sources.shards import ShardSource

LONG_DIR = "a" * 70 + "/" + "b" * 50 + "/"  # > 100 bytes with the file name: ustar's prefix
KEYS = [f"{LONG_DIR}ключ-{i}-猫é" for i in range(3)] + [f"short{i}" for i in range(3)]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _members() -> list[tuple[str, bytes]]:
    out = []
    for i, key in enumerate(KEYS):
        out += [(f"{key}.cls", str(i % 2).encode()), (f"{key}.input.npy", _npy(np.arange(i + 1)))]
    return out


def _check(paths: list[str]) -> None:
    """Every sample equals webdataset's own reading of the shards; keys and targets right."""
    reference = list(wds.WebDataset(paths, shardshuffle=False))
    src = ShardSource(paths, decode=False, progress=False)
    assert len(src) == len(reference) == len(KEYS) * len(paths)
    assert src.keys.tolist() == KEYS * len(paths)
    assert src.targets.tolist() == [i % 2 for i in range(len(KEYS))] * len(paths)
    assert [src[i] for i in range(len(src))] == reference
    assert src.get_many(np.arange(len(src))[::-1]) == reference[::-1]
    arrays = ShardSource(paths, progress=False)
    assert [arrays[i][0].tolist() for i in range(len(KEYS))] == [
        list(range(i + 1)) for i in range(len(KEYS))
    ]


@pytest.mark.parametrize(
    "fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=str
)
def test_python_tarfile_formats(tmp_path, fmt):
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt, encoding="utf-8") as tf:
        for name, data in _members():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.7e9 + 0.5
            tf.addfile(info, io.BytesIO(data))
    _check([str(path)])


def test_webdataset_shardwriter_and_tarwriter(tmp_path):
    pattern = str(tmp_path / "w-%02d.tar")
    with wds.ShardWriter(pattern, maxcount=len(KEYS), verbose=0) as sink:  # default float mtime
        for _ in range(2):
            for i, key in enumerate(KEYS):
                sink.write({"__key__": key, "cls": i % 2, "input.npy": np.arange(i + 1)})
    with wds.TarWriter(str(tmp_path / "t.tar"), mtime=0) as sink:
        for i, key in enumerate(KEYS):
            sink.write({"__key__": key, "cls": i % 2, "input.npy": np.arange(i + 1)})
    _check([pattern % 0, pattern % 1, str(tmp_path / "t.tar")])


@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar"])
def test_gnu_tar_formats(tmp_path, fmt):
    if shutil.which("tar") is None:
        pytest.skip("no tar binary on this machine")
    root = tmp_path / "files"
    names = []
    for name, data in _members():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        names.append(name)
    out = tmp_path / f"{fmt}.tar"
    run = subprocess.run(
        ["tar", f"--format={fmt}", "-cf", str(out), "-C", str(root), *names],
        capture_output=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert run.returncode == 0, run.stderr
    _check([str(out)])


def test_compressed_shards_are_refused(tmp_path):
    plain = tmp_path / "t.tar"
    with tarfile.open(plain, "w") as tf:
        for name, data in _members():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    gz = tmp_path / "t.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert len(list(wds.WebDataset(str(gz), shardshuffle=False))) == len(KEYS)  # wds streams it
    with pytest.raises(ValueError, match=r"'.*t\.tar\.gz' is gzip-compressed.*decompress"):
        ShardSource([str(plain), str(gz)], progress=False)
    tiny = tmp_path / "tiny.tar.gz"
    tiny.write_bytes(gzip.compress(b""))
    with pytest.raises(ValueError, match="tiny.tar.gz' is gzip-compressed"):
        ShardSource([str(tiny)], progress=False)
    assert len(ShardSource([str(plain)], progress=False)) == len(KEYS)
    assert Path(plain).exists()

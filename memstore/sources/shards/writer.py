"""The shard writer: webdataset tar shards from arrays, an ``.npz``, an image folder or
synthetic data.

Each sample is written as ``<key>.<input_ext>`` (``input.npy``, or the image's own extension)
and ``<key>.cls`` (the target as text); keys are ``"%09d"`` of the sample's position. Shards
are written with ``webdataset.ShardWriter`` with ``mtime=0`` (no PAX headers: smaller, faster
to read, byte-reproducible); each local shard is written under a temporary name, fsynced and
renamed, so a killed run never leaves a half-written shard under its final name (an object
store publishes an object only when its upload completes).

The command-line front end is ``tools/make_shards.py``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memstore.io import is_local_url

__all__ = ["write_shards", "write_samples", "write_synthetic", "shard_spec", "WrittenShards"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")
_SYNTH_CHUNK = 4096  # rows generated at a time: RAM stays bounded, output independent of N


@dataclass(frozen=True)
class WrittenShards:
    """What :func:`write_shards` wrote: shard paths, their brace spec, sample count and (for
    an image folder) the class names in target order."""

    paths: list[str]
    spec: str
    count: int
    classes: list[str] | None = None


def shard_spec(pattern: str, n_shards: int) -> str:
    """The brace spec (``"d/train-{000000..000009}.tar"``) of shards ``0..n_shards-1``."""
    match = re.search(r"(?<!%)%(0?\d*)d", pattern)
    if match is None or n_shards < 1:
        raise ValueError(f"The 'pattern' parameter must contain %d (e.g. %06d). Got {pattern!r}.")
    if n_shards == 1:
        return pattern % 0
    field = "%" + match.group(1) + "d"
    head, tail = (
        part.replace("%%", "%") for part in (pattern[: match.start()], pattern[match.end() :])
    )
    return f"{head}{{{field % 0}..{field % (n_shards - 1)}}}{tail}"


def _check_pattern(pattern: str) -> None:
    if not isinstance(pattern, str):
        raise TypeError(f"The 'pattern' parameter must be a str. Got {type(pattern).__name__}.")
    try:
        distinct = pattern % 0 != pattern % 1
    except (TypeError, ValueError):
        distinct = False
    if not distinct:
        raise ValueError(
            f"The 'pattern' parameter must contain one %d field for the shard number "
            f"(e.g. 'out/train-%06d.tar'). Got {pattern!r} instead."
        )


def _npy_bytes_factory():
    """``.npy`` encoding with the header computed once per (dtype, shape)."""
    headers: dict[tuple[str, tuple[int, ...]], bytes] = {}

    def encode(row: np.ndarray) -> bytes:
        row = np.ascontiguousarray(row)
        key = (row.dtype.str, row.shape)
        header = headers.get(key)
        if header is None:
            buf = io.BytesIO()
            np.save(buf, row, allow_pickle=False)
            header = headers[key] = buf.getvalue()[: buf.tell() - row.nbytes]
        return header + row.tobytes()

    return encode


def write_samples(
    samples: Iterable[dict[str, Any]],
    pattern: str,
    maxcount: int,
    maxsize: float,
    *,
    encode: bool = False,
) -> list[str]:
    """Write sample dicts through ``webdataset.ShardWriter`` (``mtime=0``) into shards named
    ``pattern % shard_number``; returns the shard paths. ``encode=False``: values are bytes;
    ``True``: webdataset's encoders by extension (``.npy`` arrays, ``.cls`` ints, ``.json``
    objects; bytes pass unchanged). Each local shard is written under a temporary name,
    fsynced and renamed (never half-written under its final name)."""
    import webdataset as wds

    local = is_local_url(pattern)
    handles: dict[str, Any] = {}
    written: list[str] = []

    def opener(fname: str):
        if local:
            os.makedirs(os.path.dirname(os.path.abspath(fname)), exist_ok=True)
            handles[fname] = open(fname + ".tmp", "wb")  # noqa: SIM115 - closed in publish
        else:
            import fsspec

            handles[fname] = fsspec.open(fname, "wb").open()
        return handles[fname]

    def publish(fname: str) -> None:
        f = handles.pop(fname)
        if local:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(fname + ".tmp", fname)
        else:
            f.close()
        written.append(fname)

    writer = wds.ShardWriter(
        pattern,
        maxcount=maxcount,
        maxsize=maxsize,
        post=publish,
        opener=opener,
        verbose=0,
        encoder=encode,
        mtime=0,
    )
    try:
        for sample in samples:
            writer.write(sample)
        writer.close()
    except BaseException:
        for fname, f in handles.items():  # never leave debris under a final name
            f.close()
            if local and os.path.exists(fname + ".tmp"):
                os.unlink(fname + ".tmp")
        raise
    if local and written:
        fd = os.open(os.path.dirname(os.path.abspath(written[0])), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return written


def _array_samples(inputs: Any, targets: Any, input_ext: str) -> Iterator[dict[str, Any]]:
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    if targets.ndim != 1 or len(targets) != len(inputs):
        raise ValueError(
            f"The 'targets' parameter must be 1-D with one value per input ({len(inputs)}). "
            f"Got shape {targets.shape} instead."
        )
    if targets.dtype.kind not in "iu":
        raise TypeError(f"The 'targets' parameter must hold ints. Got dtype {targets.dtype}.")
    if len(inputs) == 0:
        raise ValueError("There are no samples to write (0 inputs).")
    encode = _npy_bytes_factory()
    for i, (x, y) in enumerate(zip(inputs, targets.tolist(), strict=True)):
        yield {"__key__": f"{i:09d}", input_ext: encode(x), "cls": str(y).encode("ascii")}


def _image_folder(root: str) -> tuple[list[tuple[str, int]], list[str], str]:
    """(path, class) pairs of ``root/<class>/<image>`` in sorted order, classes, extension."""
    classes = sorted(
        d
        for d in os.listdir(root)
        if not d.startswith(".") and os.path.isdir(os.path.join(root, d))
    )
    files = []
    for c, cls in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(root, cls))):
            if name.lower().endswith(IMAGE_SUFFIXES):
                files.append((os.path.join(root, cls, name), c))
    if not files:
        raise ValueError(
            f"The image folder {root!r} holds no images in class subfolders ({classes}); "
            f"expected {root}/<class>/<image> with suffixes {IMAGE_SUFFIXES}."
        )
    exts = sorted({os.path.splitext(p)[1].lower().replace(".jpeg", ".jpg") for p, _ in files})
    if len(exts) > 1:
        raise ValueError(
            f"The image folder {root!r} mixes image formats {exts}; every sample of a shard set "
            "must hold the same members. Convert the images to one format first."
        )
    return files, classes, exts[0][1:]


def write_shards(
    data: Any,
    pattern: str,
    *,
    targets: Any = None,
    maxcount: int = 10_000,
    maxsize: float = 3e9,
    input_ext: str = "input.npy",
) -> WrittenShards:
    """Write ``data`` into webdataset shards named ``pattern % shard_number``.

    Args:
        data: an array ``[N, ...]`` (with ``targets``), a path to an ``.npz`` holding ``x`` and
            ``y``, or a path to an image folder (``root/<class>/<image>``, classes sorted by
            name as in torchvision's ``ImageFolder``; image bytes are stored unchanged).
        pattern: e.g. ``"out/train-%06d.tar"`` (local path or fsspec URL).
        targets: class per sample (ints), for array data.
        maxcount, maxsize: start a new shard after this many samples / payload bytes.
        input_ext: member name of array inputs.
    """
    _check_pattern(pattern)
    classes = None
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        files, classes, ext = _image_folder(os.fspath(data))

        def gen() -> Iterator[dict[str, Any]]:
            for i, (path, c) in enumerate(files):
                with open(path, "rb") as f:
                    yield {"__key__": f"{i:09d}", ext: f.read(), "cls": str(c).encode("ascii")}

        samples, count = gen(), len(files)
    else:
        if isinstance(data, (str, os.PathLike)):
            if targets is not None:
                raise ValueError("The 'targets' parameter must be None for an .npz file.")
            with np.load(os.fspath(data), allow_pickle=False) as npz:
                missing = [k for k in ("x", "y") if k not in npz.files]
                if missing:
                    raise ValueError(
                        f"The .npz file {os.fspath(data)!r} must hold arrays 'x' and 'y'. "
                        f"Got {npz.files} instead."
                    )
                data, targets = npz["x"], npz["y"]
        elif targets is None:
            raise ValueError("The 'targets' parameter is needed for array data.")
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        if isinstance(targets, torch.Tensor):
            targets = targets.detach().cpu().numpy()
        samples, count = _array_samples(data, targets, input_ext), len(data)
    paths = write_samples(samples, pattern, maxcount, maxsize)
    return WrittenShards(paths, shard_spec(pattern, len(paths)), count, classes)


def write_synthetic(
    pattern: str,
    n: int,
    *,
    sample_bytes: int = 3072,
    classes: int = 10,
    seed: int = 0,
    maxcount: int = 10_000,
) -> WrittenShards:
    """Seeded synthetic data for benchmarks: ``n`` float32 vectors of ``sample_bytes // 4``
    values (class centre + unit noise), classes uniform. Generated 4096 rows at a time, so RAM
    stays bounded; the data depends only on (n, sample_bytes, classes, seed)."""
    _check_pattern(pattern)
    dim = sample_bytes // 4
    if n < 1 or dim < 1 or classes < 1:
        raise ValueError(
            f"write_synthetic needs n >= 1, sample_bytes >= 4, classes >= 1. "
            f"Got n={n}, sample_bytes={sample_bytes}, classes={classes}."
        )
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(classes, dim)).astype(np.float32)
    encode = _npy_bytes_factory()

    def gen() -> Iterator[dict[str, Any]]:
        for start in range(0, n, _SYNTH_CHUNK):
            m = min(_SYNTH_CHUNK, n - start)
            y = rng.integers(0, classes, size=m)
            x = centres[y] + rng.standard_normal((m, dim), dtype=np.float32)
            for i in range(m):
                yield {
                    "__key__": f"{start + i:09d}",
                    "input.npy": encode(x[i]),
                    "cls": str(int(y[i])).encode("ascii"),
                }

    paths = write_samples(gen(), pattern, maxcount, 3e9)
    return WrittenShards(paths, shard_spec(pattern, len(paths)), n)

"""Decoding member bytes of shard samples: ``.npy`` arrays (one header parse per shape, batches
decoded at once), ints, text, JSON and images (Pillow), and collation into batches."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch

__all__ = ["NpyDecoder", "decode_member", "collate"]

_INT_EXTS = frozenset({"cls", "cls2", "class", "count", "index", "inx", "id"})
_TEXT_EXTS = frozenset({"txt", "text", "transcript"})
_IMAGE_EXTS = frozenset({"png", "jpg", "jpeg", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "webp"})


def _decode_image(buf: Any, ext: str) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(
            f"Decoding '.{ext}' members needs Pillow (pip install pillow); or pass decode=False "
            "to get raw bytes, or decode=callable."
        ) from err
    with Image.open(io.BytesIO(bytes(buf))) as img:
        return torch.from_numpy(np.array(img))


class NpyDecoder:
    """``.npy`` bytes to a tensor; the header of the last array is cached so samples of one
    shape/dtype decode with a byte compare and ``np.frombuffer``."""

    def __init__(self) -> None:
        self.header, self.dtype, self.shape, self.count = b"", None, (), 0

    def __call__(self, buf: Any) -> torch.Tensor:
        h = len(self.header)
        head = buf[:h].tobytes() if isinstance(buf, memoryview) else buf[:h]
        if not h or head != self.header or len(buf) != h + self.count * self.dtype.itemsize:
            self._learn(buf)
            h = len(self.header)
            if not h:  # Fortran order / object / other: let numpy handle it
                return torch.from_numpy(np.load(io.BytesIO(bytes(buf)), allow_pickle=False))
        arr = np.frombuffer(buf, dtype=self.dtype, count=self.count, offset=h)
        if not arr.flags.writeable:
            arr = arr.copy()
        return torch.from_numpy(arr.reshape(self.shape))

    def rows(self, mat: np.ndarray) -> torch.Tensor | None:
        """Decode a ``[n, size]`` uint8 matrix of equally sized ``.npy`` payloads at once;
        ``None`` unless every row has the same header (then decode one by one)."""
        if not len(mat):
            return None
        self._learn(mat[0])
        h = len(self.header)
        if not h or not (mat[:, :h] == np.frombuffer(self.header, dtype=np.uint8)).all():
            return None
        values = np.ascontiguousarray(mat[:, h:]).view(self.dtype)
        return torch.from_numpy(values.reshape(len(mat), *self.shape))

    def _learn(self, buf: Any) -> None:
        f = io.BytesIO(bytes(buf[:4096]))
        self.header = b""
        try:
            version = np.lib.format.read_magic(f)
            reader = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else (np.lib.format.read_array_header_2_0)
            )
            shape, fortran, dtype = reader(f)
        except ValueError:
            return
        if fortran or dtype.hasobject or dtype.byteorder == ">":
            return
        self.dtype, self.shape, self.count = dtype, shape, int(np.prod(shape, dtype=np.int64))
        if len(buf) == f.tell() + self.count * dtype.itemsize:
            self.header = bytes(buf[: f.tell()])


def decode_member(ext: str, buf: Any, npy: NpyDecoder) -> Any:
    """Decode one member's bytes by its last extension: ``.npy`` to a tensor, ``cls``-like
    members to ints, text, JSON, images through Pillow (HWC uint8 tensors); anything else
    stays ``bytes``."""
    last = ext.rsplit(".", 1)[-1]
    if last == "npy":
        return npy(buf)
    if last in _INT_EXTS:
        return int(bytes(buf))
    if last in _TEXT_EXTS:
        return bytes(buf).decode("utf-8")
    if last in ("json", "jsn"):
        return json.loads(bytes(buf))
    if last in _IMAGE_EXTS:
        return _decode_image(buf, last)
    return bytes(buf)


def collate(inputs: list[Any]) -> Any:
    """Stack equally shaped tensors into one batch; anything else stays a list."""
    if inputs and all(isinstance(x, torch.Tensor) for x in inputs):
        first = inputs[0].shape
        if all(x.shape == first for x in inputs):
            return torch.stack(inputs)
    return inputs

"""Decoding member bytes of shard samples with webdataset's own handlers
(``webdataset.autodecode``: the ``Decoder``, ``imagehandler`` specs, ``basichandlers``), plus
the one fast path memstore keeps: raw ``.npy`` arrays decoded with one header parse per shape
(batches at once), and collation into batches."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["NpyDecoder", "DecodeSpec", "check_decode", "make_decoder", "as_tensor", "collate"]

_OWNER = "ShardSource"  # error messages name the public class
TUPLE_IMAGES = "torch"  # webdataset's image spec used by decode=True (float CHW in [0, 1])

DecodeSpec = bool | str | Callable[..., Any] | list[Any] | tuple[Any, ...]


def _wds_decoder_class() -> type:
    from webdataset.autodecode import Decoder

    return Decoder


def check_decode(decode: Any) -> None:
    """Raise TypeError / ValueError unless ``decode`` is what :func:`make_decoder` takes."""
    if isinstance(decode, bool):
        return
    items = list(decode) if isinstance(decode, (list, tuple)) else [decode]
    bad = [h for h in items if not (isinstance(h, str) or callable(h))]
    if bad or (isinstance(decode, (list, tuple)) and not items):
        raise TypeError(
            f"The 'decode' parameter of {_OWNER} must be a bool, a webdataset decoder spec "
            "(an image spec such as 'pil', 'torchrgb', 'rgb8', 'l'; a handler f(key, data); a "
            f"webdataset.autodecode.Decoder; or a non-empty list of specs and handlers). Got "
            f"{decode!r:.80} instead. A function of the whole sample goes in transform=."
        )
    if isinstance(decode, (list, tuple)) and any(
        isinstance(h, _wds_decoder_class()) for h in items
    ):
        raise TypeError(
            f"The 'decode' parameter of {_OWNER} takes a webdataset Decoder on its own, not in "
            f"a list. Got {decode!r:.80} instead."
        )
    from webdataset.autodecode import imagespecs

    unknown = [h for h in items if isinstance(h, str) and h not in imagespecs]
    if unknown:
        raise ValueError(
            f"The 'decode' parameter of {_OWNER} names unknown image spec(s) {unknown}; "
            f"webdataset knows {sorted(imagespecs)}."
        )


def make_decoder(decode: DecodeSpec) -> Any:
    """The ``webdataset.autodecode.Decoder`` that ``WebDataset(...).decode(*decode)`` builds:
    strings become ``ImageHandler(spec)``, callables stay handlers, with webdataset's default
    pre (``.gz``) and post (``basichandlers``) handlers. ``decode=True`` gives the decoder of
    :data:`TUPLE_IMAGES`; a ``Decoder`` instance is used as it is; ``False`` gives ``None``."""
    from webdataset.autodecode import Decoder, ImageHandler

    if decode is False:
        return None
    if decode is True:
        return Decoder([ImageHandler(TUPLE_IMAGES)])
    if isinstance(decode, Decoder):
        return decode
    items = list(decode) if isinstance(decode, (list, tuple)) else [decode]
    return Decoder([ImageHandler(h) if isinstance(h, str) else h for h in items])


def as_tensor(value: Any) -> Any:
    """A numpy array as a tensor (what ``decode=True`` items hold); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    return value


class NpyDecoder:
    """``.npy`` bytes to a tensor; the header of the last array is cached so samples of one
    shape/dtype decode with a byte compare and ``np.frombuffer``. Equal to
    ``torch.from_numpy(webdataset's npy_loads(bytes))``."""

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


def collate(inputs: list[Any]) -> Any:
    """Stack equally shaped tensors into one batch; anything else stays a list."""
    if inputs and all(isinstance(x, torch.Tensor) for x in inputs):
        first = inputs[0].shape
        if all(x.shape == first for x in inputs):
            return torch.stack(inputs)
    return inputs

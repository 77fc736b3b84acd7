"""The run-state codec: a nested training state <-> (structure JSON, tensor bytes), both ways.

A run state (``Store.save(..., run_state=)``) is a tree of mappings (str or int keys), lists,
tuples and scalars (None, bool, int, float, str) whose leaves may be torch tensors, numpy
arrays or numpy scalars. The tree becomes JSON (``FORMAT.md``, "Run state"); every array leaf
becomes a :class:`Leaf` (its bytes, dtype, shape, checksum), written to a safetensors file.
Nothing here does I/O, and nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from memstore.errors import InvalidParameterTypeError

__all__ = [
    "Leaf",
    "STRUCTURE_FORMAT",
    "DTYPES",
    "encode_tree",
    "decode_tree",
    "leaf_value",
    "safetensors_bytes",
    "digest",
]

STRUCTURE_FORMAT = 1
# Logical dtype name -> safetensors dtype code. bfloat16 is stored as its raw 16-bit words.
DTYPES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
}
KINDS = ("tensor", "ndarray", "scalar")  # torch tensor, numpy array, numpy scalar
_TORCH_ONLY = {"bfloat16": "uint16"}  # logical dtype -> numpy dtype of its stored words


@dataclass(frozen=True)
class Leaf:
    """One array of a run state: ``data`` holds its C-order little-endian bytes as a flat
    ``uint8`` array (``dtype`` is the logical type, e.g. ``"bfloat16"``)."""

    kind: str
    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray
    checksum: str

    @property
    def key(self) -> tuple[str, tuple[int, ...], str]:
        """What identifies its content: equal keys, equal bytes (content addressing)."""
        return (self.dtype, self.shape, self.checksum)


def digest(data: np.ndarray) -> str:
    """``"blake2b:<32 hex>"`` of bytes or a flat uint8 array (the store's checksum, BLAKE2b
    with a 16-byte digest; hashed in place, no copy)."""
    return "blake2b:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def _path(path: tuple) -> str:
    return "run_state" + "".join(f"[{k!r}]" for k in path)


def _refuse(path: tuple, what: str) -> InvalidParameterTypeError:
    return InvalidParameterTypeError(
        f"The 'run_state' parameter of Store.save must be a nested mapping of str (or int) "
        "keys to torch tensors, numpy arrays, int, float, str, bool, None, lists, tuples and "
        f"mappings. Got {what} at {_path(path)} instead. Nothing was written."
    )


def _numpy_leaf(arr: np.ndarray, kind: str, path: tuple, dtype: str | None = None) -> Leaf:
    name = dtype or arr.dtype.name
    if name not in DTYPES or (dtype is None and name in _TORCH_ONLY):
        raise _refuse(path, f"an array of dtype {arr.dtype} (not one of {sorted(DTYPES)})")
    flat = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    data = flat.reshape(-1).view(np.uint8)
    return Leaf(kind, name, tuple(int(n) for n in arr.shape), data, digest(data))


def _tensor_leaf(value: Any, path: str) -> Leaf:
    import torch

    if value.layout != torch.strided or value.is_quantized:
        raise _refuse(path, f"a {value.layout} tensor (only dense tensors are stored)")
    name = str(value.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise _refuse(path, f"a tensor of dtype {value.dtype} (not one of {sorted(DTYPES)})")
    t = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
    if name in _TORCH_ONLY:
        arr = t.view(torch.int16).numpy().view(_TORCH_ONLY[name])
    else:
        arr = t.numpy()
    return _numpy_leaf(arr, "tensor", path, dtype=name)


def encode_tree(value: Any) -> tuple[Any, list[Leaf]]:
    """``(tree, leaves)``: the JSON-able structure of ``value`` and its array leaves in
    order (the tree names leaf ``i`` as ``{"tensor": i}``, ``{"ndarray": i}`` or
    ``{"scalar": i}``).

    Raises :class:`~memstore.errors.InvalidParameterTypeError` (a ``TypeError``) naming the
    path of the first value of another type, a key that is not a str or int, or a container
    that contains itself. Cost: one checksum per array, O(total bytes).
    """
    import torch

    leaves: list[Leaf] = []
    open_containers: set[int] = set()

    def node(v: Any, path: tuple) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, np.generic):
            leaves.append(_numpy_leaf(np.asarray(v), "scalar", path))
            return {"scalar": len(leaves) - 1}
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v) if math.isfinite(v) else {"float": repr(float(v))}
        if isinstance(v, torch.Tensor):
            leaves.append(_tensor_leaf(v, path))
            return {"tensor": len(leaves) - 1}
        if isinstance(v, np.ndarray):
            leaves.append(_numpy_leaf(v, "ndarray", path))
            return {"ndarray": len(leaves) - 1}
        if not isinstance(v, Mapping | list | tuple):
            raise _refuse(path, f"a {type(v).__module__}.{type(v).__qualname__}")
        if id(v) in open_containers:
            raise _refuse(path, "a container that contains itself")
        open_containers.add(id(v))
        if isinstance(v, Mapping):
            items = []
            for k, item in v.items():
                if isinstance(k, bool) or not isinstance(k, str | int):
                    raise _refuse(path, f"a key {k!r} of type {type(k).__name__}")
                items.append([k, node(item, (*path, k))])
            out: Any = {"map": items}
        else:
            out = [node(item, (*path, i)) for i, item in enumerate(v)]
            if isinstance(v, tuple):
                out = {"tuple": out}
        open_containers.discard(id(v))
        return out

    return node(value, ()), leaves


def decode_tree(tree: Any, leaf: Any) -> Any:
    """The value ``tree`` describes; ``leaf(kind, i)`` gives array leaf ``i``.

    Raises ``ValueError`` for a node that is not one :func:`encode_tree` writes.
    """

    def node(n: Any) -> Any:
        if n is None or isinstance(n, bool | str | int | float):
            return n
        if isinstance(n, list):
            return [node(x) for x in n]
        if not isinstance(n, dict) or len(n) != 1:
            raise ValueError(f"node {n!r:.60} is not a run-state node")
        ((tag, body),) = n.items()
        if tag == "map" and isinstance(body, list):
            out = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("a map item is not a [key, value] pair")
                k = pair[0]
                if isinstance(k, bool) or not isinstance(k, str | int):
                    raise ValueError(f"a map key {k!r:.40} is not a str or int")
                out[k] = node(pair[1])
            return out
        if tag == "tuple" and isinstance(body, list):
            return tuple(node(x) for x in body)
        if tag == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag in KINDS and type(body) is int:
            return leaf(tag, body)
        raise ValueError(f"node {n!r:.60} is not a run-state node")

    return node(tree)


def leaf_value(kind: str, dtype: str, shape: tuple[int, ...], data: np.ndarray) -> Any:
    """The torch tensor, numpy array or numpy scalar a leaf's flat ``uint8`` bytes hold."""
    words = np.dtype(_TORCH_ONLY.get(dtype, dtype)).newbyteorder("<")
    arr = data.view(words).reshape(shape)
    if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if kind == "ndarray":
        return arr
    if kind == "scalar":
        return arr[()]
    import torch

    if dtype in _TORCH_ONLY:
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def safetensors_bytes(leaves: list[Leaf]) -> tuple[bytes, list[int]]:
    """A safetensors file holding ``leaves`` as tensors ``t0, t1, ...``, and the absolute
    offset of each leaf's bytes in it.

    Layout (the safetensors format): an 8-byte little-endian header length, a JSON header
    ``{"t<i>": {"dtype", "shape", "data_offsets": [begin, end]}}`` padded with spaces to a
    multiple of 8 bytes, then the tensors' bytes back to back. Cost: one copy of the bytes.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "memstore-run-state"}}
    begin = 0
    for i, leaf in enumerate(leaves):
        end = begin + leaf.data.nbytes
        header[f"t{i}"] = {
            "dtype": DTYPES[leaf.dtype],
            "shape": list(leaf.shape),
            "data_offsets": [begin, end],
        }
        begin = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    offsets, at = [], start
    for leaf in leaves:
        offsets.append(at)
        at += leaf.data.nbytes
    head = len(text).to_bytes(8, "little") + text
    return b"".join([head, *(memoryview(leaf.data) for leaf in leaves)]), offsets

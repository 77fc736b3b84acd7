"""Shared argument checks and the one seed-to-generator helper.

Message pattern (scikit-learn style): "The 'max_size' parameter of ClassBalancedBuffer must be
a positive int. Got 0 instead." Wrong type -> TypeError, wrong value -> ValueError.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_int",
    "check_bool",
    "check_choice",
    "as_int_array",
    "check_features",
    "make_generator",
    "generator_state",
    "set_generator_state",
    "param_error",
    "check_name",
    "check_sources_mapping",
]


def param_error(name: str, owner: str, expected: str, value: Any, *, kind: type = ValueError):
    """Build the house-style error for parameter ``name`` of ``owner``."""
    return kind(f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead.")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RESERVED_NAMES = ("zarr.json",)


def check_name(value: Any, name: str, owner: str) -> str:
    """The one rule for buffer and source names: they become folder names in a store.

    1-128 characters of letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit.
    """
    if not isinstance(value, str):
        raise param_error(name, owner, "a str", value, kind=TypeError)
    if not _NAME.match(value) or value in _RESERVED_NAMES:
        raise param_error(
            name,
            owner,
            "1-128 characters of letters, digits, '_', '.', '-' (starting with a letter or digit)",
            value,
        )
    return value


def check_sources_mapping(value: Any, owner: str) -> Mapping[str, Any] | None:
    """``sources`` arguments: ``None`` or a mapping of source names to datasets."""
    if value is not None and not isinstance(value, Mapping):
        raise param_error(
            "sources",
            owner,
            "a mapping of source names to datasets, or None",
            type(value).__name__,
            kind=TypeError,
        )
    return value


def check_int(
    value: Any, name: str, owner: str, *, minimum: int | None = None, allow_none: bool = False
) -> int | None:
    """Return ``value`` as an ``int`` if it is an integer (not bool) >= ``minimum`` and below
    2**63 (every int memstore keeps is stored as int64)."""
    if value is None and allow_none:
        return None
    expected = (
        "an int"
        if minimum is None
        else ("a positive int" if minimum == 1 else f"an int >= {minimum}")
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise param_error(name, owner, expected, value, kind=TypeError)
    if minimum is not None and value < minimum:
        raise param_error(name, owner, expected, value)
    if not -(2**63) <= value < 2**63:
        raise param_error(name, owner, f"{expected} below 2**63 (stored as int64)", value)
    return int(value)


def check_bool(value: Any, name: str, owner: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise param_error(name, owner, "a bool", value, kind=TypeError)
    return bool(value)


def check_choice(value: Any, name: str, owner: str, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise param_error(name, owner, f"one of {list(choices)!r}", value)
    return value


def as_int_array(values: Any, name: str, owner: str, *, length: int | None = None) -> np.ndarray:
    """Convert a list / array / tensor of integers to a 1-D int64 array, refusing floats."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(
            f"The {name!r} parameter of {owner} must be 1-D. Got shape {arr.shape} instead."
        )
    if (
        arr.size
        and arr.dtype == object
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.tolist())
    ):
        _check_int64_range([min(arr.tolist()), max(arr.tolist())], name, owner)
        arr = arr.astype(np.int64)  # Python ints beyond numpy's int64 / uint64 were refused
    if arr.size and arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            # integral floats (e.g. 3.0) are accepted, as Avalanche's int(target) does.
            _check_int64_range([float(arr.min()), float(arr.max())], name, owner)
        else:
            bad = arr[: min(arr.size, 5)]
            raise TypeError(
                f"The {name!r} parameter of {owner} must hold integers. "
                f"Got dtype {arr.dtype} (first values {bad.tolist()!r}) instead."
            )
    if arr.dtype.kind == "b":
        raise TypeError(
            f"The {name!r} parameter of {owner} must hold integers. Got dtype bool instead."
        )
    if arr.size and arr.dtype.kind == "u":
        _check_int64_range([int(arr.max())], name, owner)
    arr = arr.astype(np.int64, copy=False)
    if length is not None and arr.shape[0] != length:
        raise ValueError(
            f"The {name!r} parameter of {owner} must have length {length} (one per sample). "
            f"Got length {arr.shape[0]} instead."
        )
    return arr


def _check_int64_range(extremes: Sequence[Any], name: str, owner: str) -> None:
    """Refuse values that would wrap around when stored as int64."""
    for value in extremes:
        if not -(2**63) <= value < 2**63:
            shown = int(value) if isinstance(value, float) else value
            raise ValueError(
                f"The {name!r} parameter of {owner} must hold integers in [-2**63, 2**63) "
                f"(they are stored as int64). Got {shown} instead."
            )


def check_features(features: Any, owner: str, *, k: int | None = None) -> np.ndarray:
    """Return features as a C-contiguous float32 ``[N, d]`` array, refusing NaN/inf."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise ValueError(
            f"The 'features' parameter of {owner} must be 2-D [N, d]. "
            f"Got shape {arr.shape} instead."
        )
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"The 'features' parameter of {owner} must be numeric. Got dtype {arr.dtype} instead."
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    # Any NaN or inf makes the float32 sum NaN or inf (one read, no N×d temporary: half the
    # time of isfinite(arr).all() from memory); finite values that overflow it are looked at.
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if not np.isfinite(total):
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))[:5]
        if rows.size:
            raise ValueError(
                f"The 'features' parameter of {owner} must be finite. "
                f"Got NaN/inf in rows {rows.tolist()} instead."
            )
    if k is not None:
        k = check_int(k, "k", owner, minimum=0)
        if k > arr.shape[0]:
            raise ValueError(
                f"The 'k' parameter of {owner} must be at most the number of rows "
                f"({arr.shape[0]}). Got {k} instead."
            )
    return arr


def make_generator(seed: Any, owner: str) -> torch.Generator:
    """The one way memstore turns a user seed into a random stream (CPU torch.Generator).

    ``torch.Generator().manual_seed(s)`` yields the same stream as ``torch.manual_seed(s)``,
    which is what makes seeded buffers reproduce Avalanche's global-RNG draws.
    """
    seed = check_int(seed, "seed", owner, minimum=0)
    return torch.Generator().manual_seed(seed)


def generator_state(generator: torch.Generator) -> np.ndarray:
    return generator.get_state().numpy().copy()


def set_generator_state(generator: torch.Generator, state: np.ndarray) -> None:
    generator.set_state(torch.from_numpy(np.asarray(state, dtype=np.uint8).copy()))

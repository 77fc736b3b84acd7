"""Argument checks of store operations: the shared rules of :mod:`memstore._validation`,
raised as memstore errors (:class:`~memstore.errors.InvalidParameterError` is a
``ValueError``, :class:`~memstore.errors.InvalidParameterTypeError` a ``TypeError``), so every
failure of a store operation is a :class:`~memstore.errors.MemstoreError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from memstore._validation import check_bool, check_choice, check_int, check_name, param_error
from memstore.errors import InvalidParameterError, InvalidParameterTypeError

__all__ = [
    "valid_name",
    "int_at_least",
    "choice",
    "boolean",
    "seconds",
    "mapping",
    "sources_mapping",
    "wrong_type",
]


def valid_name(value: Any, owner: str) -> str:
    """``value`` if it is a valid buffer or source name (the one rule shared by both)."""
    return _as_store_error(check_name, value, "name", owner)


def int_at_least(value: Any, name: str, owner: str, minimum: int) -> int:
    return _as_store_error(check_int, value, name, owner, minimum=minimum)


def choice(value: Any, name: str, owner: str, choices: Sequence[str]) -> str:
    return _as_store_error(check_choice, value, name, owner, tuple(choices))


def boolean(value: Any, name: str, owner: str) -> bool:
    """``value`` if it is a bool (a str such as ``'no'`` is refused, not taken as true)."""
    return _as_store_error(check_bool, value, name, owner)


def seconds(value: Any, name: str, owner: str) -> float:
    """``value`` as a float if it is a finite real number >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise wrong_type(name, owner, "a number of seconds >= 0", value)
    if not math.isfinite(value) or value < 0:
        raise param_error(
            name, owner, "a finite number of seconds >= 0", value, kind=InvalidParameterError
        )
    return float(value)


def mapping(value: Any, name: str, owner: str, allow_none: bool = True) -> Mapping | None:
    """``value`` if it is a mapping with str keys (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise wrong_type(name, owner, "a mapping with str keys", value)
    return value


def sources_mapping(value: Any, owner: str) -> Mapping[str, Any] | None:
    """``value`` if it is ``None`` or a mapping from source names (str) to datasets."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise wrong_type(
            "sources", owner, "None or a mapping from source names (str) to datasets", value
        )
    return value


def wrong_type(name: str, owner: str, expected: str, value: Any) -> InvalidParameterTypeError:
    """The house-style error for parameter ``name`` of ``owner`` given a wrong type."""
    return param_error(name, owner, expected, value, kind=InvalidParameterTypeError)


def _as_store_error(check: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return check(*args, **kwargs)
    except TypeError as err:
        raise InvalidParameterTypeError(str(err)) from err
    except ValueError as err:
        raise InvalidParameterError(str(err)) from err

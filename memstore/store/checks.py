"""Argument checks of store operations: the shared rules of :mod:`memstore._validation`,
raised as memstore errors (:class:`~memstore.errors.InvalidParameterError` is a
``ValueError``, :class:`~memstore.errors.InvalidParameterTypeError` a ``TypeError``), so every
failure of a store operation is a :class:`~memstore.errors.MemstoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memstore._validation import check_choice, check_int, check_name, param_error
from memstore.errors import InvalidParameterError, InvalidParameterTypeError

__all__ = ["valid_name", "int_at_least", "choice", "wrong_type"]


def valid_name(value: Any, owner: str) -> str:
    """``value`` if it is a valid buffer or source name (the one rule shared by both)."""
    return _as_store_error(check_name, value, "name", owner)


def int_at_least(value: Any, name: str, owner: str, minimum: int) -> int:
    return _as_store_error(check_int, value, name, owner, minimum=minimum)


def choice(value: Any, name: str, owner: str, choices: Sequence[str]) -> str:
    return _as_store_error(check_choice, value, name, owner, tuple(choices))


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

"""The global random generators of a training run, captured and restored as plain data.

A resumed run draws what the uninterrupted one draws only if every generator it uses is back
where it was: python's ``random``, numpy's global generator (``np.random.*``), torch's CPU
generator and, where CUDA is available, each device's generator. :func:`rng_state` returns
them as a value :meth:`memstore.Store.save` accepts in ``run_state=`` (ints, floats, str,
numpy arrays and uint8 tensors; nothing pickled); :func:`set_rng_state` puts them back.
memstore's own buffers never use these generators (each holds its own seeded one).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import InvalidParameterError, InvalidParameterTypeError

__all__ = ["rng_state", "set_rng_state"]

_PYTHON_WORDS = 625  # random.getstate(): 624 Mersenne-Twister words and the position
_NUMPY_WORDS = 624


def rng_state() -> dict[str, Any]:
    """The state of python's, numpy's and torch's global generators, as plain data.

    Returns ``{"python": {...}, "numpy": {...}, "torch": uint8 tensor}`` plus ``"cuda"`` (a
    list of uint8 tensors, one per device) when CUDA is available. Cost: ~10 KB copied.
    """
    import torch

    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    out: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": np.asarray(words, dtype=np.int64),
            "gauss_next": gauss,
        },
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": np.array(np_state["state"]["key"], dtype=np.uint32),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators :func:`rng_state` captured (e.g. read back by
    ``store.run_state(name)["rng"]``).

    Every part is checked before any generator is touched: a wrong type is an
    :class:`~memstore.errors.InvalidParameterTypeError` (``TypeError``), a wrong value an
    :class:`~memstore.errors.InvalidParameterError` (``ValueError``). CUDA states are
    restored where CUDA is available and ignored elsewhere (a GPU run resumed on a CPU).
    """
    import torch

    state = _mapping(state, "state")
    missing = sorted({"python", "numpy", "torch"} - set(state))
    if missing:
        raise InvalidParameterError(
            f"The 'state' parameter of set_rng_state lacks {missing}; pass the value "
            "memstore.rng_state() returned."
        )
    py = _mapping(state["python"], "state['python']")
    words = _words(py.get("state"), "state['python']['state']", _PYTHON_WORDS, 2**32 + 1)
    gauss = py.get("gauss_next")
    if gauss is not None and not isinstance(gauss, float):
        raise _type("state['python']['gauss_next']", "None or a float", gauss)
    version = _int(py.get("version"), "state['python']['version']")
    npy = _mapping(state["numpy"], "state['numpy']")
    key = _words(npy.get("key"), "state['numpy']['key']", _NUMPY_WORDS, 2**32)
    np_state = {
        "bit_generator": npy.get("bit_generator"),
        "state": {
            "key": key.astype(np.uint32),
            "pos": _int(npy.get("pos"), "state['numpy']['pos']"),
        },
        "has_gauss": _int(npy.get("has_gauss"), "state['numpy']['has_gauss']"),
        "gauss": npy.get("gauss"),
    }
    if np_state["bit_generator"] != "MT19937":
        raise InvalidParameterError(
            "The 'state' parameter of set_rng_state must hold numpy's MT19937 state at "
            f"state['numpy']['bit_generator']. Got {np_state['bit_generator']!r} instead."
        )
    if not isinstance(np_state["gauss"], float):
        raise _type("state['numpy']['gauss']", "a float", np_state["gauss"])
    cpu = _byte_tensor(state["torch"], "state['torch']")
    cuda = state.get("cuda")
    if cuda is not None:
        if not isinstance(cuda, list | tuple):
            raise _type("state['cuda']", "a list of uint8 tensors", cuda)
        cuda = [_byte_tensor(t, f"state['cuda'][{i}]") for i, t in enumerate(cuda)]
    try:
        random.setstate((version, tuple(int(w) for w in words), gauss))
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidParameterError(
            f"The 'state' parameter of set_rng_state is not a generator state ({err})."
        ) from err
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _type(path: str, expected: str, value: Any) -> InvalidParameterTypeError:
    return InvalidParameterTypeError(
        f"The 'state' parameter of set_rng_state must hold {expected} at {path}. "
        f"Got {type(value).__name__} instead; pass the value memstore.rng_state() returned."
    )


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _type(path, "a mapping", value)
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _type(path, "an int", value)
    return int(value)


def _words(value: Any, path: str, n: int, bound: int) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        raise _type(path, "an integer numpy array", value)
    if value.shape != (n,) or (n and (value.min() < 0 or value.max() >= bound)):
        raise InvalidParameterError(
            f"The 'state' parameter of set_rng_state must hold {n} words in [0, {bound}) at "
            f"{path}. Got shape {value.shape} instead."
        )
    return value


def _byte_tensor(value: Any, path: str) -> Any:
    import torch

    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        raise _type(path, "a 1-d uint8 torch tensor", value)
    return value.cpu()

"""Buffer policies: which exemplars a memory keeps. Pure: no I/O, one seeded generator each.

``base`` holds the contract (:class:`ExemplarsBuffer`, the state, :func:`buffer_from_state`);
one module per family: ``reservoir``, ``balanced`` (experience / class), ``parametric``.
"""

from .balanced import BalancedExemplarsBuffer, ClassBalancedBuffer, ExperienceBalancedBuffer
from .base import STATE_FORMAT, ExemplarsBuffer, buffer_from_state
from .parametric import ParametricBuffer
from .reservoir import ReservoirSamplingBuffer

__all__ = [
    "STATE_FORMAT",
    "BalancedExemplarsBuffer",
    "ClassBalancedBuffer",
    "ExemplarsBuffer",
    "ExperienceBalancedBuffer",
    "ParametricBuffer",
    "ReservoirSamplingBuffer",
    "buffer_from_state",
]

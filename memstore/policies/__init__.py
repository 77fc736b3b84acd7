"""Buffer policies: which exemplars a memory keeps. Pure: no I/O, one seeded generator each."""

from .buffers import (
    STATE_FORMAT,
    BalancedExemplarsBuffer,
    ClassBalancedBuffer,
    ExemplarsBuffer,
    ExperienceBalancedBuffer,
    ParametricBuffer,
    ReservoirSamplingBuffer,
    buffer_from_state,
)

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

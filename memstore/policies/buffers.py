"""Former home of every policy, kept for the one import ``memstore/store/store.py`` still
makes (``STATE_FORMAT``, ``ExemplarsBuffer``, ``buffer_from_state``). New code imports
:mod:`memstore.policies`; this module goes once the store imports from there."""

from .base import STATE_FORMAT, ExemplarsBuffer, buffer_from_state

__all__ = ["STATE_FORMAT", "ExemplarsBuffer", "buffer_from_state"]

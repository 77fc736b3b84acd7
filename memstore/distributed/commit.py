"""``save``: rank 0 commits the buffer every rank holds; every rank returns the same Commit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memstore._validation import param_error
from memstore.policies import ExemplarsBuffer
from memstore.policies.base import state_digest
from memstore.store import Store

from .comm import CollectiveError, agree, broadcast_small, rank_and_size

__all__ = ["save"]

_OWNER = "memstore.distributed.save"


def save(
    store: Store,
    name: str,
    buffer: ExemplarsBuffer,
    message: str = "",
    sources: Mapping[str, Any] | None = None,
    *,
    group: Any = None,
    src: int = 0,
    **options: Any,
) -> Any:
    """Commit ``buffer`` once (on rank ``src``, default 0) for all ranks; a collective.

    Every rank first checks it holds the same buffer (state digest); ``src`` runs
    :meth:`memstore.Store.save` (``options``: ``run_state=``, ``parent=``, ``overwrite=``;
    only rank ``src``'s ``run_state`` is written) and broadcasts the outcome: every rank
    returns the same :class:`~memstore.Commit` and gets the same ``buffer.origin``, or every
    rank raises :class:`~memstore.distributed.CollectiveError` naming the failure (the store
    then stays at its last commit). Cost: one digest of the state per rank, two small
    collectives, one commit.
    """
    rank, _ = rank_and_size(group, _OWNER)
    error, digest = None, None
    try:
        if not isinstance(store, Store):
            what = "a memstore Store (open it on every rank with memstore.open_store)"
            raise param_error("store", _OWNER, what, type(store).__name__, kind=TypeError)
        if not isinstance(buffer, ExemplarsBuffer):
            what = "a memstore buffer"
            raise param_error("buffer", _OWNER, what, type(buffer).__name__, kind=TypeError)
        digest = state_digest(buffer.state_dict())
    except Exception as err:
        error = err
    digests = agree(error, digest, group, _OWNER)
    if len(set(digests)) != 1:
        raise CollectiveError(
            f"{_OWNER}: the ranks hold different buffers (state digests {digests}); nothing "
            "was committed. Update them with memstore.distributed.update (or load one commit "
            "on every rank) before saving."
        )
    outcome: tuple[Any, Any, str | None] = (None, None, None)
    if rank == src:
        try:
            commit = store.save(name, buffer, message, sources, **options)
            outcome = (commit, buffer.origin, None)
        except Exception as err:
            outcome = (None, None, f"{type(err).__name__}: {err}")
    commit, origin, failure = broadcast_small(outcome, src, group, f"{_OWNER} (commit)")
    if failure is not None:
        raise CollectiveError(
            f"{_OWNER}: rank {src} could not commit {name!r}: {failure}. The store stays at "
            "its last commit; every rank raises this error."
        )
    buffer.origin = origin
    return commit

"""Memories built by many ranks of a ``torch.distributed`` job (gloo on CPU, NCCL on GPUs).

* :func:`update` — a collective buffer update over the rows every rank holds; every rank
  ends with the identical buffer (see :mod:`.update` for which results are
  partition-invariant and what crosses the wire); payload columns travel with their rows
  (the payload bytes of candidate rows, see :mod:`.wire`);
* :func:`save` — rank 0 commits, every rank returns the same :class:`~memstore.Commit`;
* :func:`shard_part` — the rows of an experience in this rank's whole shards of a
  ``ShardSource``; :func:`fill_feature_cache` — ranks fill one feature cache on shared
  storage, each writing only the chunks it owns;
* :class:`CollectiveError` — raised on every rank when any rank fails a step.

Every step first agrees on each rank's status, so a failure on one rank fails all of them
instead of leaving some waiting; a dead rank surfaces as the backend's error (set a
``timeout=`` on ``init_process_group``).
"""

from .comm import TRAFFIC, CollectiveError
from .commit import save
from .shards import fill_feature_cache, owned_chunk_ids, shard_chunk_owners, shard_part
from .update import update

__all__ = [
    "CollectiveError",
    "TRAFFIC",
    "fill_feature_cache",
    "owned_chunk_ids",
    "save",
    "shard_chunk_owners",
    "shard_part",
    "update",
]

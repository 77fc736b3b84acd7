"""The collectives memstore needs over ``torch.distributed``, with one failure rule.

Every collective step goes through :func:`agree` first: each rank reports whether its local
part succeeded, and if any rank failed, every rank raises the same
:class:`CollectiveError` naming it — no rank is left waiting in a collective another rank
will never enter. A rank that dies (or a backend error, e.g. a gloo timeout) surfaces as a
:class:`CollectiveError` too. Rows travel as padded int64 / float32 tensors
(``all_gather``, ``gather``, ``all_to_all_single``); ``all_gather_object`` carries only small
metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from memstore.errors import MemstoreError

__all__ = [
    "CollectiveError",
    "Traffic",
    "TRAFFIC",
    "agree",
    "all_gather_rows",
    "all_to_all_rows",
    "gather_rows_to",
    "all_gather_small",
    "rank_and_size",
    "broadcast_small",
    "global_rank",
]

T = TypeVar("T")


class CollectiveError(MemstoreError, RuntimeError):
    """A collective memstore operation failed on at least one rank (raised on all of them)."""


class Traffic:
    """Bytes this process sent to and received from memstore's collectives (tensor bytes,
    padding included; small objects counted by their ``repr``), also received bytes per
    collective label (``received_by``); for benchmarks and the traffic tests. Not
    thread-safe; reset with :meth:`reset`."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.received_by: dict[str, int] = {}

    def reset(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.received_by = {}

    def add(self, nbytes: int) -> None:
        self.bytes_sent += int(nbytes)

    def receive(self, nbytes: int, what: str) -> None:
        self.bytes_received += int(nbytes)
        self.received_by[what] = self.received_by.get(what, 0) + int(nbytes)


#: the process-wide byte counter of memstore's collectives (what a benchmark reports).
TRAFFIC = Traffic()


def rank_and_size(group: Any, owner: str) -> tuple[int, int]:
    """This process's rank in ``group`` and the group's size (``group=None``: the default)."""
    if not dist.is_available() or not dist.is_initialized():
        raise CollectiveError(
            f"{owner} is a collective over torch.distributed, but no process group is "
            "initialised. Call torch.distributed.init_process_group(...) first (gloo on CPU, "
            "nccl on GPUs), on every rank."
        )
    return dist.get_rank(group), dist.get_world_size(group)


def _backend_call(fn: Callable[[], T], what: str) -> T:
    try:
        return fn()
    except CollectiveError:
        raise
    except (RuntimeError, ConnectionError, TimeoutError) as err:  # gloo/nccl: peer gone
        raise CollectiveError(
            f"memstore.distributed: the collective {what} failed ({type(err).__name__}: "
            f"{err}). Another rank died or timed out; nothing was committed by this step."
        ) from err


def all_gather_small(value: Any, group: Any = None, what: str = "metadata") -> list[Any]:
    """``all_gather_object`` of a small picklable value (metadata only: never rows)."""
    world = dist.get_world_size(group)
    out: list[Any] = [None] * world
    TRAFFIC.add(len(repr(value)))
    _backend_call(lambda: dist.all_gather_object(out, value, group=group), what)
    me = dist.get_rank(group)
    TRAFFIC.receive(sum(len(repr(v)) for r, v in enumerate(out) if r != me), what)
    return out


def global_rank(group: Any, rank: int) -> int:
    """The global rank of ``rank`` of ``group`` (collectives take global ranks)."""
    return rank if group is None else dist.get_global_rank(group, rank)


def broadcast_small(value: Any, src: int, group: Any = None, what: str = "result") -> Any:
    """``broadcast_object_list`` of one small value from ``src`` (a rank of ``group``)."""
    box = [value]
    if dist.get_rank(group) == src:
        TRAFFIC.add(len(repr(value)))
    _backend_call(
        lambda: dist.broadcast_object_list(box, src=global_rank(group, src), group=group), what
    )
    if dist.get_rank(group) != src:
        TRAFFIC.receive(len(repr(box[0])), what)
    return box[0]


def agree(error: BaseException | None, payload: Any, group: Any, owner: str) -> list[Any]:
    """Every rank's ``payload``, or the same :class:`CollectiveError` on every rank if any
    rank passes an ``error`` (its local step failed).

    Cost: one small ``all_gather_object`` (keep ``payload`` small: metadata, never rows).
    """
    message = None if error is None else f"{type(error).__name__}: {error}"
    reports = all_gather_small((message, None if error else payload), group, f"{owner} (status)")
    failed = [(r, m) for r, (m, _) in enumerate(reports) if m is not None]
    if failed:
        first_rank, first = failed[0]
        raise CollectiveError(
            f"{owner} failed on rank(s) {[r for r, _ in failed]}; rank {first_rank}: {first}. "
            "Every rank raises this error; no rank changed its buffer."
        ) from error
    return [p for _, p in reports]


def _padded(block: np.ndarray, rows: int) -> torch.Tensor:
    out = np.zeros((rows, *block.shape[1:]), dtype=block.dtype)
    out[: block.shape[0]] = block
    return torch.from_numpy(out)


def all_gather_rows(block: np.ndarray, counts: list[int], group: Any, what: str) -> np.ndarray:
    """Concatenate every rank's ``block`` ([n_r, ...], one dtype) in rank order.

    ``counts`` holds each rank's ``n_r`` (known from a metadata step); blocks are padded to the
    largest. Cost: world × max(n_r) rows received per rank.
    """
    rows = max(counts) if counts else 0
    if rows == 0:
        return block[:0]
    mine = _padded(np.ascontiguousarray(block), rows)
    out = [torch.empty_like(mine) for _ in counts]
    TRAFFIC.add(mine.numel() * mine.element_size())
    _backend_call(lambda: dist.all_gather(out, mine, group=group), what)
    TRAFFIC.receive((len(counts) - 1) * mine.numel() * mine.element_size(), what)
    return np.concatenate([o.numpy()[:n] for o, n in zip(out, counts, strict=True)])


def gather_rows_to(
    block: np.ndarray, counts: list[int], dst: int, group: Any, what: str
) -> np.ndarray | None:
    """Every rank's ``block`` concatenated in rank order, on ``dst`` (a rank of ``group``)
    only; ``None`` elsewhere."""
    rows = max(counts) if counts else 0
    me = dist.get_rank(group)
    if rows == 0:
        return block[:0] if me == dst else None
    mine = _padded(np.ascontiguousarray(block), rows)
    out = [torch.empty_like(mine) for _ in counts] if me == dst else None
    if me != dst:
        TRAFFIC.add(mine.numel() * mine.element_size())
    _backend_call(lambda: dist.gather(mine, out, dst=global_rank(group, dst), group=group), what)
    if out is None:
        return None
    TRAFFIC.receive((len(counts) - 1) * mine.numel() * mine.element_size(), what)
    return np.concatenate([o.numpy()[:n] for o, n in zip(out, counts, strict=True)])


def all_to_all_rows(
    block: np.ndarray, send: list[int], receive: list[int], group: Any, what: str
) -> np.ndarray:
    """Rows ``block`` [n, ...] (one dtype) sorted by destination, ``send[d]`` of them for rank
    ``d``; returns the rows every rank sent here, by source rank (``receive[s]`` from rank
    ``s``). Counts must agree across ranks (``receive`` here = column of everyone's ``send``).

    Cost: one ``all_to_all_single`` (gloo and NCCL), no padding: ``n`` rows sent per rank.
    """
    mine = torch.from_numpy(np.ascontiguousarray(block))
    out = torch.empty((sum(receive), *block.shape[1:]), dtype=mine.dtype)
    TRAFFIC.add(mine.numel() * mine.element_size())
    _backend_call(
        lambda: dist.all_to_all_single(out, mine, list(receive), list(send), group=group), what
    )
    per_row = int(np.prod(block.shape[1:], dtype=np.int64)) * out.element_size()
    TRAFFIC.receive((sum(receive) - receive[dist.get_rank(group)]) * per_row, what)
    return out.numpy()

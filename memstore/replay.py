"""Reading exemplars back for rehearsal: a torch ``Dataset`` over a buffer's references and a
sampler that balances replay mini-batches across groups."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ._validation import check_choice, check_int
from .errors import MissingSourceError
from .experiences import ExemplarSet
from .sources.base import as_source

__all__ = ["ReplayDataset", "GroupBalancedSampler", "TaskLabelledItems"]


@runtime_checkable
class HoldsExemplars(Protocol):
    """A buffer policy: its exemplars are ``.buffer``."""

    @property
    def buffer(self) -> ExemplarSet: ...


@runtime_checkable
class TaskLabelledItems(Protocol):
    """A source that declares its item layout: with ``items_carry_task_labels = True`` its
    items already end with their task label (``(x, y, t)``, as an Avalanche dataset's), so
    :class:`ReplayDataset` adds none. Declared by the source (a class attribute), never
    guessed from an item."""

    items_carry_task_labels: bool


def _as_exemplars(exemplars: Any, owner: str) -> ExemplarSet:
    if isinstance(exemplars, ExemplarSet):
        return exemplars
    if isinstance(exemplars, HoldsExemplars) and isinstance(exemplars.buffer, ExemplarSet):
        return exemplars.buffer
    raise TypeError(
        f"The 'exemplars' parameter of {owner} must be an ExemplarSet or a buffer. "
        f"Got {type(exemplars).__name__} instead."
    )


class ReplayDataset(torch.utils.data.Dataset):
    """The source item of each exemplar, with its task label and payload appended.

    Args:
        exemplars: an :class:`ExemplarSet` (``buffer.buffer``) or a buffer.
        sources: ``{source name: dataset indexable by sample id}``; a single dataset is
            accepted when all exemplars come from one source.
        items_with_task_labels: names of sources whose items already end with their task
            label (e.g. an Avalanche dataset's ``(x, y, t)``). A source may also declare it
            itself (:class:`TaskLabelledItems`). Their items get no second task label.

    Item layout, for exemplar ``i`` with task label ``t`` and source item ``item``:

    * an item ``(x, y)`` of the source is returned as ``(x, y, t)``; any other item as
      ``(item, t)``; the item of a source whose items carry their task label, as it is
      (its own label, not the buffer's, is the one returned);
    * when the exemplars hold payload columns (``Experience(payload=...)``), a dict
      ``{name: tensor}`` of exemplar ``i``'s payload rows is appended: ``(x, y, t,
      {"logits": tensor[...]})``. A ``DataLoader`` with the default collate gives
      ``[x, y, t, {"logits": tensor[batch, ...]}]``, which is what DER++ consumes. Without
      payload columns, no dict (the layout above, unchanged).

    ``__getitems__`` reads each source once per batch through its batched read
    (:meth:`~memstore.sources.base.Source.get_many`; other datasets through their own
    ``__getitems__``, else item by item) and each payload column with one gather.
    """

    def __init__(
        self, exemplars: Any, sources: Any, *, items_with_task_labels: Collection[str] = ()
    ) -> None:
        self.exemplars = _as_exemplars(exemplars, "ReplayDataset")
        names = list(dict.fromkeys(self.exemplars.source.tolist()))
        if isinstance(sources, (list, tuple, set, frozenset, str, bytes)):
            first = (names or ["default"])[0]
            raise TypeError(
                "The 'sources' parameter of ReplayDataset must be a dict {source name: "
                f"dataset}} or one dataset. Got a {type(sources).__name__} instead: pass "
                f"{{{first!r}: dataset}}."
            )
        if isinstance(sources, Mapping):
            keys = [k for k in sources if not isinstance(k, str)]
            if keys:
                raise TypeError(
                    "The 'sources' parameter of ReplayDataset must map source names (str) to "
                    f"datasets. Got keys {keys[:5]!r} instead."
                )
        else:
            if len(names) > 1:
                raise TypeError(
                    "The 'sources' parameter of ReplayDataset must be a dict when exemplars "
                    f"come from several sources ({names}). Got {type(sources).__name__} instead."
                )
            sources = {names[0] if names else "default": sources}
        missing = [n for n in names if n not in sources]
        if missing:
            raise MissingSourceError(
                f"ReplayDataset has exemplars from sources {missing} that are not in "
                f"'sources' (given: {sorted(sources)}). Pass a dataset for each."
            )
        self.sources = dict(sources)
        self._keeps_task = self._labelled_sources(items_with_task_labels)
        self._readers = {name: as_source(source) for name, source in self.sources.items()}
        for name in names:  # a tampered or mismatched buffer must not read other samples
            ids = self.exemplars.ids[self.exemplars.source == name]
            n = len(self._readers[name])
            bad = ids[(ids < 0) | (ids >= n)]
            if bad.size:
                raise ValueError(
                    f"ReplayDataset: exemplars of source {name!r} refer to ids "
                    f"{np.unique(bad)[:5].tolist()} outside the dataset given for it (it has "
                    f"{n} samples). Pass the dataset the buffer was built from."
                )

    def _labelled_sources(self, declared: Any) -> set[str]:
        """The sources whose items carry their task label: named, or self-declared."""
        owner = "ReplayDataset"
        if isinstance(declared, (str, bytes)) or not isinstance(declared, Collection):
            raise TypeError(
                f"The 'items_with_task_labels' parameter of {owner} must be a collection of "
                f"source names. Got {declared!r:.80} instead."
            )
        unknown = [n for n in declared if n not in self.sources]
        if unknown:
            raise ValueError(
                f"The 'items_with_task_labels' parameter of {owner} must name sources given "
                f"in 'sources' ({sorted(self.sources)}). Got {unknown[:5]!r} instead."
            )
        return set(declared) | {
            name
            for name, source in self.sources.items()
            if isinstance(source, TaskLabelledItems) and source.items_carry_task_labels is True
        }

    def __len__(self) -> int:
        return len(self.exemplars)

    @staticmethod
    def _compose(item: Any, task: int | None, payload: dict[str, torch.Tensor] | None) -> Any:
        """``item`` + task label (unless ``None``) + payload dict (unless ``None``)."""
        head = tuple(item) if isinstance(item, (tuple, list)) else (item,)
        tail = (() if task is None else (task,)) + (() if payload is None else (payload,))
        if not tail:
            return item
        return (*head, *tail)

    def _payload_rows(self, idx: np.ndarray) -> dict[str, torch.Tensor] | None:
        """Each payload column's rows at ``idx`` as one tensor (``None``: no payload)."""
        payload = self.exemplars.payload
        if not payload:
            return None
        return {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in payload.items()}

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"ReplayDataset index {index} out of range for {len(self)} rows.")
        ex = self.exemplars
        name = str(ex.source[index])
        item = self.sources[name][int(ex.ids[index])]
        task = None if name in self._keeps_task else int(ex.task_labels[index])
        rows = self._payload_rows(np.array([index]))
        payload = None if rows is None else {k: v[0] for k, v in rows.items()}
        return self._compose(item, task, payload)

    def __getitems__(self, indices: list[int]) -> list[Any]:
        idx = np.asarray(indices, dtype=np.int64)
        ex = self.exemplars
        rows = self._payload_rows(idx)
        out: list[Any] = [None] * len(idx)
        for name in dict.fromkeys(ex.source[idx].tolist()):
            sel = np.flatnonzero(ex.source[idx] == name)
            items = self._readers[name].get_many(ex.ids[idx[sel]])
            keep = name in self._keeps_task
            for pos, item in zip(sel.tolist(), items, strict=True):
                task = None if keep else int(ex.task_labels[idx[pos]])
                payload = None if rows is None else {k: v[pos] for k, v in rows.items()}
                out[pos] = self._compose(item, task, payload)
        return out


class GroupBalancedSampler(torch.utils.data.Sampler):
    """Draws replay indices so that every group (class, task or experience) is equally likely.

    Each draw picks a group uniformly, then an exemplar uniformly within it. Iteration ``e``
    draws from a stream derived from ``(seed, e)``, so a resumed run that calls
    :meth:`set_epoch` replays the same indices.

    Under DDP (like ``DistributedSampler``), ``num_replicas`` ranks split one stream of
    ``num_replicas * ceil(num_samples / num_replicas)`` draws: rank ``r`` takes draws
    ``r, r + num_replicas, ...``, so at every step the ranks serve different draws and their
    union is the single-process stream (same group balance). Defaults: the world size and
    rank of an initialised ``torch.distributed``, else 1 and 0 (one process: the stream
    above, unchanged). Every rank must use the same exemplars, seed and epoch.
    """

    def __init__(
        self,
        exemplars: Any,
        groupby: str = "class",
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        owner = "GroupBalancedSampler"
        ex = _as_exemplars(exemplars, owner)
        check_choice(groupby, "groupby", owner, ("class", "task", "experience"))
        column = {"class": ex.targets, "task": ex.task_labels, "experience": ex.experience}
        keys = column[groupby]
        self.num_samples = check_int(
            len(ex) if num_samples is None else num_samples, "num_samples", owner, minimum=0
        )
        self.seed = check_int(seed, "seed", owner, minimum=0)
        running = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if running else 1
        if rank is None:
            rank = torch.distributed.get_rank() if running else 0
        self.num_replicas = check_int(num_replicas, "num_replicas", owner, minimum=1)
        self.rank = check_int(rank, "rank", owner, minimum=0)
        if self.rank >= self.num_replicas:
            raise ValueError(
                f"The 'rank' parameter of {owner} must be below num_replicas "
                f"({self.num_replicas}). Got {self.rank} instead."
            )
        self.epoch = 0
        self._order = np.argsort(keys, kind="stable")
        _, self._counts = np.unique(keys, return_counts=True)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", "GroupBalancedSampler.set_epoch", minimum=0)

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas) if self._counts.size else 0

    def __iter__(self) -> Iterator[int]:
        if not self._counts.size:
            return iter(())
        # (seed, epoch) -> an independent stream: seed 0 at epoch 1 != seed 1 at epoch 0.
        mixed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0]
        gen = torch.Generator().manual_seed(int(mixed) & (2**63 - 1))
        self.epoch += 1
        total = len(self) * self.num_replicas
        groups = torch.randint(len(self._counts), (total,), generator=gen).numpy()
        offsets = torch.rand(total, generator=gen, dtype=torch.float64).numpy()
        within = np.minimum(
            (offsets * self._counts[groups]).astype(np.int64), self._counts[groups] - 1
        )
        drawn = self._order[self._starts[groups] + within]
        return iter(drawn[self.rank :: self.num_replicas].tolist())

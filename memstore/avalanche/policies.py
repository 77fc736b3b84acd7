"""Avalanche storage policies backed by memstore's buffers.

Each class keeps Avalanche 0.6.0's name and constructor arguments, plus keyword-only
``seed=``, ``store=`` and ``name=``, and speaks Avalanche's storage-policy protocol
(``post_adapt(agent, exp)``, ``update(strategy)``, ``resize(strategy, new_size)``,
``buffer``, ``buffer_groups``, ``buffer_datasets``, ``get_group_lengths``). The memory itself
is a core memstore buffer (``.memory``) holding root ids and metadata only.

Randomness: Avalanche draws from torch's global generator (which training also uses); the
drop-in draws from its own generator seeded with ``seed`` (default 0), so it holds what
Avalanche holds when Avalanche's draws are isolated on ``torch.manual_seed(seed)``, and
training never shifts it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memstore import policies as core
from memstore.errors import MemstoreError, MissingSourceError
from memstore.experiences import ExemplarSet, Experience
from memstore.selection import FeatureBasedExemplarsSelectionStrategy
from memstore.store import Store, open_store

from .chain import RootView, empty_dataset, resolve_rows, root_name

__all__ = [
    "ExemplarsBuffer",
    "ReservoirSamplingBuffer",
    "BalancedExemplarsBuffer",
    "ExperienceBalancedBuffer",
    "ClassBalancedBuffer",
    "ParametricBuffer",
    "MultipleRootsError",
]


class MultipleRootsError(MemstoreError, ValueError):
    """An experience whose rows come from more than one root dataset."""


class _Group:
    """One group of a balanced drop-in, as Avalanche shows it: ``.buffer``, ``.max_size``."""

    def __init__(self, owner: ExemplarsBuffer, group: core.ExemplarsBuffer) -> None:
        self._owner, self._group = owner, group

    @property
    def max_size(self) -> int:
        return self._group.max_size

    @property
    def buffer(self) -> Any:
        return self._owner.dataset_of(self._group.buffer)

    def __len__(self) -> int:
        return len(self._group.buffer)


class ExemplarsBuffer:
    """Base of the drop-ins: an Avalanche storage policy over a core memstore buffer.

    Args (keyword-only, beyond Avalanche's):
        seed: seeds the buffer's own generator (default 0).
        store: a :class:`memstore.Store` or a store URL; with ``name``, every update is
            committed there, and a policy built on a store already holding ``name``
            continues from its latest commit (refusing different parameters).
        name: the buffer's name in the store.
    """

    def __init__(self, memory: core.ExemplarsBuffer, *, store: Any = None, name: Any = None):
        if (store is None) != (name is None):
            raise ValueError(
                f"The 'store' and 'name' parameters of {type(self).__name__} go together. "
                f"Got store={store!r} and name={name!r} instead. Pass both, or neither."
            )
        if store is not None and not isinstance(store, Store):
            store = open_store(store)
        self.memory = memory
        self.store: Store | None = store
        self.name: str | None = name
        self.commit: int | None = None
        self._supersedes: int | None = None  # set when resumed from an older checkpoint
        self._views: dict[str, RootView] = {}
        if store is not None and name in store:
            self._resume()

    # -- persistence ---------------------------------------------------------------------
    def _resume(self) -> None:
        assert self.store is not None and self.name is not None
        strategy = self.memory.selection_strategy
        loaded = self.store.load(self.name, selection_strategy=_feature_strategy(strategy))
        mine, theirs = _comparable(self.memory.params()), _comparable(loaded.params())
        if type(loaded) is not type(self.memory) or mine != theirs:
            raise ValueError(
                f"{type(self).__name__}: the store already holds {self.name!r} as a "
                f"{type(loaded).__name__} with parameters {theirs}, not {mine}. Use another "
                "name, or the recorded parameters."
            )
        self.memory = loaded  # load -> update -> save: the loaded buffer is the memory
        self.commit = self.store.log(self.name)[-1].seq

    def _commit(self) -> None:
        if self.store is None:
            return
        message, parent = "avalanche update", self._supersedes
        if parent is not None:
            message += f" (resumed from commit {self.commit}; supersedes up to {parent})"
        commit = self.store.save(self.name, self.memory, message=message, parent=parent)
        self.commit, self._supersedes = commit.seq, None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.store is not None:  # a reference: the memory lives in the store only
            state["memory"] = None
            state["store"] = self.store.url
            state["_strategy"] = self.memory.selection_strategy
            state["_params"] = self.memory.params()
            state["_policy"] = type(self.memory).__name__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("memory") is None:
            store = open_store(state["store"])
            strategy = state.pop("_strategy")
            state.pop("_params"), state.pop("_policy")
            memory = store.load(
                state["name"],
                commit=state["commit"],
                selection_strategy=_feature_strategy(strategy),
            )
            state["store"], state["memory"] = store, memory
            # A checkpoint older than the store (killed between the memory's commit and
            # Avalanche's own save): the checkpoint is the truth, so the next commit builds
            # on the newest seq, superseding the commits the checkpoint never saw.
            newest = store.log(state["name"])[-1].seq
            state["_supersedes"] = newest if newest != state["commit"] else None
        self.__dict__.update(state)

    # -- Avalanche protocol --------------------------------------------------------------
    @property
    def max_size(self) -> int:
        return self.memory.max_size

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """Avalanche's entry point (``ReplayPlugin.after_training_exp``)."""
        self.post_adapt(strategy, strategy.experience)

    def post_adapt(self, agent: Any, exp: Any) -> None:
        """Add the rows of ``exp.dataset`` (resolved to root ids), then commit."""
        experience = self.experience_of(exp.dataset)
        strategy = self.memory.selection_strategy
        if isinstance(strategy, FeatureBasedExemplarsSelectionStrategy) and agent is not None:
            strategy.device = str(agent.device)
            strategy.batch_size = int(agent.eval_mb_size)
        self.memory.update(experience, sources=self._readers())
        self._commit()

    def resize(self, strategy: Any, new_size: int) -> None:
        self.memory.resize(new_size, sources=self._readers())
        self._commit()

    @property
    def buffer(self) -> Any:
        """The exemplars as an ``AvalancheDataset`` (read from their roots)."""
        return self.dataset_of(self.memory.buffer)

    # -- ids and datasets ----------------------------------------------------------------
    def attach(self, dataset: Any) -> None:
        """Learn the roots of ``dataset`` (e.g. a restarted run's first experience), so a
        memory resumed from the store can be read before its next update."""
        for view in resolve_rows(dataset).views:
            self._views[root_name(view.root)] = view

    def experience_of(self, dataset: Any) -> Experience:
        """The core :class:`~memstore.Experience` of an Avalanche dataset's rows (root ids)."""
        rows = resolve_rows(dataset)
        names = [root_name(v.root) for v in rows.views]
        if len(names) > 1:
            raise MultipleRootsError(
                f"{type(self).__name__} got an experience whose rows come from "
                f"{len(names)} root datasets ({names}); a memstore update takes one source. "
                "Build each experience from one dataset."
            )
        for name, view in zip(names, rows.views, strict=True):
            self._views[name] = view
        targets = getattr(dataset, "targets", None)  # shape: allow data without targets
        tasks = getattr(dataset, "targets_task_labels", 0)  # shape: allow untasked data
        n = len(dataset)
        return Experience(
            targets=np.full(n, -1) if targets is None else np.asarray(list(targets)),
            ids=rows.ids,
            task_labels=tasks if isinstance(tasks, int) else np.asarray(list(tasks)),
            source=names[0] if names else "empty",
        )

    def _readers(self) -> dict[str, Any]:
        return {name: view.reader() for name, view in self._views.items()}

    def dataset_of(self, rows: ExemplarSet) -> Any:
        """An ``AvalancheDataset`` of exemplar rows, in order."""
        parts: list[Any] = []
        if len(rows) == 0:
            return empty_dataset()
        bounds = np.flatnonzero(np.r_[True, rows.source[1:] != rows.source[:-1]]).tolist()
        for lo, hi in zip(bounds, [*bounds[1:], len(rows)], strict=True):
            name = str(rows.source[lo])
            if name not in self._views:
                raise MissingSourceError(
                    f"{type(self).__name__} holds exemplars of {name!r} but has not seen that "
                    "dataset in this process. Call attach(experience.dataset) first."
                )
            part = rows.take(np.arange(lo, hi))
            targets = None if (part.targets < 0).all() else part.targets
            parts.append(self._views[name].dataset(part.ids, targets, part.task_labels))
        out = parts[0]
        for p in parts[1:]:
            out = out.concat(p)
        return out


def _feature_strategy(strategy: Any) -> Any:
    return strategy if isinstance(strategy, FeatureBasedExemplarsSelectionStrategy) else None


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters that must agree to continue a stored memory (all of them)."""
    return dict(sorted(params.items()))


class ReservoirSamplingBuffer(ExemplarsBuffer):
    """Avalanche's ``ReservoirSamplingBuffer(max_size)``."""

    def __init__(self, max_size: int, *, seed: int = 0, store: Any = None, name: Any = None):
        super().__init__(core.ReservoirSamplingBuffer(max_size, seed=seed), store=store, name=name)


class BalancedExemplarsBuffer(ExemplarsBuffer):
    """Base of the balanced drop-ins: ``buffer_groups``, ``buffer_datasets``, lengths."""

    @property
    def buffer_groups(self) -> dict[int, _Group]:
        return {k: _Group(self, g) for k, g in self.memory.buffer_groups.items()}

    @property
    def buffer_datasets(self) -> list[Any]:
        return [g.buffer for g in self.buffer_groups.values()]

    def get_group_lengths(self, num_groups: int) -> list[int]:
        return self.memory.get_group_lengths(num_groups)


class ExperienceBalancedBuffer(BalancedExemplarsBuffer):
    """Avalanche's ``ExperienceBalancedBuffer(max_size, adaptive_size, num_experiences)``."""

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        num_experiences: int | None = None,
        *,
        seed: int = 0,
        store: Any = None,
        name: Any = None,
    ):
        memory = core.ExperienceBalancedBuffer(max_size, adaptive_size, num_experiences, seed)
        super().__init__(memory, store=store, name=name)


class ClassBalancedBuffer(BalancedExemplarsBuffer):
    """Avalanche's ``ClassBalancedBuffer(max_size, adaptive_size, total_num_classes)``."""

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        total_num_classes: int | None = None,
        *,
        seed: int = 0,
        store: Any = None,
        name: Any = None,
    ):
        memory = core.ClassBalancedBuffer(max_size, adaptive_size, total_num_classes, seed)
        super().__init__(memory, store=store, name=name)

    @property
    def seen_classes(self) -> set[int]:
        return self.memory.seen_classes


class ParametricBuffer(BalancedExemplarsBuffer):
    """Avalanche's ``ParametricBuffer(max_size, groupby, selection_strategy)``."""

    def __init__(
        self,
        max_size: int,
        groupby: str | None = None,
        selection_strategy: Any = None,
        *,
        seed: int = 0,
        store: Any = None,
        name: Any = None,
    ):
        memory = core.ParametricBuffer(max_size, groupby, selection_strategy, seed)
        super().__init__(memory, store=store, name=name)

    @property
    def groupby(self) -> str | None:
        return self.memory.groupby

    @property
    def selection_strategy(self) -> Any:
        return self.memory.selection_strategy

    @property
    def seen_groups(self) -> set[int]:
        return set(self.memory.buffer_groups)

"""Balanced buffers: groups sharing ``max_size`` (Avalanche's balanced storage policies).

:class:`BalancedExemplarsBuffer` splits the memory into groups, each a reservoir of its own;
:class:`ExperienceBalancedBuffer` keys them by experience, :class:`ClassBalancedBuffer` by
class. :class:`~memstore.policies.parametric.ParametricBuffer` reuses the split with groups
chosen by a selection strategy.
"""

from __future__ import annotations

from typing import Any

from memstore._validation import check_bool, check_choice, check_int
from memstore.experiences import ExemplarSet

from .base import ExemplarsBuffer, first_appearance_groups
from .reservoir import DRAWS, ReservoirSamplingBuffer, with_draws

__all__ = ["BalancedExemplarsBuffer", "ExperienceBalancedBuffer", "ClassBalancedBuffer"]


class BalancedExemplarsBuffer(ExemplarsBuffer):
    """A buffer split into groups, each a buffer of its own, sharing ``max_size``.

    Adaptive (default): every group gets ``max_size // n`` and the first ``max_size % n``
    groups in ascending key order one more. Fixed: ``max_size // total_num_groups`` each.
    ``draws`` is the reservoir groups' weight rule (see :mod:`memstore.policies.reservoir`).
    """

    _total_name = "total_num_groups"

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        total_num_groups: int | None = None,
        seed: int = 0,
        draws: str = "torch",
    ) -> None:
        super().__init__(max_size, seed)
        owner = type(self).__name__
        self.draws = check_choice(draws, "draws", owner, DRAWS)
        self.adaptive_size = check_bool(adaptive_size, "adaptive_size", owner)
        self.total_num_groups = check_int(
            total_num_groups, self._total_name, owner, minimum=1, allow_none=True
        )
        if not self.adaptive_size and self.total_num_groups is None:
            raise ValueError(
                f"The {self._total_name!r} parameter of {owner} must be a positive int when "
                "adaptive_size=False. Got None instead."
            )
        self.buffer_groups: dict[int, ExemplarsBuffer] = {}

    @property
    def buffer(self) -> ExemplarSet:
        return ExemplarSet.concat([g.buffer for g in self.buffer_groups.values()])

    def get_group_lengths(self, num_groups: int) -> list[int]:
        """Lengths of ``num_groups`` groups (to be matched with keys in ascending order)."""
        num_groups = check_int(num_groups, "num_groups", "get_group_lengths", minimum=0)
        if self.adaptive_size:
            if num_groups == 0:
                return []
            lengths = [self._max_size // num_groups] * num_groups
            for i in range(self._max_size - sum(lengths)):
                lengths[i] += 1
            return lengths
        if num_groups > self.total_num_groups:
            raise ValueError(
                f"{type(self).__name__} was declared with {self._total_name}="
                f"{self.total_num_groups} (adaptive_size=False) but sees {num_groups} groups. "
                f"Declare a larger {self._total_name} or use adaptive_size=True."
            )
        return [self._max_size // self.total_num_groups] * num_groups

    def params(self) -> dict[str, Any]:
        params = {
            "max_size": self._max_size,
            "adaptive_size": self.adaptive_size,
            self._total_name: self.total_num_groups,
            "seed": self.seed,
        }
        return with_draws(params, self.draws)

    def _set_params(self, params: dict[str, Any]) -> None:
        super()._set_params(params)
        self.adaptive_size = bool(params.get("adaptive_size", self.adaptive_size))
        self.total_num_groups = params.get(self._total_name, self.total_num_groups)
        self.draws = params.get("draws", "torch")

    def _group_sizes(self, keys: list[int]) -> list[int]:
        lengths = self._lengths_for(keys)
        return [lengths[key] for key in keys]

    def _lengths_for(self, keys: list[int]) -> dict[int, int]:
        ordered = sorted(keys)
        return dict(zip(ordered, self.get_group_lengths(len(ordered)), strict=True))

    def _group_items(self):
        return list(self.buffer_groups.items())

    def _resize(self, new_size, sources):
        self._max_size = new_size
        lengths = self._lengths_for(list(self.buffer_groups))
        for key, group in self.buffer_groups.items():
            group.shrink_to(lengths[key])

    def _new_group(self, size: int) -> ReservoirSamplingBuffer:
        return ReservoirSamplingBuffer.make_group(size, self._generator, self.draws, self.seed)

    def _restore_groups(self, groups):
        self.buffer_groups = {}
        for key, size, rows, weights in groups:
            group = self._new_group(size)
            if weights is None:
                raise ValueError(f"a {type(self).__name__} state needs the 'weight' column")
            group.restore_rows(rows, weights)
            self.buffer_groups[key] = group


class ExperienceBalancedBuffer(BalancedExemplarsBuffer, policy=True):
    """One reservoir group per experience (key: the experience's ``index``)."""

    _total_name = "num_experiences"

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        num_experiences: int | None = None,
        seed: int = 0,
        draws: str = "torch",
    ) -> None:
        super().__init__(max_size, adaptive_size, num_experiences, seed, draws)

    @property
    def num_experiences(self) -> int | None:
        return self.total_num_groups

    def _update(self, experience, rows, index, sources):
        if index in self.buffer_groups:
            raise ValueError(
                f"ExperienceBalancedBuffer already holds experience {index}. Give each "
                "update a new Experience index."
            )
        lengths = self._lengths_for([*self.buffer_groups, index])
        group = self._new_group(lengths[index])
        group.add(rows)
        self.buffer_groups[index] = group
        for key, g in self.buffer_groups.items():
            g.shrink_to(lengths[key])


class ClassBalancedBuffer(BalancedExemplarsBuffer, policy=True):
    """One reservoir group per class seen so far.

    New classes get their groups in first-appearance order (Avalanche), or in ascending class
    order with ``draws="hash"``, so that the memory does not depend on the order of rows.
    """

    _total_name = "total_num_classes"

    def __init__(
        self,
        max_size: int,
        adaptive_size: bool = True,
        total_num_classes: int | None = None,
        seed: int = 0,
        draws: str = "torch",
    ) -> None:
        super().__init__(max_size, adaptive_size, total_num_classes, seed, draws)

    @property
    def total_num_classes(self) -> int | None:
        return self.total_num_groups

    @property
    def seen_classes(self) -> set[int]:
        return set(self.buffer_groups)

    def _update(self, experience, rows, index, sources):
        if len(rows) == 0:
            return
        by_class = first_appearance_groups(rows.targets)
        if self.draws == "hash":  # a function of the set of rows: new classes by key
            by_class.sort(key=lambda item: item[0])
        lengths = self._lengths_for(
            list(dict.fromkeys([*self.buffer_groups, *(c for c, _ in by_class)]))
        )
        for cls, positions in by_class:
            if cls in self.buffer_groups:
                group = self.buffer_groups[cls]
                group.add(rows.take(positions))
                group.shrink_to(lengths[cls])
            else:
                group = self._new_group(lengths[cls])
                group.add(rows.take(positions))
                self.buffer_groups[cls] = group
        for key, group in self.buffer_groups.items():
            group.shrink_to(lengths[key])

"""GroupBalancedSampler under DDP: ranks split one stream of draws."""

from __future__ import annotations

import numpy as np
import pytest

import memstore
from memstore import GroupBalancedSampler


def exemplars() -> memstore.ExemplarSet:
    targets = np.repeat([0, 1, 2], [5, 20, 75])
    return memstore.Experience(targets=targets, ids=np.arange(100) * 3).as_exemplars(0)


@pytest.mark.parametrize(("replicas", "num_samples"), [(2, 300), (3, 301), (4, 7)])
def test_ranks_split_one_stream_disjoint_per_step(replicas, num_samples):
    ex = exemplars()
    parts = [
        list(
            GroupBalancedSampler(ex, num_samples=num_samples, seed=4, num_replicas=replicas, rank=r)
        )
        for r in range(replicas)
    ]
    per_rank = -(-num_samples // replicas)
    assert [len(p) for p in parts] == [per_rank] * replicas
    assert all(
        len(GroupBalancedSampler(ex, num_samples=num_samples, num_replicas=replicas, rank=r))
        == per_rank
        for r in range(replicas)
    )
    whole = list(GroupBalancedSampler(ex, num_samples=per_rank * replicas, seed=4))
    interleaved = np.stack(parts, axis=1).reshape(-1).tolist()  # step i: rank r's draw i
    assert interleaved == whole


def test_one_replica_is_the_single_process_stream_and_balance_holds_overall():
    ex = exemplars()
    one = list(GroupBalancedSampler(ex, num_samples=3000, seed=1, num_replicas=1, rank=0))
    assert one == list(GroupBalancedSampler(ex, num_samples=3000, seed=1))
    parts = [
        GroupBalancedSampler(ex, num_samples=3000, seed=1, num_replicas=2, rank=r) for r in (0, 1)
    ]
    drawn = np.concatenate([list(p) for p in parts])
    share = np.bincount(ex.targets[drawn], minlength=3) / drawn.size
    assert np.abs(share - 1 / 3).max() < 0.03


def test_bad_replica_arguments_are_value_errors_naming_them():
    ex = exemplars()
    with pytest.raises(ValueError, match="'rank' parameter of GroupBalancedSampler must be below"):
        GroupBalancedSampler(ex, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="'num_replicas' parameter"):
        GroupBalancedSampler(ex, num_replicas=0, rank=0)

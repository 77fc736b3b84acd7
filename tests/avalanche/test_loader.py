"""policy.buffer through Avalanche's ReplayDataLoader, and the scenarios of Avalanche's
tests/training/test_replay.py (balanced memory, parametric groupings, the herding /
closest unit case, online replay) with the drop-in."""

import numpy as np
import pytest
import torch
from avalanche.benchmarks import nc_benchmark, split_online_stream
from avalanche.benchmarks.utils.data_loader import ReplayDataLoader
from helpers import labelled_tensors

import memstore.avalanche as ms


def bench(task_labels=True, n=200):
    data = labelled_tensors(n)
    return nc_benchmark(data, data, n_experiences=5, task_labels=task_labels, seed=0)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("task_balanced", [False, True])
def test_replay_data_loader_reads_the_buffer(task_balanced, workers):
    b = bench()
    policy = ms.ExperienceBalancedBuffer(50)
    for exp in list(b.train_stream)[:3]:
        policy.post_adapt(None, exp)
    current = b.train_stream[3].dataset
    loader = ReplayDataLoader(
        current,
        policy.buffer,
        batch_size=10,
        batch_size_mem=9,
        task_balanced_dataloader=task_balanced,
        num_workers=workers,
    )
    seen_tasks, rows = set(), 0
    for x, y, t in loader:
        assert x.shape[1] == 8 and len(y) == len(t)
        seen_tasks |= set(t.tolist())
        rows += len(t)
    assert seen_tasks == {0, 1, 2, 3} and rows > len(current)


def test_balanced_memory_sizes_and_groups():
    policy = ms.ClassBalancedBuffer(100)
    for k, exp in enumerate(bench().train_stream):
        policy.post_adapt(None, exp)
        lengths = [g.max_size for g in policy.buffer_groups.values()]
        assert sorted(lengths, reverse=True) == policy.get_group_lengths(2 * (k + 1))
        assert len(policy.buffer) == sum(min(n, 20) for n in lengths)
        assert len(policy.buffer_datasets) == 2 * (k + 1)
        assert policy.seen_classes == set(np.unique(policy.memory.buffer.targets).tolist())


@pytest.mark.parametrize("groupby", [None, "class", "task", "experience"])
def test_parametric_groupings(groupby):
    policy = ms.ParametricBuffer(60, groupby=groupby)
    for exp in bench().train_stream:
        policy.post_adapt(None, exp)
    expected = {None: 1, "class": 10, "task": 5, "experience": 5}[groupby]
    assert len(policy.buffer_groups) == expected and len(policy.buffer) == 60
    for group in policy.buffer_groups.values():
        assert len(group.buffer) == group.max_size


def test_herding_and_closest_unit_case():
    features = torch.tensor([[0.0], [4.0], [5.0]])
    model = torch.nn.Sequential(torch.nn.Linear(1, 1))
    herding = ms.HerdingSelectionStrategy(model, "0")
    closest = ms.ClosestToCenterSelectionStrategy(model, "0")
    assert herding.make_sorted_indices_from_features(features).tolist() == [1, 0, 2]
    assert closest.make_sorted_indices_from_features(features).tolist() == [1, 2, 0]


def test_online_replay_keeps_one_id_space():
    b = bench(task_labels=False)
    online = split_online_stream(b.train_stream, experience_size=16, seed=0)
    policy = ms.ClassBalancedBuffer(30)
    for exp in online:
        policy.post_adapt(None, exp)
    assert len(policy.buffer) == 30
    assert len(set(policy.memory.buffer.source.tolist())) == 1
    ids = policy.memory.buffer.ids
    assert len(set(ids.tolist())) == 30


def test_resize_shrinks_the_memory():
    policy = ms.ReservoirSamplingBuffer(40)
    for exp in bench().train_stream:
        policy.post_adapt(None, exp)
    policy.resize(None, 10)
    assert len(policy.buffer) == 10 and policy.max_size == 10

"""Stable ids: every benchmark kind resolves rows to (root, index in root)."""

import numpy as np
import pytest
import torch
from avalanche.benchmarks import (
    benchmark_from_datasets,
    nc_benchmark,
    ni_benchmark,
    split_online_stream,
)
from avalanche.benchmarks.utils import make_avalanche_dataset
from helpers import labelled_tensors
from torch.utils.data import TensorDataset

import memstore.avalanche as ms
from memstore.avalanche.chain import resolve_rows


def check_stream(stream, data):
    names = set()
    for exp in stream:
        rows = resolve_rows(exp.dataset)
        assert [v.root for v in rows.views] == [data]
        for i in range(len(exp.dataset)):
            assert torch.equal(exp.dataset[i][0], data[int(rows.ids[i])][0])
        names.add(ms.ClassBalancedBuffer(10).experience_of(exp.dataset).source)
    assert len(names) == 1


@pytest.mark.parametrize("task_labels", [False, True])
def test_nc_benchmark_rows_resolve_to_the_root(task_labels):
    data = labelled_tensors(120)
    bench = nc_benchmark(data, data, n_experiences=5, task_labels=task_labels, seed=2)
    check_stream(bench.train_stream, data)
    exp = ms.ClassBalancedBuffer(10).experience_of(bench.train_stream[3].dataset)
    assert set(exp.task_labels.tolist()) == ({3} if task_labels else {0})


def test_ni_benchmark_rows_resolve_to_the_root():
    data = labelled_tensors(120)
    bench = ni_benchmark(data, data, n_experiences=3, seed=1)
    check_stream(bench.train_stream, data)


def test_benchmark_from_datasets_of_subsets_shares_one_root():
    data = labelled_tensors(90)
    parts = [
        make_avalanche_dataset(torch.utils.data.Subset(data, list(range(k, 90, 3))))
        for k in range(3)
    ]
    bench = benchmark_from_datasets(train=parts)
    check_stream(bench.train_stream, data)


def test_online_sub_experiences_resolve_to_the_same_root_ids():
    data = labelled_tensors(120)
    bench = nc_benchmark(data, data, n_experiences=2, task_labels=False, seed=0)
    online = split_online_stream(bench.train_stream, experience_size=10, seed=0)
    ids = np.concatenate([resolve_rows(e.dataset).ids for e in online])
    whole = np.concatenate([resolve_rows(e.dataset).ids for e in bench.train_stream])
    assert sorted(ids.tolist()) == sorted(whole.tolist())
    check_stream(online, data)
    policy = ms.ReservoirSamplingBuffer(15)
    for exp in online:
        policy.post_adapt(None, exp)
    assert set(policy.memory.buffer.source.tolist()) == {ms_name(data)}


def ms_name(data):
    return ms.ReservoirSamplingBuffer(1).experience_of(make_avalanche_dataset(data)).source


def test_data_without_targets_works_with_policies_that_never_read_them():
    x = torch.randn(40, 3)
    data = TensorDataset(x, torch.zeros(40, dtype=torch.long))  # no .targets
    stream = [
        make_avalanche_dataset(torch.utils.data.Subset(data, range(k, 40, 4))) for k in range(4)
    ]
    policy = ms.ReservoirSamplingBuffer(8)
    for d in stream:
        policy.post_adapt(None, type("E", (), {"dataset": d})())
    ids = policy.memory.buffer.ids
    assert len(policy.buffer) == 8 and len(set(ids.tolist())) == 8
    for i, item in enumerate(policy.buffer):
        assert torch.equal(item[0], x[int(ids[i])])


def test_same_type_and_length_roots_of_other_content_get_other_names():
    a, b = labelled_tensors(50, seed=1), labelled_tensors(50, seed=2)
    assert ms_name(a) != ms_name(b)
    assert ms_name(a) == ms_name(labelled_tensors(50, seed=1))


def test_an_experience_over_two_roots_is_refused():
    a, b = labelled_tensors(20, seed=1), labelled_tensors(20, seed=2)
    both = make_avalanche_dataset(a).concat(make_avalanche_dataset(b))
    with pytest.raises(ms.MultipleRootsError, match="2 root datasets"):
        ms.ReservoirSamplingBuffer(5).experience_of(both)


def test_core_from_dataset_refuses_avalanche_views_and_names_the_fix():
    import memstore

    data = labelled_tensors(60)
    bench = nc_benchmark(data, data, n_experiences=5, task_labels=False, seed=0)
    with pytest.raises(ValueError, match="memstore.avalanche"):
        memstore.Experience.from_dataset(bench.train_stream[0].dataset)


def test_core_buffer_refuses_local_positions_that_collide():
    # The failure: positions local to each experience under one source name.
    import memstore

    data = labelled_tensors(60)
    bench = nc_benchmark(data, data, n_experiences=5, task_labels=False, seed=0)
    buf = memstore.ClassBalancedBuffer(20)
    with pytest.raises(memstore.IdConflictError):
        for exp in bench.train_stream:
            d = exp.dataset
            buf.update(memstore.Experience(targets=list(d.targets), source="train"))


def double(x):
    return 2 * x


def test_old_exemplars_are_read_from_the_root_with_the_experience_transforms(tmp_path):
    data = labelled_tensors(100)
    bench = nc_benchmark(
        data, data, n_experiences=5, task_labels=True, seed=0, train_transform=double
    )
    exps = list(bench.train_stream)
    policy = ms.ClassBalancedBuffer(20, store=str(tmp_path / "m"), name="t")
    for exp in exps[:3]:
        policy.post_adapt(None, exp)
    ids, tasks = policy.memory.buffer.ids, policy.memory.buffer.task_labels
    items = [policy.buffer[i] for i in range(20)]
    for i, (x, y, t) in enumerate(items):
        assert torch.equal(x, 2 * data[int(ids[i])][0])
        assert (int(y), int(t)) == (data.targets[int(ids[i])], int(tasks[i]))
    assert set(tasks.tolist()) == {0, 1, 2}
    # A restarted process: the memory comes from the store, the roots from attach().
    again = ms.ClassBalancedBuffer(20, store=str(tmp_path / "m"), name="t")
    with pytest.raises(KeyError, match="attach"):
        again.buffer  # noqa: B018
    again.attach(exps[3].dataset)
    for a, b in zip(items, again.buffer, strict=True):
        assert torch.equal(a[0], b[0]) and a[1:] == list(b[1:])

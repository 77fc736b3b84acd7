"""ReplayDataset returns the source items of the exemplars (task label appended);
GroupBalancedSampler draws every group equally often and reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memstore
from memstore import (
    ClassBalancedBuffer,
    ExemplarSet,
    GroupBalancedSampler,
    MissingSourceError,
    ReplayDataset,
)


def two_source_buffer():
    rng = np.random.default_rng(0)
    train = memstore.ArraySource(
        rng.standard_normal((30, 2)).astype(np.float32), rng.integers(0, 3, 30)
    )
    extra = [torch.full((2,), float(i)) for i in range(12)]  # items are bare tensors
    buf = ClassBalancedBuffer(12, seed=0)
    buf.update(memstore.Experience(train.targets, source="train", task_labels=0, index=0))
    buf.update(
        memstore.Experience(
            targets=[3] * 6 + [4] * 6, ids=np.arange(12), source="extra", task_labels=2, index=1
        )
    )
    return buf, {"train": train, "extra": extra}


def test_items_are_source_items_with_task_label():
    buf, sources = two_source_buffer()
    ds = ReplayDataset(buf.buffer, sources)
    ex = buf.buffer
    assert len(ds) == len(ex) == 12
    assert set(ex.source.tolist()) == {"train", "extra"}
    for i in range(len(ds)):
        item = ds[i]
        source, sid, task = str(ex.source[i]), int(ex.ids[i]), int(ex.task_labels[i])
        if source == "train":
            x, y = sources["train"][sid]
            assert len(item) == 3 and torch.equal(item[0], x) and item[1] == y
            assert item[1] == ex.targets[i]
        else:
            assert len(item) == 2 and torch.equal(item[0], sources["extra"][sid])
        assert item[-1] == task
    batch = ds.__getitems__([5, 0, 11, 5])
    for got, i in zip(batch, [5, 0, 11, 5], strict=True):
        expected = ds[i]
        assert len(got) == len(expected) and torch.equal(got[0], expected[0])
        assert got[1:] == expected[1:]
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_single_dataset_buffer_and_dataloader():
    rng = np.random.default_rng(1)
    src = memstore.ArraySource(rng.standard_normal((40, 3)).astype(np.float32), np.arange(40) % 4)
    buf = ClassBalancedBuffer(10, seed=2)
    buf.update(memstore.Experience.from_dataset(src, source="train", index=0))
    ds = ReplayDataset(buf, src)  # a buffer and a bare dataset are accepted
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
    xs, ys, ts = zip(*loader, strict=True)
    assert torch.equal(torch.cat(xs), src.inputs[torch.from_numpy(buf.buffer.ids)])
    assert torch.cat(ys).tolist() == buf.buffer.targets.tolist()
    assert torch.cat(ts).tolist() == [0] * 10


def test_missing_source_is_named():
    buf, sources = two_source_buffer()
    with pytest.raises(MissingSourceError, match="extra"):
        ReplayDataset(buf.buffer, {"train": sources["train"]})
    with pytest.raises(TypeError, match="dict"):
        ReplayDataset(buf.buffer, sources["train"])


def skewed_exemplars() -> ExemplarSet:
    targets = np.array([0] * 50 + [1] * 5 + [7] * 1 + [2] * 14, dtype=np.int64)
    rng = np.random.default_rng(3)
    targets = targets[rng.permutation(len(targets))]
    n = len(targets)
    return ExemplarSet(
        source=np.full(n, "s"),
        ids=np.arange(n, dtype=np.int64) * 10,
        targets=targets,
        task_labels=(np.arange(n) % 2).astype(np.int64),
        experience=(targets > 1).astype(np.int64),
    )


@pytest.mark.parametrize("groupby", ["class", "task", "experience"])
def test_sampler_is_balanced_across_groups(groupby):
    ex = skewed_exemplars()
    column = {"class": ex.targets, "task": ex.task_labels, "experience": ex.experience}[groupby]
    draws = 40_000
    sampler = GroupBalancedSampler(ex, groupby=groupby, num_samples=draws, seed=5)
    indices = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(indices) == len(sampler) == draws
    assert indices.min() >= 0 and indices.max() < len(ex)
    groups, counts = np.unique(column[indices], return_counts=True)
    assert groups.tolist() == np.unique(column).tolist()
    share = counts / draws
    np.testing.assert_allclose(share, 1 / len(groups), atol=0.015)
    # Within a group, each exemplar is equally likely.
    biggest = np.flatnonzero(column == np.bincount(column).argmax())
    per_row = np.bincount(indices, minlength=len(ex))[biggest]
    expected = draws / len(groups) / len(biggest)
    assert np.all(np.abs(per_row - expected) < 6 * np.sqrt(expected) + 5)


def test_sampler_is_reproducible_per_seed_and_epoch():
    ex = skewed_exemplars()
    a = GroupBalancedSampler(ex, num_samples=200, seed=9)
    b = GroupBalancedSampler(ex, num_samples=200, seed=9)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    second_a = list(a)  # the next epoch
    assert second_a != first_a
    resumed = GroupBalancedSampler(ex, num_samples=200, seed=9)
    resumed.set_epoch(1)
    assert list(resumed) == second_a
    assert list(GroupBalancedSampler(ex, num_samples=200, seed=10)) != first_a
    default = GroupBalancedSampler(ex)
    assert len(default) == len(ex) == len(list(default))


def test_sampler_on_empty_buffer_and_bad_arguments():
    empty = GroupBalancedSampler(ExemplarSet.empty())
    assert len(empty) == 0 and list(empty) == []
    with pytest.raises(ValueError, match="'groupby'"):
        GroupBalancedSampler(skewed_exemplars(), groupby="colour")
    with pytest.raises(TypeError, match="'exemplars'"):
        GroupBalancedSampler([1, 2, 3])


def test_array_source_batches_like_its_items():
    """DataLoader uses __getitems__ when a dataset has it: same items as __getitem__."""
    inputs = np.arange(14, dtype=np.float32).reshape(7, 2)
    src = memstore.ArraySource(inputs, [0, 1, 2, 0, 1, 2, 3])
    items = src.__getitems__([4, 0, 6])
    assert [(x.tolist(), y) for x, y in items] == [
        (src[i][0].tolist(), src[i][1]) for i in (4, 0, 6)
    ]
    xs, ys = next(iter(torch.utils.data.DataLoader(src, batch_size=5)))
    assert torch.equal(xs, torch.from_numpy(inputs[:5])) and ys.tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(src.get_inputs([6, 1]), torch.from_numpy(inputs[[6, 1]]))


def test_sampler_streams_of_seed_and_epoch_do_not_alias():
    """Seed 0 at epoch 1 must not replay seed 1 at epoch 0 (streams derive from both)."""
    ex = memstore.Experience(targets=np.arange(200) % 4).as_exemplars(0)
    a = memstore.GroupBalancedSampler(ex, num_samples=64, seed=0)
    a.set_epoch(1)
    b = memstore.GroupBalancedSampler(ex, num_samples=64, seed=1)
    assert list(a) != list(b)


class CountingArraySource(memstore.ArraySource):
    """An ArraySource that counts its single-item and batched reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.item_reads = 0
        self.batch_reads = 0

    def __getitem__(self, index):
        self.item_reads += 1
        return super().__getitem__(index)

    def get_many(self, ids):
        self.batch_reads += 1
        return super().get_many(ids)


def test_array_source_is_read_in_one_batched_call_per_replay_batch():
    rng = np.random.default_rng(3)
    inputs = rng.standard_normal((40, 3)).astype(np.float32)
    src = CountingArraySource(inputs, rng.integers(0, 4, 40), task_labels=np.arange(40) % 2)
    buf = ClassBalancedBuffer(16, seed=0)
    buf.update(memstore.Experience.from_dataset(src, source="train", index=0))
    ds = ReplayDataset(buf, src)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)
    batches = list(loader)
    assert src.batch_reads == len(batches) == 4 and src.item_reads == 0
    x = torch.cat([b[0] for b in batches])
    ex = buf.buffer
    assert torch.equal(x, torch.from_numpy(inputs[ex.ids]))
    assert torch.cat([b[1] for b in batches]).tolist() == ex.targets.tolist()
    assert torch.cat([b[2] for b in batches]).tolist() == ex.task_labels.tolist()
    # get_many returns exactly the items, in request order (repeats and negatives included).
    ids = [7, 0, 39, 7, -1]
    got = memstore.ArraySource.get_many(src, ids)
    assert len(got) == len(ids)
    for (gx, gy), i in zip(got, ids, strict=True):
        ex_x, ex_y = memstore.ArraySource.__getitem__(src, i)
        assert torch.equal(gx, ex_x) and gy == ex_y and isinstance(gy, int)
    assert memstore.ArraySource.get_many(src, []) == []

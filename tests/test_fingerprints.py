"""Issue 8, item 11: a different dataset must be refused. Fingerprints of non-shard sources
cover a seeded sample of the inputs (versioned ``v2:``); fingerprints recorded by earlier
versions are still compared, with the computation that made them."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import memstore
from memstore.sources.base import FINGERPRINT_SAMPLE, fingerprint_matches, targets_fingerprint

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _arrays(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), np.arange(n) % 5


class Plain(torch.utils.data.Dataset):
    """A map-style dataset with ``targets``: counts the items read."""

    def __init__(self, x, y, noise: bool = False):
        self.x, self.targets, self.noise, self.reads = torch.as_tensor(x), y, noise, 0

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        self.reads += 1
        x = self.x[i]
        if self.noise:  # a random augmentation drawn from the global generators
            x = x + torch.rand(()) + random.random() + float(np.random.rand())
        return x, int(self.targets[i])


def test_array_sources_with_same_targets_and_other_inputs_differ():
    x, y = _arrays(0)
    other = x.copy()
    other[np.arange(len(x))] += 1.0  # every input changed, targets the same
    a, b = memstore.ArraySource(x, y), memstore.ArraySource(other, y)
    assert a.fingerprint().startswith("v2:200:")
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == memstore.ArraySource(x.copy(), y).fingerprint()


def test_plain_datasets_with_same_targets_and_other_inputs_differ_reading_a_sample():
    x, y = _arrays(0, n=5000)
    a, b = Plain(x, y), Plain(x + 1, y)
    assert memstore.fingerprint(a) != memstore.fingerprint(b)
    assert a.reads == FINGERPRINT_SAMPLE  # O(sample), never the whole dataset
    assert memstore.fingerprint(a) == memstore.fingerprint(Plain(x, y))


def test_random_augmentations_do_not_change_the_fingerprint_nor_the_global_generators():
    x, y = _arrays(0)
    ds = Plain(x, y, noise=True)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first = memstore.fingerprint(ds)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert memstore.fingerprint(ds) == first


def test_save_with_one_dataset_load_with_another_is_refused(tmp_path):
    x, y = _arrays(0)
    a, b = memstore.ArraySource(x, y), memstore.ArraySource(x[::-1].copy(), y)
    store = memstore.open_store(str(tmp_path / "m.zarr"))
    buf = memstore.ReservoirSamplingBuffer(10, seed=0)
    buf.update(memstore.Experience(targets=y, ids=np.arange(len(y)), source="a"))
    store.save("r", buf, sources={"a": a})
    store.load("r", sources={"a": a})
    with pytest.raises(memstore.SourceMismatchError, match="'a'"):
        store.load("r", sources={"a": b})


def test_legacy_fingerprints_are_compared_with_the_legacy_computation(tmp_path):
    root = tmp_path / "format1_store"
    shutil.copytree(FIXTURES / "format1_store", root)
    store = memstore.open_store(root.as_posix(), mode="r")
    rng = np.random.default_rng(7)  # the fixture's data (make_format1_store.py)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=120)
    data = memstore.ArraySource(torch.from_numpy(x), torch.from_numpy(y))
    recorded = store.describe("closest")["sources"]["train"]["fingerprint"]
    assert recorded == "120:979673daffe2a0cd8cbe" == targets_fingerprint(120, y)
    assert fingerprint_matches(data, recorded)
    store.load("closest", sources={"train": data})
    other_targets = memstore.ArraySource(x, (y + 1) % 4)
    assert not fingerprint_matches(other_targets, recorded)
    with pytest.raises(memstore.SourceMismatchError):
        store.load("closest", sources={"train": other_targets})
    # a v2 value is compared with the v2 computation only
    assert not fingerprint_matches(data, "v2:" + recorded)

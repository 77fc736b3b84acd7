"""The source contracts (memstore.sources.base), the as_source adapter, the input readers, and
the ranged reads of the one file layer (memstore.io) that shard sources use."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import memstore
from memstore.io import FsspecFiles, LocalFiles, open_files
from memstore.sources import (
    BatchStream,
    InputBatchSource,
    Source,
    SourceIndexStore,
    as_source,
    fingerprint,
)
from memstore.sources.base import DatasetSource, targets_fingerprint
from memstore.sources.inputs import batch_inputs, input_batches, item_input


class Plain(torch.utils.data.Dataset):
    """A map-style dataset with targets and no batched read; counts reads."""

    def __init__(self, n: int = 10) -> None:
        self.x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
        self.targets = [i % 3 for i in range(n)]
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], self.targets[i]


class Batched(Plain):
    """Plain with a torch-style ``__getitems__``; counts batched reads."""

    def __init__(self, n: int = 10) -> None:
        super().__init__(n)
        self.batches = 0

    def __getitems__(self, indices):
        self.batches += 1
        return [(self.x[i], self.targets[i]) for i in indices]


class Streaming(Plain):
    def iter_batches(self, ids=None, *, batch_size=256):
        ids = np.arange(len(self)) if ids is None else np.asarray(ids)
        for k in range(0, len(ids), batch_size):
            chunk = ids[k : k + batch_size]
            yield chunk, self.x[torch.as_tensor(chunk)]


def test_sources_satisfy_the_protocol_and_datasets_are_adapted():
    arr = memstore.ArraySource(np.zeros((4, 2), np.float32), [0, 1, 0, 1])
    assert isinstance(arr, Source) and isinstance(arr, InputBatchSource)
    assert as_source(arr) is arr and not isinstance(arr, BatchStream)
    plain = Plain()
    assert not isinstance(plain, Source)
    wrapped = as_source(plain)
    assert isinstance(wrapped, DatasetSource) and isinstance(wrapped, Source)
    assert not isinstance(wrapped, BatchStream) and not isinstance(wrapped, InputBatchSource)
    assert len(wrapped) == 10 and wrapped.targets == plain.targets
    assert torch.equal(wrapped[3][0], plain[3][0]) and wrapped[3][1] == 0
    assert isinstance(as_source(Streaming()), BatchStream)
    assert isinstance(as_source([1, 2, 3]), Source) and as_source([1, 2, 3]).targets is None


def test_batched_read_uses_getitems_when_defined_else_a_loop():
    plain, batched = Plain(), Batched()
    ids = np.asarray([4, 1, 4])
    got = as_source(plain).get_many(ids)
    assert plain.reads == 3 and [int(y) for _, y in got] == [1, 1, 1]
    got = as_source(batched).get_many(ids)
    assert batched.batches == 1 and batched.reads == 0
    assert all(torch.equal(a, batched.x[i]) for (a, _), i in zip(got, ids, strict=True))
    sub = torch.utils.data.Subset(batched, [9, 8, 7])
    assert [int(y) for _, y in as_source(sub).get_many([0, 2])] == [0, 1]
    assert batched.batches == 2  # Subset forwards to the root's __getitems__
    assert as_source(["a", "b", "c"]).get_many([2, 0]) == ["c", "a"]


def test_fingerprints_are_one_rule_across_sources():
    rng = np.random.default_rng(0)
    y, t = rng.integers(0, 3, 6), np.arange(6) % 2
    plain = Plain(6)
    x = plain.x.clone()
    arr = memstore.ArraySource(x, y, task_labels=t)
    assert arr.fingerprint() == fingerprint(arr) and arr.fingerprint().startswith("v2:6:")
    assert arr.legacy_fingerprint() == targets_fingerprint(6, y, t)  # version 1, for old stores
    assert fingerprint(memstore.ArraySource(x, y)) != arr.fingerprint()
    plain.targets = y.tolist()
    assert fingerprint(plain) == fingerprint(memstore.ArraySource(x, y))  # same items
    plain.targets_task_labels = t
    assert fingerprint(plain) == arr.fingerprint()
    assert fingerprint([0] * 6).startswith("v2:6:") and fingerprint([0] * 6) != fingerprint([1] * 6)
    own = Plain(6)
    own.fingerprint = lambda: "mine"
    assert fingerprint(own) == "mine"
    assert memstore.fingerprint is fingerprint


def test_source_index_store_protocol(tmp_path):
    class Saves:
        def read_source_index(self, name):
            return None

        def write_source_index(self, name, record, arrays):
            pass

    assert isinstance(Saves(), SourceIndexStore) and not isinstance(object(), SourceIndexStore)
    assert isinstance(memstore.open_store(str(tmp_path / "s")), SourceIndexStore)


def test_input_readers():
    assert item_input((1, 2)) == 1 and item_input({"x": 5, "y": 1}) == 5 and item_input(7) == 7
    with pytest.raises(KeyError, match="input_key="):
        item_input({"a": 1})
    batched = Batched()
    out = batch_inputs(batched, np.asarray([2, 0]))
    assert torch.equal(out, batched.x[[2, 0]]) and batched.batches == 1
    arr = memstore.ArraySource(np.arange(12, dtype=np.float32).reshape(6, 2), [0] * 6)
    assert torch.equal(batch_inputs(arr, np.asarray([5, 1])), arr.inputs[[5, 1]])
    keys = np.asarray([5, 0, 3, 1])
    for ds in (Plain(6), Streaming(6)):
        seen = np.zeros(len(keys), bool)
        for pos, inputs in input_batches(ds, keys, 3):
            assert torch.equal(inputs, ds.x[torch.as_tensor(keys[pos])])
            seen[pos] = True
        assert seen.all()


# -- ranged reads of the file layer ------------------------------------------------------------
def _files(kind, tmp_path):
    if kind == "local":
        files = open_files(str(tmp_path))
        assert isinstance(files, LocalFiles)
        return files
    pytest.importorskip("fsspec")
    files = open_files(f"memory://ranged-{tmp_path.name}")
    assert isinstance(files, FsspecFiles)
    return files


@pytest.mark.parametrize("kind", ["local", "fsspec"])
def test_ranged_reads(kind, tmp_path):
    files = _files(kind, tmp_path)
    data = bytes(range(256)) * 40
    files.write_file("d/a.bin", data)
    files.write_file("d/b.bin", b"xyz")
    assert files.size("d/a.bin") == len(data) and files.size("d/b.bin") == 3
    with pytest.raises(FileNotFoundError):
        files.size("d/none.bin")
    got = files.read_ranges(
        ["d/a.bin", "d/b.bin", "d/a.bin", "d/b.bin"], [5, 1, 100, 2], [9, 3, 100, 9]
    )
    assert [bytes(g) for g in got] == [data[5:9], b"yz", b"", b"z"]  # the last one is short
    assert bytes(files.read_range("d/a.bin", 7, 20)) == data[7:20]
    assert (
        bytes(files.read_range("d/b.bin", 1, 10)) == b"yz"
        and files.read_range("d/b.bin", 2, 2) == b""
    )
    mat = np.zeros((2, 4), np.uint8)
    flat = memoryview(mat.reshape(-1))
    counts = files.readinto_ranges(["d/a.bin", "d/b.bin"], [10, 1], [flat[:4], flat[4:]])
    assert counts == [4, 2] and mat[0].tobytes() == data[10:14] and mat[1, :2].tobytes() == b"yz"
    with files.open_stream("d/a.bin", 1024) as stream:
        assert stream.read(3) == data[:3]
        stream.seek(1000)
        assert stream.read(5) == data[1000:1005]
    files.close()
    assert bytes(files.read_ranges(["d/b.bin"], [0], [3])[0]) == b"xyz"  # reopened after close


def test_local_descriptors_are_cached_per_process_and_never_pickled(tmp_path, monkeypatch):
    files = open_files(str(tmp_path))
    for i in range(70):
        files.write_file(f"f{i}", b"%d" % i)
    assert [
        bytes(b) for b in files.read_ranges([f"f{i}" for i in range(70)], [0] * 70, [2] * 70)
    ] == [b"%d" % i for i in range(70)]
    held = dict(files._fds)
    assert len(held) == 64  # at most 64 open, oldest closed first
    assert "f69" in held and "f0" not in held
    clone = pickle.loads(pickle.dumps(files))
    assert clone._fds is None and bytes(clone.read_ranges(["f1"], [0], [1])[0]) == b"1"
    clone.close()
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked DataLoader worker
    assert bytes(files.read_ranges(["f69"], [0], [2])[0]) == b"69"
    assert files._fds is not None and files._fds["f69"] != held["f69"]  # its own descriptor
    files.close()
    monkeypatch.undo()
    for fd in held.values():  # the parent's descriptors were left alone by the "child"
        os.fstat(fd)
        os.close(fd)

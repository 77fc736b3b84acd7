"""Run state (``Store.save(..., run_state=)``): read back exactly at any commit, unchanged
tensors shared with the older snapshot gc then keeps, damaged tensor bytes named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from memstore import BufferNotFoundError, CorruptStoreError, open_store
from memstore.testing.reference import assert_run_state_equal
from memstore.testing.store_child import crash_run_state, run_stream

from .base import StoreFixtures
from .files import flip_byte, fs_root, manifest, snapshot_path

__all__ = ["RunStateTests", "every_leaf_type"]

NAME = "replay"
SIZE = 64  # float32 values per tensor of crash_run_state: 256 bytes


def every_leaf_type(step: int) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """A run state holding every kind of leaf the store keeps (tensors of mixed dtypes with
    bfloat16, 0-d, empty, non-contiguous and requiring grad; numpy arrays and scalars; int
    keys, nested lists/tuples, None, NaN/inf, huge ints), ``step`` in a few of them; and what
    ``Store.run_state`` gives back for it (tensors detached and contiguous)."""
    value = {
        "tensors": [
            torch.arange(6, dtype=torch.float32).reshape(2, 3) + step,
            torch.tensor([1.5, -2.25 * step], dtype=torch.bfloat16),
            torch.tensor([True, False]),
            torch.tensor(7 + step, dtype=torch.int64),  # 0-d
            torch.zeros(0, 4, dtype=torch.float16),  # empty
            torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
            torch.ones(2, requires_grad=True),
        ],
        "arrays": (np.arange(4, dtype=np.uint16), np.array(3.5), np.zeros((2, 0), bool)),
        "scalars": [np.float32(2.5), np.int64(-3 - step), np.bool_(True)],
        0: {1: "int keys", "nested": [None, True, False, step, -(2**70), "s"]},
        "floats": [1.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-300],
        "empty": {"list": [], "tuple": (), "map": {}},
    }
    expected = dict(value)
    expected["tensors"] = [t.detach().contiguous() for t in value["tensors"]]
    return value, expected


def _holds_files(url: str, options: dict | None, snapshot: str) -> bool:
    """Whether any file is left under ``buffers/<NAME>/<snapshot>`` (object stores may list
    emptied folders for a while: files only)."""
    fs, root = fs_root(url, options)
    fs.invalidate_cache()
    return bool(fs.find(f"{root}/buffers/{NAME}/{snapshot}"))


def _tensors_file(url: str, options: dict | None, seq: int) -> str:
    return f"{snapshot_path(url, options, NAME, seq)}/run_state/tensors.safetensors"


class RunStateTests(StoreFixtures):
    """A commit's run state reads back exactly, shares unchanged tensors, names damage."""

    def test_every_leaf_type_round_trips_at_the_newest_and_an_older_commit(
        self, store_url, storage_options, sources
    ):
        store = open_store(store_url, storage_options=storage_options)
        buf = run_stream("class", 1, sources)
        (first, first_back), (second, second_back) = every_leaf_type(0), every_leaf_type(1)
        store.save(NAME, buf, run_state=first)
        store.save(NAME, buf, run_state=second)
        fresh = open_store(store_url, mode="r", storage_options=storage_options)
        for reader in (store, fresh):
            back = reader.run_state(NAME)
            assert_run_state_equal(back, second_back)
            assert back["tensors"][5].is_contiguous() and not back["tensors"][6].requires_grad
            assert_run_state_equal(reader.run_state(NAME, commit=0), first_back)

    def test_unchanged_tensors_are_shared_and_gc_keeps_the_snapshot_they_are_read_from(
        self, store_url, storage_options, sources
    ):
        store = open_store(store_url, storage_options=storage_options)
        buf = run_stream("class", 1, sources)
        for step in (0, 1):  # "frozen" is the same in both, "head" changes
            store.save(NAME, buf, run_state=crash_run_state(step, SIZE))
        fs, root = fs_root(store_url, storage_options)
        first, second = (manifest(store_url, storage_options, NAME, s) for s in (0, 1))
        assert first["run_state"]["refs"] == [] and first["run_state"]["written"] > 2 * SIZE * 4
        assert second["run_state"]["refs"] == [first["snapshot"]]
        assert second["run_state"]["bytes"] == 2 * SIZE * 4
        # Only the head is written again: its bytes and a safetensors header.
        written = second["run_state"]["written"]
        assert fs.size(f"{root}/{_tensors_file(store_url, storage_options, 1)}") == written
        assert SIZE * 4 < written < SIZE * 4 + 256

        store.gc(keep=1, grace_seconds=0)  # prunes commit 0, keeps its snapshot: 1 reads it
        assert [c.seq for c in store.log(NAME)] == [1]
        assert _holds_files(store_url, storage_options, first["snapshot"])
        assert store.verify() == []
        assert_run_state_equal(store.run_state(NAME), crash_run_state(1, SIZE))
        with pytest.raises(BufferNotFoundError):
            store.run_state(NAME, commit=0)

        other = {"model": {"w": torch.ones(3)}}  # shares nothing: no kept commit reads 0
        store.save(NAME, buf, run_state=other)
        assert manifest(store_url, storage_options, NAME, 2)["run_state"]["refs"] == []
        store.gc(keep=1, grace_seconds=0)
        assert not _holds_files(store_url, storage_options, first["snapshot"])
        assert not _holds_files(store_url, storage_options, second["snapshot"])
        assert_run_state_equal(store.run_state(NAME), other)

    def test_a_flipped_tensor_byte_is_named_by_run_state_and_verify(
        self, store_url, storage_options, sources
    ):
        store = open_store(store_url, storage_options=storage_options)
        buf = run_stream("class", 1, sources)
        for step in (0, 1):
            store.save(NAME, buf, run_state=crash_run_state(step, SIZE))
        damaged = _tensors_file(store_url, storage_options, 1)  # holds commit 1's head only
        flip_byte(store_url, storage_options, damaged, -1)  # the head's last byte

        with pytest.raises(CorruptStoreError) as info:
            store.run_state(NAME)
        assert damaged in str(info.value) and "run_state['model']['head']" in str(info.value)
        assert_run_state_equal(store.run_state(NAME, commit=0), crash_run_state(0, SIZE))
        assert len(store.load(NAME)) == len(buf)  # the memory alone still loads
        problems = store.verify()
        assert [(p.severity, p.path) for p in problems] == [
            ("error", damaged.removesuffix("/tensors.safetensors"))
        ]
        assert "run_state['model']['head']" in problems[0].message

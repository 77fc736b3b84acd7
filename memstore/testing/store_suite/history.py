"""History: log, load by commit, next_experience, gc, describe, delete."""

from __future__ import annotations

import numpy as np
import pytest

import memstore
from memstore import BufferNotFoundError, ReservoirSamplingBuffer, open_store
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import run_stream

from .base import StoreFixtures
from .files import fs_root, manifest

__all__ = ["HistoryTests"]


class HistoryTests(StoreFixtures):
    """Commits are numbered, listed, loadable, collected and summarised."""

    def test_log_load_by_commit_next_experience_and_gc(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        assert store.buffers() == [] and store.next_experience("b") == 0
        states = []
        for steps in range(1, 6):
            buf = run_stream("random-class", steps, sources)
            commit = store.save("b", buf, message=f"after step {steps - 1}", overwrite=True)
            assert commit.seq == steps - 1
            assert store.next_experience("b") == steps
            states.append(buf.state_dict())
        store.save("other", ReservoirSamplingBuffer(5))

        log = store.log("b")
        assert [c.seq for c in log] == [0, 1, 2, 3, 4]
        assert [c.message for c in log] == [f"after step {k}" for k in range(5)]
        assert [c.sizes["rows"] for c in log] == [len(s["columns"]["ids"]) for s in states]
        assert len({c.id for c in log}) == 5
        assert [c.time for c in log] == sorted(c.time for c in log)
        assert store.buffers() == ["b", "other"]
        for seq, state in enumerate(states):
            assert_state_equal(store.load("b", commit=seq).state_dict(), state)
        assert_state_equal(store.load("b").state_dict(), states[-1])

        fs, root = fs_root(store_url, storage_options)
        kept = {seq: manifest(store_url, storage_options, "b", seq)["snapshot"] for seq in (3, 4)}
        removed = store.gc(keep=2, grace_seconds=0)
        assert len(removed) == 6  # three manifests (now tombstones) and their snapshots
        commits = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/buffers/b/commits", False))
        assert commits == [f"{seq:010d}.json" for seq in range(5)]  # seqs 0-2 stay taken
        for seq in range(3):
            assert manifest(store_url, storage_options, "b", seq)["kind"] == "tombstone"
        snaps = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/buffers/b/snapshots", False))
        assert [s for s in snaps if s != "zarr.json"] == sorted(
            v.split("/")[1] for v in kept.values()
        )
        assert [c.seq for c in store.log("b")] == [3, 4]
        assert [c.seq for c in store.log("other")] == [0]
        with pytest.raises(BufferNotFoundError, match="has no commit 0"):
            store.load("b", commit=0)
        assert_state_equal(store.load("b", commit=3).state_dict(), states[3])
        assert store.next_experience("b") == 5
        assert store.verify() == []

        # The next commit continues the numbering.
        assert store.save("b", run_stream("random-class", 5, sources), overwrite=True).seq == 5
        with pytest.raises(ValueError, match="'keep' parameter"):
            store.gc(keep=0)

    def test_describe_summarises_a_commit(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        buf = run_stream("class", 3, sources)
        store.save("b", buf, message="m", sources=sources)
        info = store.describe("b")
        assert info["policy"] == "ClassBalancedBuffer"
        assert info["size"] == len(buf) == sum(g["size"] for g in info["groups"])
        classes, counts = np.unique(buf.buffer.targets, return_counts=True)
        assert info["classes"] == {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
        assert info["params"]["max_size"] == buf.max_size
        assert sorted(info["sources"]) == ["a", "b"]
        assert info["sources"]["a"]["fingerprint"] == memstore.fingerprint(sources["a"])
        assert [c["message"] for c in info["commits"]] == ["m"]

    def test_delete_buffer(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        store.save("b", run_stream("reservoir", 1, sources))
        store.save("keep", run_stream("reservoir", 1, sources))
        store.delete_buffer("b")
        assert store.buffers() == ["keep"] and "b" not in store
        with pytest.raises(BufferNotFoundError):
            store.delete_buffer("b")
        assert store.verify() == []

    def test_selection_strategy_only_for_parametric_buffers(
        self, saved, store_url, storage_options
    ):
        store = open_store(store_url, storage_options=storage_options)
        name = store.buffers()[0]
        policy = store.describe(name)["policy"]
        if policy == "ParametricBuffer":
            pytest.skip("the saved fixture buffer is parametric")
        with pytest.raises(TypeError, match="only applies to a ParametricBuffer"):
            store.load(name, selection_strategy=memstore.RandomExemplarsSelectionStrategy())

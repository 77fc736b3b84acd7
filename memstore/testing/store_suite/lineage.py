"""Lineage: optimistic concurrency, seqs never reused, gc keeps loadable commits, deleted
manifests reported (issue 8, items 1-4)."""

from __future__ import annotations

import pytest

from memstore import (
    BufferNotFoundError,
    ConcurrentCommitError,
    CorruptStoreError,
    ReservoirSamplingBuffer,
    UnrelatedHistoryError,
    open_store,
)
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import add_rows

from .base import StoreFixtures
from .files import fs_root, manifest, put, snapshot_path, tree

__all__ = ["LineageTests"]


def _errors(problems):
    return [p for p in problems if p.severity == "error"]


def _commits_path(name: str, seq: int) -> str:
    return f"buffers/{name}/commits/{seq:010d}.json"


class LineageTests(StoreFixtures):
    """A commit builds on the commit its content came from, and history is never lost."""

    @pytest.fixture
    def five_commits(self, store_url, storage_options):
        """Buffer 'b' with commits 0..4, each one loaded from the previous (10 rows each)."""
        store = open_store(store_url, storage_options=storage_options)
        buf = ReservoirSamplingBuffer(1000, seed=1)
        states = []
        for k in range(5):
            add_rows(buf, 10 * k)
            assert store.save("b", buf, message=f"c{k}").seq == k
            states.append(buf.state_dict())
        return store, states

    # -- item 1: optimistic concurrency --------------------------------------------------------
    def test_a_stale_save_is_refused_and_reload_retry_succeeds(self, store_url, storage_options):
        store = open_store(store_url, storage_options=storage_options)
        first = ReservoirSamplingBuffer(1000, seed=1)
        add_rows(first, 0)
        store.save("b", first)
        a, b = store.load("b"), store.load("b")
        assert a.origin == b.origin and a.origin.seq == 0 and a.origin.name == "b"
        add_rows(a, 100)
        assert store.save("b", a, message="a").seq == 1
        assert a.origin.seq == 1
        add_rows(b, 200)
        before = tree(store_url, storage_options)
        with pytest.raises(
            ConcurrentCommitError, match=r"Commit 1 of buffer 'b' is taken.*store\.load"
        ):
            store.save("b", b, message="b")
        assert tree(store_url, storage_options) == before  # the loser left nothing behind
        assert b.origin.seq == 0
        assert [(c.seq, c.message) for c in store.log("b")] == [(0, ""), (1, "a")]

        b = store.load("b")  # reload and re-apply
        add_rows(b, 200)
        assert store.save("b", b, message="b").seq == 2
        assert manifest(store_url, storage_options, "b", 2)["parent"] == 1
        final = set(store.load("b").buffer.ids.tolist())
        assert final == set(range(10)) | set(range(100, 110)) | set(range(200, 210))
        assert store.verify() == []

    def test_a_buffer_not_from_name_needs_an_explicit_choice(
        self, five_commits, store_url, storage_options
    ):
        store, states = five_commits
        fresh = ReservoirSamplingBuffer(1000, seed=9)
        add_rows(fresh, 500)
        before = tree(store_url, storage_options)
        with pytest.raises(UnrelatedHistoryError, match=r"parent=N.*overwrite=True") as info:
            store.save("b", fresh)
        assert isinstance(info.value, ValueError)
        assert tree(store_url, storage_options) == before and fresh.origin is None
        # Building on an older commit than the newest is a conflict, not an overwrite.
        with pytest.raises(ConcurrentCommitError):
            store.save("b", fresh, parent=2)
        with pytest.raises(BufferNotFoundError, match="no commit 7"):
            store.save("b", fresh, parent=7)
        with pytest.raises(ValueError, match="either parent= or overwrite=True"):
            store.save("b", fresh, parent=4, overwrite=True)
        with pytest.raises(TypeError, match="'overwrite' parameter of Store.save"):
            store.save("b", fresh, overwrite="yes")
        assert tree(store_url, storage_options) == before
        assert store.save("b", fresh, parent=4).seq == 5
        assert manifest(store_url, storage_options, "b", 5)["parent"] == 4
        other = ReservoirSamplingBuffer(1000, seed=8)
        assert store.save("b", other, overwrite=True).seq == 6
        assert manifest(store_url, storage_options, "b", 6)["parent"] == 5
        # A buffer from 'b' saved under a new name starts that name's history ...
        loaded = store.load("b", commit=3)
        assert store.save("c", loaded).seq == 0
        assert manifest(store_url, storage_options, "c", 0)["parent"] is None
        assert loaded.origin.name == "c"
        # ... but under another existing name it needs the same explicit choice.
        with pytest.raises(UnrelatedHistoryError):
            store.save("b", loaded)
        assert_state_equal(store.load("b", commit=3).state_dict(), states[3])

    def test_a_buffer_from_another_store_is_unrelated(self, five_commits, tmp_path):
        store, _ = five_commits
        elsewhere = open_store(str(tmp_path / "other.zarr"))
        buf = store.load("b")
        elsewhere.save("b", ReservoirSamplingBuffer(10))
        with pytest.raises(UnrelatedHistoryError):
            elsewhere.save("b", buf)

    # -- item 2: gc keeps the newest K loadable commits -----------------------------------------
    @pytest.mark.parametrize("damage", ["manifest", "snapshot"])
    def test_gc_never_deletes_while_the_newest_commit_is_damaged(
        self, five_commits, store_url, storage_options, damage
    ):
        store, states = five_commits
        fs, root = fs_root(store_url, storage_options)
        if damage == "manifest":
            fs.pipe_file(f"{root}/{_commits_path('b', 4)}", b'{"seq": 4, garbage')
        else:
            snap = snapshot_path(store_url, storage_options, "b", 4)
            fs.pipe_file(f"{root}/{snap}/ids/c/0", b"\x00\x01")
        before = tree(store_url, storage_options)
        with pytest.raises(CorruptStoreError, match=r"newest commit 4 of buffer 'b'.*force=True"):
            store.gc(keep=1, grace_seconds=0)
        assert tree(store_url, storage_options) == before
        for seq in range(4):
            assert_state_equal(store.load("b", commit=seq).state_dict(), states[seq])

        # Forced: the newest loadable commit (3) is kept, and the damaged one as evidence.
        removed = store.gc(keep=1, grace_seconds=0, force=True)
        assert sorted(p for p in removed if "/commits/" in p) == [
            _commits_path("b", s) for s in range(3)
        ]
        assert [c.seq for c in store.log("b")] == ([3] if damage == "manifest" else [3, 4])
        assert_state_equal(store.load("b", commit=3).state_dict(), states[3])

    def test_gc_counts_only_loadable_commits_as_kept(
        self, five_commits, store_url, storage_options
    ):
        store, states = five_commits
        fs, root = fs_root(store_url, storage_options)
        snap = snapshot_path(store_url, storage_options, "b", 3)
        fs.pipe_file(f"{root}/{snap}/ids/c/0", b"\x00\x01")  # commit 3 damaged
        store.gc(keep=2, grace_seconds=0)
        for seq in (2, 4):
            assert_state_equal(store.load("b", commit=seq).state_dict(), states[seq])
        assert fs.exists(f"{root}/{snap}")  # the damaged commit stays as evidence
        for seq in (0, 1):
            with pytest.raises(BufferNotFoundError, match="pruned"):
                store.load("b", commit=seq)

    # -- item 3: seqs are never reused -------------------------------------------------------
    def test_a_slow_writer_cannot_publish_a_seq_gc_freed(
        self, five_commits, store_url, storage_options
    ):
        store, states = five_commits
        slow = store.load("b", commit=1)  # a writer that loaded commit 1 long ago
        add_rows(slow, 900)
        store.gc(keep=2, grace_seconds=0)  # prunes 0, 1, 2
        with pytest.raises(ConcurrentCommitError):
            store.save("b", slow)  # seq 2 was freed by gc: it must stay taken
        assert [c.seq for c in store.log("b")] == [3, 4]
        assert_state_equal(store.load("b").state_dict(), states[4])
        with pytest.raises(BufferNotFoundError, match="has no commit 2.*pruned"):
            store.load("b", commit=2)
        assert store.verify() == []  # pruned commits are not damage
        again = store.load("b")
        add_rows(again, 900)
        assert store.save("b", again).seq == 5
        assert store.next_experience("b") == states[4]["num_updates"] + 1

    # -- item 4: deleted manifests are reported ------------------------------------------------
    def test_a_gap_in_the_history_is_reported_and_its_snapshot_kept(
        self, five_commits, store_url, storage_options
    ):
        store, states = five_commits
        fs, root = fs_root(store_url, storage_options)
        snap = snapshot_path(store_url, storage_options, "b", 2)
        fs.rm_file(f"{root}/{_commits_path('b', 2)}")
        problems = _errors(store.verify())
        named = sorted(p.path for p in problems)
        assert named == sorted([_commits_path("b", 2), snap]), problems
        assert all("missing" in p.message or "deleted" in p.message for p in problems)
        assert_state_equal(store.load("b").state_dict(), states[4])
        store.gc(keep=10, grace_seconds=0)
        assert fs.exists(f"{root}/{snap}/ids/zarr.json")  # an orphan is not debris
        assert snap in store.gc(keep=10, grace_seconds=0, remove_orphans=True)
        assert not fs.exists(f"{root}/{snap}")

    def test_a_deleted_newest_manifest_does_not_roll_load_back(
        self, five_commits, store_url, storage_options
    ):
        store, states = five_commits
        fs, root = fs_root(store_url, storage_options)
        fs.rm_file(f"{root}/{_commits_path('b', 4)}")
        with pytest.raises(CorruptStoreError, match=_commits_path("b", 4)):
            store.load("b")
        assert_state_equal(store.load("b", commit=3).state_dict(), states[3])
        problems = _errors(store.verify())
        assert _commits_path("b", 4) in [p.path for p in problems], problems
        before = tree(store_url, storage_options)
        with pytest.raises(CorruptStoreError):
            store.gc(keep=1, grace_seconds=0)
        assert tree(store_url, storage_options) == before
        with pytest.raises(CorruptStoreError, match=_commits_path("b", 4)):
            store.next_experience("b")
        store.delete_buffer("b")  # a damaged buffer can still be deleted
        assert "b" not in store and store.buffers() == []

    def test_snapshots_of_interrupted_commits_stay_debris(
        self, five_commits, store_url, storage_options
    ):
        store, _ = five_commits
        fs, root = fs_root(store_url, storage_options)
        leftover = "buffers/b/snapshots/0000000005-deadbeef"
        put(fs, f"{root}/{leftover}/zarr.json", b"{}")
        problems = store.verify()
        assert _errors(problems) == []
        assert [p.path for p in problems if p.severity == "debris"] == [leftover]
        assert store.gc(keep=10, grace_seconds=0) == [leftover]

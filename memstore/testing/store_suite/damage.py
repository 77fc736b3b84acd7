"""Damage: named by verify and load, older commits stay loadable, gc spares evidence."""

from __future__ import annotations

import json

import pytest

from memstore import CorruptStoreError, open_store
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import run_stream

from .base import StoreFixtures
from .files import fs_root, manifest, put, snapshot_path, tree

__all__ = ["DamageTests", "DAMAGE"]


def _errors(problems):
    return [p for p in problems if p.severity == "error"]


def _debris(problems):
    return sorted(p.path for p in problems if p.severity == "debris")


def _damage(kind: str, url: str, options: dict | None) -> str:
    """Damage commit 2 of buffer 'b'; return the path that must be named."""
    fs, root = fs_root(url, options)
    snap = snapshot_path(url, options, "b", 2)
    if kind == "truncated chunk":
        chunk = f"{root}/{snap}/ids/c/0"
        data = fs.cat_file(chunk)
        fs.pipe_file(chunk, data[: len(data) // 2])
        return f"{snap}/ids"
    if kind == "deleted chunk":
        fs.rm_file(f"{root}/{snap}/targets/c/0")
        return f"{snap}/targets"
    if kind == "deleted array metadata":
        fs.rm_file(f"{root}/{snap}/weight/zarr.json")
        return f"{snap}/weight"
    if kind == "deleted snapshot":
        fs.rm(f"{root}/{snap}", recursive=True)
        return snap
    if kind == "garbled manifest":
        path = "buffers/b/commits/0000000002.json"
        fs.pipe_file(f"{root}/{path}", fs.cat_file(f"{root}/{path}")[:200] + b"\x00garbage")
        return path
    if kind == "manifest fields":
        path = "buffers/b/commits/0000000002.json"
        m = manifest(url, options, "b", 2)
        m["seq"] = 1
        fs.pipe_file(f"{root}/{path}", json.dumps(m).encode())
        return path
    if kind in _FIELD_EDITS:
        path = "buffers/b/commits/0000000002.json"
        m = manifest(url, options, "b", 2)
        _FIELD_EDITS[kind](m)
        fs.pipe_file(f"{root}/{path}", json.dumps(m, indent=1, sort_keys=True).encode())
        return path
    raise AssertionError(kind)


# Edits of a manifest that keep it valid JSON of the right shape (caught by its checksum) or
# not (caught by the field checks): each is damage naming the manifest.
_FIELD_EDITS = {
    "edited num_updates": lambda m: m.update(num_updates=m["num_updates"] + 1),
    "edited seed": lambda m: m["params"].update(seed=m["params"]["seed"] + 1),
    "edited message": lambda m: m.update(message=m["message"] + "!"),
    "renamed field": lambda m: m.update(num_update=m.pop("num_updates")),
    "field of a wrong type": lambda m: m.update(groups=[]),
    "checksum removed": lambda m: m.pop("checksum"),
}


DAMAGE = [
    "truncated chunk",
    "deleted chunk",
    "deleted array metadata",
    "deleted snapshot",
    "garbled manifest",
    "manifest fields",
    *_FIELD_EDITS,
]


class DamageTests(StoreFixtures):
    """Every kind of damage is named; debris is listed and collected."""

    @pytest.fixture
    def three_commits(self, store_url, storage_options, sources):
        """Buffer 'b' with commits 0, 1, 2 (states after 1, 2, 3 steps), buffer 'x' (1 commit)."""
        store = open_store(store_url, storage_options=storage_options)
        states = []
        for steps in (1, 2, 3):
            buf = run_stream("class", steps, sources)
            store.save("b", buf, message=f"steps {steps}", overwrite=True)
            states.append(buf.state_dict())
        store.save("x", run_stream("reservoir", 2, sources))
        assert store.verify() == []
        return store, states

    @pytest.mark.parametrize("kind", DAMAGE)
    def test_damage_is_named_and_older_commits_stay_loadable(
        self, three_commits, store_url, storage_options, kind
    ):
        store, states = three_commits
        named = _damage(kind, store_url, storage_options)

        errors = _errors(store.verify())
        assert len(errors) == 1, errors
        assert named in errors[0].path + " " + errors[0].message

        with pytest.raises(CorruptStoreError) as info:
            store.load("b", commit=2)
        assert named in str(info.value)
        with pytest.raises(CorruptStoreError):
            store.state("b", commit=2)
        for seq in (0, 1):
            assert_state_equal(store.load("b", commit=seq).state_dict(), states[seq])
        assert len(store.load("x")) == 40

        # gc never removes a damaged commit (it is not debris), even with no grace.
        before = tree(store_url, storage_options)
        assert store.gc(keep=10, grace_seconds=0) == []
        assert tree(store_url, storage_options) == before
        assert len(_errors(store.verify())) == 1

    def test_leftover_temp_files_are_debris_and_gc_removes_them(
        self, three_commits, store_url, storage_options
    ):
        store, states = three_commits
        fs, root = fs_root(store_url, storage_options)
        snaps_before = set(fs.ls(f"{root}/buffers/b/snapshots", detail=False))
        leftovers = [
            "buffers/b/commits/.tmp-0123456789ab",
            "buffers/b/snapshots/0000000003-deadbeef",
            "buffers/x/snapshots/0000000001-0badcafe",
        ]
        put(fs, f"{root}/{leftovers[0]}", b'{"seq": 3')
        put(fs, f"{root}/{leftovers[1]}/ids/c/0", b"\x01\x02")
        put(fs, f"{root}/{leftovers[2]}/zarr.json", b"{}")

        problems = store.verify()
        assert _errors(problems) == []
        assert _debris(problems) == sorted(leftovers)
        assert_state_equal(store.load("b").state_dict(), states[2])
        assert [c.seq for c in store.log("b")] == [0, 1, 2]

        # Fresh debris may belong to a writer still committing: the default grace keeps it.
        assert store.gc(keep=10) == []
        assert _debris(store.verify()) == sorted(leftovers)
        assert sorted(store.gc(keep=10, grace_seconds=0)) == sorted(leftovers)
        assert store.verify() == []
        assert set(fs.ls(f"{root}/buffers/b/snapshots", detail=False)) == snaps_before
        assert_state_equal(store.load("b").state_dict(), states[2])

    def test_gc_keeps_the_snapshot_of_a_garbled_manifest(
        self, three_commits, store_url, storage_options
    ):
        """Only the manifest is damaged: its snapshot is evidence, not debris."""
        store, _ = three_commits
        fs, root = fs_root(store_url, storage_options)
        snap = snapshot_path(store_url, storage_options, "b", 2)
        fs.pipe_file(f"{root}/buffers/b/commits/0000000002.json", b"{not json")
        assert store.gc(keep=10, grace_seconds=0) == []
        assert fs.exists(f"{root}/{snap}/ids/zarr.json")

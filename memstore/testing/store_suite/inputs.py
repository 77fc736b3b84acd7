"""The format and bad input: a clear error and nothing written."""

from __future__ import annotations

import json

import pytest

from memstore import (
    BufferNotFoundError,
    FormatVersionError,
    InvalidParameterError,
    InvalidParameterTypeError,
    ReadOnlyStoreError,
    StoreExistsError,
    StoreNotFoundError,
    open_store,
)
from memstore.store import FORMAT_VERSION
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import run_stream

from .base import StoreFixtures
from .files import fs_root, manifest, put, tree

__all__ = ["FormatTests", "BadInputTests"]


class FormatTests(StoreFixtures):
    """Newer formats and non-memstores are refused without writing."""

    def test_root_of_a_newer_format_is_refused(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        store.save("b", run_stream("reservoir", 1, sources))
        fs, root = fs_root(store_url, storage_options)
        meta = json.loads(fs.cat_file(f"{root}/zarr.json"))
        newer = FORMAT_VERSION + 1
        meta["attributes"]["memstore_format"] = newer
        fs.pipe_file(f"{root}/zarr.json", json.dumps(meta).encode())
        before = tree(store_url, storage_options)
        for mode in ("r", "a"):
            with pytest.raises(FormatVersionError, match=rf"format {newer}.*Upgrade memstore"):
                open_store(store_url, mode=mode, storage_options=storage_options)
        assert tree(store_url, storage_options) == before

    def test_a_plain_zarr_group_is_not_a_memstore(self, store_url, storage_options):
        import zarr

        zarr.open_group(store_url, mode="w", storage_options=storage_options).attrs["x"] = 1
        before = tree(store_url, storage_options)
        for mode in ("r", "a", "w-"):
            with pytest.raises(FormatVersionError, match="not a memstore"):
                open_store(store_url, mode=mode, storage_options=storage_options)
        assert tree(store_url, storage_options) == before

    def test_a_directory_of_other_files_is_not_a_memstore(self, store_url, storage_options):
        fs, root = fs_root(store_url, storage_options)
        put(fs, f"{root}/notes.txt", b"hello")
        before = tree(store_url, storage_options)
        with pytest.raises(FormatVersionError, match="not a memstore"):
            open_store(store_url, storage_options=storage_options)
        assert tree(store_url, storage_options) == before

    @pytest.mark.parametrize("keep_fields", [True, False])
    def test_manifest_of_a_newer_format_is_refused(
        self, store_url, storage_options, sources, keep_fields
    ):
        store = open_store(store_url, storage_options=storage_options)
        first = run_stream("reservoir", 1, sources)
        store.save("b", first)
        store.save("b", run_stream("reservoir", 2, sources), overwrite=True)
        fs, root = fs_root(store_url, storage_options)
        m = manifest(store_url, storage_options, "b", 1)
        newer = (
            dict(m, memstore_format=FORMAT_VERSION + 1)
            if keep_fields
            else {"memstore_format": FORMAT_VERSION + 1, "seq": 1, "layout": "something new"}
        )
        fs.pipe_file(f"{root}/buffers/b/commits/0000000001.json", json.dumps(newer).encode())
        with pytest.raises(FormatVersionError, match="commits/0000000001.json.*newer memstore"):
            store.load("b")
        assert_state_equal(store.load("b", commit=0).state_dict(), first.state_dict())

    def test_create_only_mode_refuses_an_existing_store(self, store_url, storage_options):
        open_store(store_url, storage_options=storage_options)
        with pytest.raises(StoreExistsError, match="w-") as info:
            open_store(store_url, mode="w-", storage_options=storage_options)
        assert isinstance(info.value, FileExistsError)


class BadInputTests(StoreFixtures):
    """Bad names, commits, buffers, modes: a clear error, nothing written."""

    @pytest.fixture
    def saved(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        buf = run_stream("class", 2, sources)
        store.save("b", buf, message="one")
        store.save("b", buf, message="two")
        return store, buf, tree(store_url, storage_options)

    def test_unknown_buffer(self, saved, store_url, storage_options):
        store, _, before = saved
        for call in (store.load, store.log, store.describe, store.state):
            with pytest.raises(BufferNotFoundError, match=r"No buffer named 'nope'"):
                call("nope")
        with pytest.raises(BufferNotFoundError, match=r"it holds \['b'\]"):
            store.load("nope")
        with pytest.raises(KeyError):
            store.load("nope")
        assert "nope" not in store and "b" in store
        assert store.buffers() == ["b"]
        assert store.next_experience("nope") == 0
        assert tree(store_url, storage_options) == before

    def test_commit_out_of_range(self, saved, store_url, storage_options):
        store, buf, before = saved
        with pytest.raises(BufferNotFoundError, match=r"has no commit 7; its commits are 0\.\.1"):
            store.load("b", commit=7)
        with pytest.raises(ValueError, match="'commit' parameter"):
            store.load("b", commit=-1)
        for bad in ("1", 1.0, True):
            with pytest.raises(TypeError, match="'commit' parameter"):
                store.load("b", commit=bad)
        assert_state_equal(store.load("b", commit=1).state_dict(), buf.state_dict())
        assert tree(store_url, storage_options) == before

    @pytest.mark.parametrize(
        "bad", ["", "../x", "a/b", ".hidden", "-x", "a b", "x" * 129, "zarr.json"]
    )
    def test_invalid_buffer_names(self, saved, store_url, storage_options, bad):
        store, buf, before = saved
        with pytest.raises(ValueError, match=r"'name' parameter of Store\.save") as info:
            store.save(bad, buf)
        assert isinstance(info.value, InvalidParameterError)
        with pytest.raises(ValueError, match=r"'name' parameter of Store\.load"):
            store.load(bad)
        for call in (store.log, store.describe, store.state, store.read_source_index):
            with pytest.raises(InvalidParameterError, match="'name' parameter"):
                call(bad)
        assert bad not in store
        assert tree(store_url, storage_options) == before

    @pytest.mark.parametrize("bad", [5, None, b"b"])
    def test_non_str_buffer_names(self, saved, store_url, storage_options, bad):
        store, buf, before = saved
        with pytest.raises(TypeError, match=r"'name' parameter of Store\.save") as info:
            store.save(bad, buf)
        assert isinstance(info.value, InvalidParameterTypeError)
        with pytest.raises(TypeError, match=r"'name' parameter of Store\.load"):
            store.load(bad)
        assert bad not in store
        assert tree(store_url, storage_options) == before

    def test_save_of_a_non_buffer(self, saved, store_url, storage_options):
        store, buf, before = saved
        for bad in (buf.state_dict(), None, [1, 2]):
            with pytest.raises(TypeError, match="'buffer' parameter of Store.save"):
                store.save("b", bad)
        with pytest.raises(TypeError, match="'message' parameter"):
            store.save("b", buf, message=3)
        assert tree(store_url, storage_options) == before

    def test_read_only_store(self, saved, store_url, storage_options):
        _, buf, before = saved
        store = open_store(store_url, mode="r", storage_options=storage_options)
        with pytest.raises(ReadOnlyStoreError, match="mode='r'") as info:
            store.save("b", buf)
        assert isinstance(info.value, PermissionError)
        with pytest.raises(ReadOnlyStoreError):
            store.save("new", buf)
        with pytest.raises(ReadOnlyStoreError):
            store.gc(keep=1)
        with pytest.raises(ReadOnlyStoreError):
            store.delete_buffer("b")
        assert_state_equal(store.load("b").state_dict(), buf.state_dict())
        assert tree(store_url, storage_options) == before

    def test_read_mode_on_a_missing_store(self, store_url, storage_options):
        with pytest.raises(StoreNotFoundError, match="mode='r'") as info:
            open_store(store_url, mode="r", storage_options=storage_options)
        assert isinstance(info.value, FileNotFoundError)
        assert tree(store_url, storage_options) == {}

    def test_invalid_mode_and_url(self, store_url, storage_options):
        with pytest.raises(ValueError, match="'mode' parameter"):
            open_store(store_url, mode="w", storage_options=storage_options)
        with pytest.raises(TypeError, match="'url' parameter"):
            open_store(None)
        assert tree(store_url, storage_options) == {}

"""The store on a local directory: the whole backend-agnostic suite
(:mod:`memstore.testing.store_suite`), plus what only local paths have."""

from __future__ import annotations

import pathlib

import pytest

import memstore
from memstore import InvalidParameterError, StoreAccessError, open_store
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import make_sources, run_stream
from memstore.testing.store_suite import StoreTests


class TestLocalStore(StoreTests):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return str(tmp_path / "m.zarr")


def test_unknown_url_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="'nosuchproto'") as info:
        open_store("nosuchproto://bucket/x")
    assert isinstance(info.value, InvalidParameterError)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    target = str(afile / "store")
    for mode in ("a", "w-", "r"):
        with pytest.raises(OSError, match="afile/store") as info:
            open_store(target, mode=mode)
        assert isinstance(info.value, StoreAccessError)
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]
    assert afile.read_text() == "not a directory"


def test_storage_options_with_a_local_path(tmp_path):
    with pytest.raises(ValueError, match="storage_options") as info:
        open_store(str(tmp_path / "m.zarr"), storage_options={"anon": True})
    assert isinstance(info.value, InvalidParameterError)
    assert list(tmp_path.iterdir()) == []


def test_open_store_accepts_a_path_object(tmp_path):
    path = tmp_path / "m.zarr"
    buf = run_stream("class", 2, make_sources())
    store = open_store(path)
    assert store.url == str(path)
    store.save("b", buf)
    again = open_store(pathlib.PurePath(path), mode="r")
    assert_state_equal(again.load("b").state_dict(), buf.state_dict())
    assert again.buffers() == ["b"]
    with pytest.raises(memstore.StoreExistsError):
        open_store(path, mode="w-")

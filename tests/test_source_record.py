"""A source folder whose record.json is missing (deleted, or a first indexing killed before
its record) is damage ``verify`` names at the record's path; gc keeps its index folders as
evidence unless ``remove_orphans=True``; re-indexing repairs it; removing the whole
``sources/<name>/`` folder (a deliberate removal) is no damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from memstore import MemstoreError, open_store
from memstore.cli import main
from memstore.sources.shards import ShardSource, write_shards

RECORD = "sources/shards/record.json"


@pytest.fixture
def indexed(tmp_path):
    """A store holding the shard index of 24 samples in 2 shards; (store, spec, index folder)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3)).astype(np.float32)
    y = rng.integers(0, 4, 24)
    out = write_shards(x, str(tmp_path / "data" / "s-%04d.tar"), targets=y, maxcount=12)
    store = open_store(tmp_path / "m.zarr")
    src = ShardSource(out.spec, name="shards", store=store, progress=False)
    np.testing.assert_array_equal(np.asarray(src.targets), y)
    (folder,) = (Path(store.url) / "sources" / "shards").glob("index-*")
    return store, out.spec, f"sources/shards/{folder.name}"


def _errors(store):
    return [p for p in store.verify() if p.severity == "error"]


def test_a_healthy_shard_index_verifies_clean(indexed):
    store, _spec, _index = indexed
    assert store.verify() == []


def test_a_deleted_record_is_named_by_verify(indexed):
    store, spec, index = indexed
    (Path(store.url) / RECORD).unlink()
    problems = store.verify()
    assert [(p.path, p.severity) for p in problems] == [(RECORD, "error")], problems
    assert f"{RECORD} is missing" in problems[0].message
    assert index in problems[0].message  # what it left behind, named
    # what the attack saw: a read-only open refuses (it would have to re-index)
    with pytest.raises(MemstoreError):
        ShardSource(spec, name="shards", store=open_store(store.url, mode="r"), progress=False)
    assert _errors(open_store(store.url, mode="r")) == problems  # verify is read-only


def test_gc_keeps_the_index_of_a_missing_record_unless_asked(indexed):
    store, _spec, index = indexed
    (Path(store.url) / RECORD).unlink()
    before = store.verify()
    assert store.gc(keep=10, grace_seconds=0) == []  # evidence: restoring the record works
    assert (Path(store.url) / index).is_dir() and store.verify() == before
    assert store.gc(keep=10, grace_seconds=3600, remove_orphans=True) == []  # fresh: kept
    assert store.gc(keep=10, grace_seconds=0, remove_orphans=True) == [index]
    assert store.verify() == []


def test_reindexing_repairs_a_missing_record(indexed):
    store, spec, index = indexed
    record = (Path(store.url) / RECORD).read_bytes()
    (Path(store.url) / RECORD).unlink()
    again = ShardSource(spec, name="shards", store=store, progress=False)
    assert again.indexed_shards == (0, 1)  # nothing to reuse: every shard scanned again
    problems = store.verify()
    assert [(p.path, p.severity) for p in problems] == [(index, "debris")], problems
    assert store.gc(keep=10, grace_seconds=0) == [index]
    assert store.verify() == []
    assert (Path(store.url) / RECORD).read_bytes() != record  # a new index prefix


def test_removing_the_whole_source_folder_is_no_damage(indexed):
    store, spec, _index = indexed
    shutil.rmtree(Path(store.url) / "sources" / "shards")
    assert store.verify() == [] and store.sources() == []
    assert store.gc(keep=10, grace_seconds=0) == []


def test_cli_verify_names_a_deleted_record(indexed, capsys):
    store, _spec, index = indexed
    (Path(store.url) / RECORD).unlink()
    code = main(["verify", store.url])
    out, err = capsys.readouterr()
    assert code == 1 and err == ""
    assert f"ERROR: {RECORD}: " in out and index in out
    assert out.splitlines()[-1] == "DAMAGED: 1 problem(s)"


def test_the_gc_command_removes_orphans_only_when_asked(indexed, capsys):
    store, _spec, index = indexed
    (Path(store.url) / RECORD).unlink()
    assert main(["gc", store.url, "--keep", "10", "--grace", "0"]) == 0
    assert "0 path(s) removed" in capsys.readouterr().out
    assert (Path(store.url) / index).is_dir()
    assert main(["gc", store.url, "--keep", "10", "--grace", "0", "--remove-orphans"]) == 0
    assert f"removed {index}" in capsys.readouterr().out
    assert not (Path(store.url) / index).exists() and store.verify() == []

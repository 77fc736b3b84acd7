"""Everything a commit says is checked; damage is named; nothing outside the root is touched
(issue 8, items 5, 6, 7, 10 and 12)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore import CorruptStoreError, MemstoreError, open_store
from memstore.cli import main
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import make_sources, run_stream

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "format1_store"


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def sources():
    return make_sources()


@pytest.fixture
def store(tmp_path, sources):
    """Buffer 'b' (commits 0, 1, 2), 'p' (a ParametricBuffer, 1 commit), source fingerprints."""
    s = open_store(tmp_path / "m.zarr")
    for steps in (1, 2, 3):
        buf = run_stream("class", steps, sources)  # a fresh stream each time: on top of the latest
        s.save("b", buf, message=f"steps {steps}", sources=sources, overwrite=steps > 1)
    s.save("p", run_stream("herding-class", 2, sources))
    return s


def _path(store, name: str, seq: int) -> Path:
    return Path(store.url) / "buffers" / name / "commits" / f"{seq:010d}.json"


def _read(store, name, seq) -> dict:
    return json.loads(_path(store, name, seq).read_text())


def _canonical_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return "blake2b:" + hashlib.blake2b(text, digest_size=16).hexdigest()


def _write(store, name, seq, manifest: dict, *, rechecksum: bool = False) -> str:
    """Replace a manifest (with a recomputed, valid checksum if ``rechecksum``)."""
    if rechecksum:
        manifest = dict(manifest, checksum=_canonical_checksum(manifest))
    _path(store, name, seq).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return f"buffers/{name}/commits/{seq:010d}.json"


def _errors(store):
    return [p for p in store.verify() if p.severity == "error"]


def _tree(root) -> dict[str, bytes]:
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def old_store(tmp_path):
    """A copy of the format-1 fixture store (no manifest checksums)."""
    root = tmp_path / "old.zarr"
    shutil.copytree(FIXTURE, root)
    return root


# -- 5. every byte of a manifest is checked ------------------------------------------------------
FIELD_EDITS = {
    "num_updates": lambda m: m.update(num_updates=m["num_updates"] + 1),
    "params.seed": lambda m: m["params"].update(seed=m["params"]["seed"] + 1),
    "params.max_size": lambda m: m["params"].update(max_size=m["params"]["max_size"] + 1),
    "source_names": lambda m: m.update(source_names=m["source_names"][::-1]),
    "message": lambda m: m.update(message="edited"),
    "time": lambda m: m.update(time="2020-01-01T00:00:00.000+00:00"),
    "parent": lambda m: m.update(parent=None),
    "policy": lambda m: m.update(policy="ReservoirSamplingBuffer"),
    "sources": lambda m: m["sources"]["a"].update(fingerprint=None),
    "groups.max_sizes": lambda m: m["groups"].update(max_sizes=[1] * len(m["groups"]["keys"])),
    "sizes": lambda m: m["sizes"].update(rows=m["sizes"]["rows"] + 1),
    "buffer": lambda m: m.update(buffer="other"),
    "checksum removed": lambda m: m.pop("checksum"),
    "format 1, checksum removed": lambda m: (m.pop("checksum"), m.update(memstore_format=1)),
    "checksum changed": lambda m: m.update(checksum="blake2b:" + "0" * 32),
}


@pytest.mark.parametrize("edit", sorted(FIELD_EDITS))
def test_any_manifest_edit_is_refused_everywhere(store, edit):
    manifest = _read(store, "b", 2)
    FIELD_EDITS[edit](manifest)
    rel = _write(store, "b", 2, manifest)
    for call in (
        lambda: store.load("b"),
        lambda: store.describe("b"),
        lambda: store.next_experience("b"),
        lambda: store.state("b"),
    ):
        with pytest.raises(CorruptStoreError, match=rel):
            call()
    assert [c.seq for c in store.log("b")] == [0, 1]  # the damaged commit is not listed
    problems = _errors(store)
    assert [p.path for p in problems] == [rel], problems
    assert store.load("b", commit=1) is not None  # older commits stay loadable


def test_strategy_edit_is_refused(store):
    manifest = _read(store, "p", 0)
    manifest["strategy"]["params"]["batch_size"] = 7
    rel = _write(store, "p", 0, manifest)
    with pytest.raises(CorruptStoreError, match=rel):
        store.load("p")
    assert [p.path for p in _errors(store)] == [rel]


def test_new_manifests_carry_format_3_and_a_checksum(store):
    manifest = _read(store, "b", 0)
    assert manifest["memstore_format"] == 3
    assert manifest["checksum"] == _canonical_checksum(manifest)
    root = json.loads((Path(store.url) / "zarr.json").read_text())
    assert root["attributes"]["memstore_format"] == 3


def test_format1_store_reads_as_is_then_upgrades_on_first_write(old_store, sources):
    before = _tree(old_store)
    ro = open_store(old_store, mode="r")
    states = {n: ro.load(n).state_dict() for n in ro.buffers()}
    assert ro.verify() == []
    assert _tree(old_store) == before  # reading changes nothing

    rw = open_store(old_store)
    root = json.loads((old_store / "zarr.json").read_text())["attributes"]
    assert root["memstore_format"] == 3
    assert root["legacy_commits"] == {n: 2 for n in states}
    for name, state in states.items():
        assert_state_equal(rw.load(name).state_dict(), state)
    commit = rw.save("classes", rw.load("classes"), message="after upgrade")
    assert commit.seq == 3
    assert rw.verify() == []
    new = _read(rw, "classes", 3)
    assert new["memstore_format"] == 3 and "checksum" in new

    # A manifest above the newest legacy seq claiming format 1 (no checksum) is damage.
    new.pop("checksum")
    new["memstore_format"] = 1
    rel = _write(rw, "classes", 3, new)
    with pytest.raises(CorruptStoreError, match=rel):
        open_store(old_store, mode="r").load("classes")
    # A legacy manifest edited is still read as legacy, but checked as load checks it.
    assert open_store(old_store, mode="r").load("classes", commit=2) is not None


def test_format2_root_upgraded_from_1_keeps_its_legacy_commits_on_the_upgrade_to_3(old_store):
    """2 -> 3 records nothing: recomputing the legacy seqs would take the newest commit,
    which carries a checksum, and then accept a checksum-less manifest in its place."""
    rw = open_store(old_store)
    rw.save("classes", rw.load("classes"), message="after upgrade")
    rel = _write(
        rw, "classes", 3, dict(_read(rw, "classes", 3), memstore_format=2), rechecksum=True
    )
    meta = json.loads((old_store / "zarr.json").read_text())
    meta["attributes"]["memstore_format"] = 2  # what format-2 code wrote on its upgrade
    (old_store / "zarr.json").write_text(json.dumps(meta))
    legacy = meta["attributes"]["legacy_commits"]
    assert legacy["classes"] == 2

    open_store(old_store)  # 2 -> 3
    root = json.loads((old_store / "zarr.json").read_text())["attributes"]
    assert root == {"memstore_format": 3, "legacy_commits": legacy}
    stripped = _read(rw, "classes", 3)
    stripped.pop("checksum")
    _write(rw, "classes", 3, dict(stripped, memstore_format=1))
    with pytest.raises(CorruptStoreError, match=rel):
        open_store(old_store, mode="r").load("classes")


# -- 6. verify runs every check load runs, on every commit -----------------------------------------
def test_verify_runs_load_checks_on_every_commit(old_store):
    """A legacy (checksum-less) manifest whose params the buffer refuses: load and verify
    both refuse it, on an old commit too."""
    path = old_store / "buffers" / "classes" / "commits" / "0000000000.json"
    manifest = json.loads(path.read_text())
    manifest["params"]["max_size"] = 0
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    store = open_store(old_store, mode="r")
    rel = "buffers/classes/commits/0000000000.json"
    with pytest.raises(CorruptStoreError, match=rel):
        store.load("classes", commit=0)
    problems = [p for p in store.verify() if p.severity == "error"]
    assert [p.path for p in problems] == [rel], problems
    with pytest.raises(CorruptStoreError, match=rel):
        store.describe("classes", commit=0)


def test_verify_refuses_inconsistent_group_sizes_on_an_old_commit(old_store):
    path = old_store / "buffers" / "experience" / "commits" / "0000000001.json"
    manifest = json.loads(path.read_text())
    manifest["groups"]["max_sizes"] = [1] * len(manifest["groups"]["keys"])
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    store = open_store(old_store, mode="r")
    rel = "buffers/experience/commits/0000000001.json"
    refused = True
    try:
        store.load("experience", commit=1)
        refused = False
    except CorruptStoreError as err:
        assert rel in str(err)
    problems = [p.path for p in store.verify() if p.severity == "error"]
    assert (rel in problems) == refused


# -- 7. every damage is a CorruptStoreError naming the file ---------------------------------------
STRUCTURE_EDITS = {
    "renamed num_updates": lambda m: m.update(num_update=m.pop("num_updates")),
    "renamed arrays": lambda m: m.update(array=m.pop("arrays")),
    "renamed groups.keys": lambda m: m["groups"].update(key=m["groups"].pop("keys")),
    "renamed array spec field": lambda m: m["arrays"]["ids"].update(
        sum=m["arrays"]["ids"].pop("checksum")
    ),
    "arrays not a dict of dicts": lambda m: m["arrays"].update(ids=3),
    "generator array missing": lambda m: m["arrays"].pop("generator_state"),
    "groups a list": lambda m: m.update(groups=[1, 2]),
    "group keys strings": lambda m: m["groups"].update(keys=["x"] * len(m["groups"]["keys"])),
    "group lists of other lengths": lambda m: m["groups"].update(sizes=[1]),
    "params a str": lambda m: m.update(params="x"),
    "num_updates a str": lambda m: m.update(num_updates="2"),
    "num_updates negative": lambda m: m.update(num_updates=-1),
    "source_names a str": lambda m: m.update(source_names="ab"),
    "sources a list": lambda m: m.update(sources=[1]),
    "source record not a dict": lambda m: m["sources"].update(a=3),
    "sizes a list": lambda m: m.update(sizes=[]),
    "strategy a str": lambda m: m.update(strategy="x"),
    "state_format a str": lambda m: m.update(state_format="1"),
    "id not the snapshot's": lambda m: m.update(id="00000000"),
    "time an int": lambda m: m.update(time=3),
    "message a list": lambda m: m.update(message=[]),
    "shape a str": lambda m: m["arrays"]["ids"].update(shape="39"),
    "not an object": lambda m: None,
}


@pytest.mark.parametrize("edit", sorted(STRUCTURE_EDITS))
def test_structural_damage_is_named_even_with_a_valid_checksum(store, edit, capsys):
    manifest = _read(store, "b", 2)
    if edit == "not an object":
        _path(store, "b", 2).write_text("[1, 2]")
        rel = "buffers/b/commits/0000000002.json"
    else:
        STRUCTURE_EDITS[edit](manifest)
        rel = _write(store, "b", 2, manifest, rechecksum=True)
    for call in (lambda: store.load("b"), lambda: store.describe("b")):
        with pytest.raises(CorruptStoreError, match=rel):
            call()
    problems = _errors(store)
    assert [p.path for p in problems] == [rel], problems
    assert main(["verify", store.url]) == 1
    out, err = capsys.readouterr()
    assert rel in out and "Traceback" not in out + err
    assert main(["inspect", store.url, "b"]) == 2
    out, err = capsys.readouterr()
    assert rel in err and out == ""


@pytest.mark.parametrize("edit", sorted(STRUCTURE_EDITS))
def test_structural_damage_of_a_legacy_manifest_is_named(old_store, edit):
    path = old_store / "buffers" / "classes" / "commits" / "0000000002.json"
    rel = "buffers/classes/commits/0000000002.json"
    if edit == "not an object":
        path.write_text("[1, 2]")
    else:
        manifest = json.loads(path.read_text())
        STRUCTURE_EDITS[edit](manifest)
        path.write_text(json.dumps(manifest))
    store = open_store(old_store, mode="r")
    with pytest.raises(CorruptStoreError, match=rel):
        store.load("classes")
    assert rel in [p.path for p in store.verify() if p.severity == "error"]


def test_damaged_root_attributes_are_named(tmp_path):
    s = open_store(tmp_path / "m.zarr")
    meta = json.loads((tmp_path / "m.zarr" / "zarr.json").read_text())
    meta["attributes"]["legacy_commits"] = {"b": "x"}
    (tmp_path / "m.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match="zarr.json"):
        open_store(s.url, mode="r")
    (tmp_path / "m.zarr" / "zarr.json").write_text("[]")
    with pytest.raises(CorruptStoreError, match="zarr.json"):
        open_store(s.url, mode="r")


def test_damaged_source_record_is_named_by_verify(store):
    store.write_source_index("src", {"n": 3}, {"offsets": np.arange(3)})
    record = Path(store.url) / "sources" / "src" / "record.json"
    for damage in ('{"_index": {"prefix": "sources/src/index-00000000"}}', '{"_index": 3}', "[]"):
        record.write_text(damage)
        with pytest.raises(CorruptStoreError, match="sources/src/record.json"):
            store.read_source_index("src")
        problems = _errors(store)
        assert [p.path for p in problems] == ["sources/src"], problems


def test_a_recorded_dtype_other_than_the_arrays_is_named(store):
    manifest = _read(store, "b", 2)
    manifest["arrays"]["ids"]["dtype"] = "int32"
    _write(store, "b", 2, manifest, rechecksum=True)
    with pytest.raises(CorruptStoreError, match="buffers/b/snapshots/0000000002-.*/ids"):
        store.load("b")
    assert [p.path.split("/")[:3] for p in _errors(store)] == [["buffers", "b", "snapshots"]]


# -- 10. named errors up front, nothing changed -------------------------------------------------
def _calls(sources):
    arr = sources["a"]
    return {
        "save(sources=42)": (lambda s: s.save("b", s.load("b"), sources=42), TypeError),
        "save(sources=['a'])": (lambda s: s.save("b", s.load("b"), sources=["a"]), TypeError),
        "save(sources={1: arr})": (lambda s: s.save("b", s.load("b"), sources={1: arr}), TypeError),
        "save(sources typo)": (
            lambda s: s.save("b", s.load("b"), sources={"aa": arr, "b": arr}),
            ValueError,
        ),
        "gc(grace_seconds='x')": (lambda s: s.gc(keep=1, grace_seconds="x"), TypeError),
        "gc(grace_seconds=-1)": (lambda s: s.gc(keep=1, grace_seconds=-1), ValueError),
        "gc(grace_seconds=nan)": (lambda s: s.gc(keep=1, grace_seconds=float("nan")), ValueError),
        "gc(grace_seconds=True)": (lambda s: s.gc(keep=1, grace_seconds=True), TypeError),
        "load(allow_source_mismatch='no')": (
            lambda s: s.load("b", sources={"a": arr}, allow_source_mismatch="no"),
            TypeError,
        ),
        "load(sources=[arr])": (lambda s: s.load("b", sources=[arr]), TypeError),
        "load(sources='arr')": (lambda s: s.load("b", sources="arr"), TypeError),
        "load(selection_strategy=3)": (lambda s: s.load("p", selection_strategy=3), TypeError),
        "next_experience(5)": (lambda s: s.next_experience(5), TypeError),
        "next_experience('../x')": (lambda s: s.next_experience("../x"), ValueError),
        "zarr.json in": (lambda s: s.next_experience("zarr.json"), ValueError),
        "save zarr.json": (lambda s: s.save("zarr.json", s.load("b")), ValueError),
        "load zarr.json": (lambda s: s.load("zarr.json"), ValueError),
        "log zarr.json": (lambda s: s.log("zarr.json"), ValueError),
        "describe zarr.json": (lambda s: s.describe("zarr.json"), ValueError),
        "delete zarr.json": (lambda s: s.delete_buffer("zarr.json"), ValueError),
        "state zarr.json": (lambda s: s.state("zarr.json"), ValueError),
        "index zarr.json": (lambda s: s.write_source_index("zarr.json", {}, {}), ValueError),
        "read index zarr.json": (lambda s: s.read_source_index("zarr.json"), ValueError),
        "open_feature_cache(3)": (lambda s: s.open_feature_cache(3), TypeError),
        "open_feature_cache('../x')": (lambda s: s.open_feature_cache("../x"), ValueError),
        "feature_cache(key='../x')": (lambda s: s.feature_cache("../x", 4, 4), ValueError),
        "write_source_index(record=3)": (lambda s: s.write_source_index("s", 3, {}), TypeError),
        "write_source_index(arrays=3)": (lambda s: s.write_source_index("s", {}, 3), TypeError),
        "write_source_index(_index)": (
            lambda s: s.write_source_index("s", {"_index": 1}, {}),
            ValueError,
        ),
    }


@pytest.mark.parametrize("label", sorted(_calls(make_sources())))
def test_wrong_store_call_is_named_and_changes_nothing(store, sources, label):
    call, kind = _calls(sources)[label]
    before = _tree(store.url)
    with pytest.raises(kind) as info:
        call(store)
    assert isinstance(info.value, MemstoreError), info.value
    assert _tree(store.url) == before
    assert "zarr.json" not in store


def test_save_sources_typo_names_the_buffers_sources(store, sources):
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        store.save("b", store.load("b"), sources={"typo": sources["a"], "b": sources["b"]})
    buf = run_stream("class", 1, sources)  # holds source 'a' only
    assert buf.state_dict()["source_names"] == ["a"]
    store.save("one", buf, sources=sources)  # every dataset of the stream: fine
    with pytest.raises(ValueError, match=r"\['a'\]"):
        store.save("one", buf, sources={"b": sources["b"]})


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("ftp://127.0.0.1:1/x", memstore.errors.StoreAccessError),
        ("zip://x::/nonexistent/archive.zip", memstore.errors.StoreAccessError),
        ("file://", ValueError),
        ("", TypeError),
    ],
)
def test_bad_urls_are_named_and_create_nothing(tmp_path, monkeypatch, url, kind):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(kind) as info:
        open_store(url)
    assert isinstance(info.value, MemstoreError)
    assert os.listdir(tmp_path) == []


def test_w_minus_on_an_existing_store_is_named(store):
    before = _tree(store.url)
    with pytest.raises(memstore.errors.StoreExistsError):
        open_store(store.url, mode="w-")
    assert _tree(store.url) == before


def test_storage_options_of_a_wrong_type(tmp_path):
    with pytest.raises(TypeError) as info:
        open_store(tmp_path / "m.zarr", storage_options=3)
    assert isinstance(info.value, MemstoreError)
    assert not (tmp_path / "m.zarr").exists()


# -- 12. never touch anything outside the store root ---------------------------------------------
@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "keep.txt").write_text("outside the root")
    return folder


def test_tampered_index_prefix_never_deletes_outside(store, outside):
    store.write_source_index("src", {"n": 3}, {"offsets": np.arange(3)})
    record = Path(store.url) / "sources" / "src" / "record.json"
    data = json.loads(record.read_text())
    rel = os.path.relpath(outside, Path(store.url)).replace(os.sep, "/")
    for prefix in (rel, "sources/src/../../../outside", "sources/other/index-00000000"):
        data["_index"]["prefix"] = prefix
        record.write_text(json.dumps(data))
        with pytest.raises(CorruptStoreError, match="sources/src/record.json"):
            store.read_source_index("src")
        assert "sources/src" in [p.path for p in _errors(store)]
        store.write_source_index("src", {"n": 3}, {"offsets": np.arange(3)})  # repairs
        assert (outside / "keep.txt").read_text() == "outside the root"
        assert store.read_source_index("src")[0] == {"n": 3}
        data = json.loads(record.read_text())


def test_writes_through_a_symlink_inside_the_root_are_refused(store, sources, outside):
    snaps = Path(store.url) / "buffers" / "b" / "snapshots"
    moved = outside / "snapshots"
    shutil.move(snaps, moved)
    snaps.symlink_to(moved, target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(memstore.errors.UnsafePathError):
        store.save("b", run_stream("class", 4, sources), overwrite=True)
    assert _tree(outside) == before
    assert [c.seq for c in store.log("b")] == [0, 1, 2]
    commits = Path(store.url) / "buffers" / "b" / "commits"
    shutil.move(commits, outside / "commits")
    commits.symlink_to(outside / "commits", target_is_directory=True)
    with pytest.raises(memstore.errors.UnsafePathError):
        store.files.write_file("buffers/b/commits/x.json", b"{}")
    with pytest.raises(memstore.errors.UnsafePathError):
        store.files.delete("buffers/b/commits/0000000000.json")
    assert (outside / "commits" / "0000000000.json").exists()


def test_reads_never_follow_a_symlink_out_of_the_root(store, outside):
    link = Path(store.url) / "sources"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(memstore.errors.UnsafePathError):
        store.files.read("sources/keep.txt")
    with pytest.raises(memstore.errors.UnsafePathError):
        store.files.read("../outside/keep.txt")


def test_gc_reports_only_what_it_removed(store, outside):
    target = outside / "0000000009-deadbeef"
    target.mkdir()
    (target / "x").write_text("data")
    link = Path(store.url) / "buffers" / "b" / "snapshots" / "0000000009-deadbeef"
    link.symlink_to(target, target_is_directory=True)
    removed = store.gc(keep=10, grace_seconds=0)
    for path in removed:
        assert not os.path.lexists(Path(store.url) / path), path
    assert (target / "x").read_text() == "data"


def test_leftover_index_folder_is_debris_and_collected(store):
    store.write_source_index("src", {"n": 3}, {"offsets": np.arange(3)})
    leftover = Path(store.url) / "sources" / "src" / "index-0badc0de"
    shutil.copytree(next((Path(store.url) / "sources" / "src").glob("index-*")), leftover)
    debris = [p.path for p in store.verify() if p.severity == "debris"]
    assert debris == ["sources/src/index-0badc0de"]
    assert store.gc(keep=10, grace_seconds=3600) == []
    assert "sources/src/index-0badc0de" in store.gc(keep=10, grace_seconds=0)
    assert not leftover.exists()
    assert store.read_source_index("src")[0] == {"n": 3}
    assert store.verify() == []


def test_feature_cache_writes_through_a_symlink_are_refused(store, outside):
    (Path(store.url) / "features").symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(memstore.errors.UnsafePathError):
        store.feature_cache("0123456789abcdef0123", 4, 2)
    assert _tree(outside) == before


@pytest.mark.parametrize(
    "args, error",
    [
        (("k1", -1, 4), ValueError),
        (("k1", 4, 0), ValueError),
        (("k1", "4", 4), TypeError),
        (("k1", 4, 4, "int8"), ValueError),
        (("k1", 4, 4, "float32", 3), TypeError),
        (("../k1", 4, 4), ValueError),
    ],
)
def test_feature_cache_arguments_are_checked_before_anything_is_written(tmp_path, args, error):
    store = open_store(tmp_path / "m.zarr")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(error) as info:
        store.feature_cache(*args)
    assert isinstance(info.value, memstore.MemstoreError)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

"""Stores written by earlier memstores (format 1; format 2 with run states sharing tensors)
open and load to exactly what they held, and upgrade to the current format on a write."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import memstore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "format1_expected.json").read_text())
NAMES = sorted(k for k in EXPECTED if not k.startswith("_"))


def _state_digest(state):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mk", FIXTURES / "make_format1_store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.state_digest(state)


@pytest.fixture(scope="module")
def old_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixture") / "format1_store"
    shutil.copytree(FIXTURES / "format1_store", root)
    return memstore.open_store(root.as_posix(), mode="r")


def test_fixture_holds_every_buffer(old_store):
    assert sorted(old_store.buffers()) == NAMES
    assert old_store.verify() == []


@pytest.mark.parametrize("name", NAMES)
def test_old_buffer_loads_identically(old_store, name):
    want = EXPECTED[name]
    buf = old_store.load(name)
    assert _state_digest(buf.state_dict()) == want["state"]
    assert [[c.seq, c.message, c.sizes] for c in old_store.log(name)] == want["commits"]
    assert old_store.describe(name)["classes"] == want["describe_classes"]
    assert old_store.describe(name)["payload"] == {}  # written before payloads existed
    assert old_store.next_experience(name) == 3


# -- format 2: a store whose run states share tensors (run_state.refs) ---------------------------
def _fixture2(tmp_path) -> Path:
    root = tmp_path / "format2_store"
    shutil.copytree(FIXTURES / "format2_store", root)
    return root


def _run_state(k: int) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mk2", FIXTURES / "make_format2_store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.run_state(k)


def _same_run_state(got: dict, want: dict) -> None:
    assert got["epoch"] == want["epoch"] and list(got["model"]) == list(want["model"])
    for key, tensor in want["model"].items():
        assert got["model"][key].dtype == tensor.dtype and torch.equal(got["model"][key], tensor)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _attributes(root: Path) -> dict:
    return json.loads((root / "zarr.json").read_text())["attributes"]


def _commit_file(root: Path, seq: int) -> Path:
    return root / "buffers" / "replay" / "commits" / f"{seq:010d}.json"


def _snapshots(root: Path) -> list[str]:
    snaps = root / "buffers" / "replay" / "snapshots"
    return sorted(p.name for p in snaps.iterdir() if p.is_dir())


def test_format2_store_reads_as_is(tmp_path):
    root = _fixture2(tmp_path)
    before = _tree(root)
    store = memstore.open_store(root.as_posix(), mode="r")
    assert [c.seq for c in store.log("replay")] == [0, 1, 2]
    assert store.verify() == []
    for k in range(3):
        _same_run_state(store.run_state("replay", commit=k), _run_state(k))
    assert len(store.load("replay")) == 8
    assert _tree(root) == before  # read-only: not upgraded, nothing written


def test_format2_store_upgrades_to_3_on_a_writable_open_and_gc_keeps_refs(tmp_path):
    root = _fixture2(tmp_path)
    before = _tree(root)
    first = _snapshots(root)[0]
    store = memstore.open_store(root.as_posix())
    assert _attributes(root) == {"memstore_format": 3}  # 2 -> 3 records nothing else
    changed = sorted(k for k, v in _tree(root).items() if before.get(k) != v)
    assert changed == ["zarr.json"]  # older manifests keep saying 2 and stay valid
    assert json.loads(_commit_file(root, 2).read_text())["memstore_format"] == 2
    assert store.verify() == []

    store.save("replay", store.load("replay"), run_state=_run_state(3))
    new = json.loads(_commit_file(root, 3).read_text())
    assert new["memstore_format"] == 3
    assert new["run_state"]["refs"] == [f"snapshots/{first}"]  # the frozen tensor of commit 0
    store.gc(keep=1, grace_seconds=0)
    assert _snapshots(root) == [first, _snapshots(root)[-1]]  # 0 kept: commit 3 reads it
    assert json.loads(_commit_file(root, 0).read_text())["memstore_format"] == 3  # tombstone
    assert [c.seq for c in store.log("replay")] == [3]
    _same_run_state(store.run_state("replay"), _run_state(3))
    assert memstore.open_store(root.as_posix(), mode="r").verify() == []


def test_a_root_of_format_4_is_refused_naming_it(tmp_path):
    root = _fixture2(tmp_path)
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"]["memstore_format"] = 4
    (root / "zarr.json").write_text(json.dumps(meta))
    before = _tree(root)
    for mode in ("r", "a"):
        with pytest.raises(memstore.FormatVersionError, match="format 4.*Upgrade memstore"):
            memstore.open_store(root.as_posix(), mode=mode)
    assert _tree(root) == before


def test_a_manifest_newer_than_its_root_is_damage(tmp_path):
    """A format-3 manifest under a root saying 2: the root was set back, so a format-2
    memstore could open the store and gc away what the commit's run state reads."""
    root = _fixture2(tmp_path)
    store = memstore.open_store(root.as_posix())
    store.save("replay", store.load("replay"), run_state=_run_state(3))
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"]["memstore_format"] = 2
    (root / "zarr.json").write_text(json.dumps(meta))
    old = memstore.open_store(root.as_posix(), mode="r")
    with pytest.raises(memstore.CorruptStoreError, match=r"0000000003\.json.*format 3.*root"):
        old.load("replay")
    assert len(old.load("replay", commit=2)) == 8
    problems = [(p.severity, p.path) for p in old.verify()]
    assert ("error", "buffers/replay/commits/0000000003.json") in problems


def test_a_reader_opened_before_the_upgrade_reads_the_new_commits(tmp_path):
    root = _fixture2(tmp_path)
    reader = memstore.open_store(root.as_posix(), mode="r")  # sees format 2
    writer = memstore.open_store(root.as_posix())  # upgrades to 3
    writer.save("replay", writer.load("replay"), run_state=_run_state(3))
    assert [c.seq for c in reader.log("replay")] == [0, 1, 2, 3]
    _same_run_state(reader.run_state("replay"), _run_state(3))

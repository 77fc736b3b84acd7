"""A store written by an earlier memstore (format 1) opens and loads to exactly what it held."""

import json
import shutil
from pathlib import Path

import pytest

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

"""Run state in a commit: model + Adam resume, the generators, bad input, sharing of unchanged
tensors, gc of referenced snapshots, damage, and no pickle on a local directory; the suite's
:class:`RunStateTests` (every leaf type, sharing, gc, damage) on fsspec's memory filesystem
(local and S3 run it within StoreTests)."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import random
import uuid

import numpy as np
import pytest
import torch

import memstore
from memstore import CorruptStoreError, InvalidParameterTypeError, open_store
from memstore.testing.reference import assert_run_state_equal
from memstore.testing.store_child import run_stream
from memstore.testing.store_suite import RunStateTests, flip_byte, fs_root

NAME = "replay"


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
    )


def train_steps(model, opt, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen)
        y = torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "m.zarr")


@pytest.fixture
def buf():
    return run_stream("class", 2)


def test_model_and_adam_round_trip_resume_exactly(store, buf):
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    train_steps(model, opt, 3, seed=1)
    store.save(NAME, buf, run_state={"model": model.state_dict(), "optimizer": opt.state_dict()})
    train_steps(model, opt, 2, seed=2)  # the uninterrupted run goes on

    state = store.run_state(NAME)
    assert list(state["optimizer"]["state"]) == [0, 1, 2, 3, 4, 5]  # int keys survive
    resumed = small_model()
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=0.01)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["optimizer"])
    train_steps(resumed, resumed_opt, 2, seed=2)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert_run_state_equal(opt.state_dict()["state"], resumed_opt.state_dict()["state"])


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        ({"model": {"x": {1, 2}}}, "run_state['model']['x']", "builtins.set"),
        ({"a": [0, object()]}, "run_state['a'][1]", "builtins.object"),
        ({"a": {1.5: 0}}, "run_state['a']", "key 1.5"),
        ({"a": {True: 0}}, "run_state['a']", "key True"),
        ({"a": np.array(["x"])}, "run_state['a']", "dtype <U1"),
        ({"a": torch.zeros(2, dtype=torch.complex64)}, "run_state['a']", "complex64"),
        ({"a": torch.zeros(2).to_sparse()}, "run_state['a']", "sparse"),
    ],
)
def test_bad_run_state_names_the_path_and_writes_nothing(store, buf, value, where, what):
    with pytest.raises(TypeError, match=r"Nothing was written") as err:
        store.save(NAME, buf, run_state=value)
    assert isinstance(err.value, InvalidParameterTypeError)
    assert where in str(err.value) and what in str(err.value)
    assert NAME not in store
    assert not os.path.exists(os.path.join(store.files.root, "buffers", NAME, "snapshots"))


def test_self_containing_and_non_mapping_run_state_are_refused(store, buf):
    loop: dict = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(TypeError, match=r"contains itself at run_state\['a'\]\[0\]"):
        store.save(NAME, buf, run_state=loop)
    with pytest.raises(TypeError, match="'run_state' parameter of Store.save"):
        store.save(NAME, buf, run_state=[1, 2])
    assert NAME not in store


def test_commit_without_run_state_gives_empty_dict(store, buf):
    store.save(NAME, buf)
    assert store.run_state(NAME) == {}
    store.save(NAME, buf, run_state={})
    assert store.run_state(NAME) == {} and store.run_state(NAME, commit=0) == {}
    assert store.describe(NAME)["run_state"]["leaves"] == 0


def test_format1_fixture_has_no_run_state():
    fixture = pathlib.Path(__file__).parent / "fixtures" / "format1_store"
    store = open_store(fixture, mode="r")
    for name in store.buffers():
        assert store.run_state(name) == {}


def draws() -> tuple:
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.standard_normal()],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )


def test_rng_state_restores_python_numpy_torch_draws(store, buf):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached gaussian in both
    state = memstore.rng_state()
    store.save(NAME, buf, run_state={"rng": state})
    first = draws()
    memstore.set_rng_state(state)
    assert draws() == first
    memstore.set_rng_state(store.run_state(NAME)["rng"])  # through the store
    assert draws() == first
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert draws() != first


def test_set_rng_state_checks_before_touching_anything():
    state = memstore.rng_state()
    before = random.getstate()
    bad = {**state, "torch": state["torch"].float()}
    with pytest.raises(TypeError, match=r"state\['torch'\]"):
        memstore.set_rng_state(bad)
    with pytest.raises(ValueError, match="lacks"):
        memstore.set_rng_state({"python": state["python"]})
    short = {**state, "numpy": {**state["numpy"], "key": state["numpy"]["key"][:10]}}
    with pytest.raises(ValueError, match="624 words"):
        memstore.set_rng_state(short)
    assert random.getstate() == before


def _files(store, seq: int) -> str:
    [snap] = [
        n
        for n in os.listdir(os.path.join(store.files.root, "buffers", NAME, "snapshots"))
        if n.startswith(f"{seq:010d}-")
    ]
    return os.path.join(store.files.root, "buffers", NAME, "snapshots", snap, "run_state")


def frozen(head_value: float) -> dict:
    gen = torch.Generator().manual_seed(0)
    backbone = {f"layer{i}.weight": torch.randn(64, 64, generator=gen) for i in range(4)}
    return {
        "model": {**backbone, "head": torch.full((10, 64), head_value)},
        "step": int(head_value),
    }


def test_unchanged_tensors_are_not_written_again(store, buf):
    store.save(NAME, buf, run_state=frozen(0.0))
    store.save(NAME, buf, run_state=frozen(1.0))
    first, second = (store.describe(NAME, commit=s)["run_state"] for s in (0, 1))
    head = 10 * 64 * 4
    assert first["bytes"] == second["bytes"] == 4 * 64 * 64 * 4 + head
    assert first["written"] > first["bytes"] and first["refs"] == []
    assert head <= second["written"] < head + 1024  # the head and a safetensors header
    assert second["refs"] == [f"snapshots/{0:010d}-{store.log(NAME)[0].id}"]
    assert_run_state_equal(store.run_state(NAME), frozen(1.0))
    assert_run_state_equal(store.run_state(NAME, commit=0), frozen(0.0))
    # The tensors file is a plain safetensors file: header, then the head's bytes.
    with open(os.path.join(_files(store, 1), "tensors.safetensors"), "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert header["t0"] == {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, head]}
    assert np.frombuffer(raw[8 + n :], np.float32).tolist() == [1.0] * 640


def test_gc_keeps_snapshots_whose_tensors_kept_commits_read(store, buf):
    for step in range(4):  # commit 0 writes the backbone, 1..3 only their heads
        store.save(NAME, buf, run_state=frozen(float(step)))
    removed = store.gc(keep=2, grace_seconds=0)
    snaps = os.path.join(store.files.root, "buffers", NAME, "snapshots")
    left = sorted(n.split("-")[0] for n in os.listdir(snaps) if n != "zarr.json")
    assert left == [f"{s:010d}" for s in (0, 2, 3)]  # 0 holds the backbone commits 2, 3 read
    assert any("/snapshots/0000000001-" in p for p in removed)
    assert store.verify() == []
    assert_run_state_equal(store.run_state(NAME), frozen(3.0))
    with pytest.raises(memstore.BufferNotFoundError):
        store.run_state(NAME, commit=0)  # pruned: its snapshot stays only for its tensors
    other = {"model": {"w": torch.ones(3)}}  # the backbone changes: nothing reads 0 any more
    store.save(NAME, buf, run_state=other)
    store.save(NAME, buf, run_state=other)
    store.gc(keep=2, grace_seconds=0)
    left = sorted(n.split("-")[0] for n in os.listdir(snaps) if n != "zarr.json")
    assert left == [f"{s:010d}" for s in (4, 5)]
    assert store.verify() == []
    assert_run_state_equal(store.run_state(NAME), other)


def test_damaged_tensor_is_named_by_run_state_and_verify(store, buf):
    for _ in range(2):
        store.save(NAME, buf, run_state={"model": {"w": torch.ones(3)}})
    store.save(NAME, buf, run_state=frozen(0.0))
    store.save(NAME, buf, run_state=frozen(1.0))
    path = os.path.join(_files(store, 2), "tensors.safetensors")
    flip_byte(
        store.url, None, os.path.relpath(path, store.url), -10 * 64 * 4 - 5
    )  # in layer3, the one before the head
    for seq in (2, 3):  # commit 3 reads that tensor from commit 2's snapshot
        with pytest.raises(CorruptStoreError, match=r"run_state\['model'\]\['layer3.weight'\]"):
            store.run_state(NAME, commit=seq)
    assert len(store.load(NAME).buffer) == len(buf)  # the memory alone still loads
    problems = store.verify()
    assert {p.path.split("/snapshots/")[1][:10] for p in problems} == {"0000000002", "0000000003"}
    assert all(p.path.endswith("/run_state") and "layer3.weight" in p.message for p in problems)
    # A commit whose run state is damaged is not a kept one: the newest is damaged.
    with pytest.raises(CorruptStoreError, match="gc deleted nothing"):
        store.gc(keep=1, grace_seconds=0)
    assert [c.seq for c in store.log(NAME)] == [0, 1, 2, 3]


def test_missing_tensors_file_and_bad_structure_are_damage(store, buf):
    store.save(NAME, buf, run_state=frozen(0.0))
    store.save(NAME, buf, run_state=frozen(1.0))
    os.remove(os.path.join(_files(store, 0), "tensors.safetensors"))
    with pytest.raises(CorruptStoreError, match="tensors.safetensors is missing"):
        store.run_state(NAME)
    assert any("is missing" in p.message for p in store.verify())
    structure = os.path.join(_files(store, 1), "structure.json")
    with open(structure, "rb") as f:
        raw = f.read()
    with open(structure, "wb") as f:
        f.write(raw.replace(b'"format":1', b'"format":2'))
    with pytest.raises(CorruptStoreError, match="structure.json: content does not match"):
        store.run_state(NAME)
    os.remove(structure)
    with pytest.raises(CorruptStoreError, match="structure.json is missing"):
        store.run_state(NAME)


def test_store_source_never_unpickles():
    """No pickle / dill / torch.load without weights_only=True / np.load with pickles in
    memstore (the package a store's bytes are loaded by)."""
    banned_modules = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve", "joblib"}
    found = []
    root = pathlib.Path(memstore.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [where for a in node.names if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in banned_modules:
                    found.append(where)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                kw = {k.arg: k.value for k in node.keywords}
                owner = ast.unparse(node.func.value)
                if node.func.attr == "load" and owner == "torch":
                    flag = kw.get("weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        found.append(where)
                if node.func.attr == "load" and owner in ("np", "numpy"):
                    flag = kw.get("allow_pickle")
                    if not (isinstance(flag, ast.Constant) and flag.value is False):
                        found.append(where)
                if "allow_pickle" in kw and not (
                    isinstance(kw["allow_pickle"], ast.Constant)
                    and kw["allow_pickle"].value is False
                ):
                    found.append(where)
    assert found == []


class TestMemoryRunState(RunStateTests):
    """The suite's run-state tests through the fsspec file layer (ranged reads), on fsspec's
    memory filesystem (local and S3 run them as part of StoreTests)."""

    @pytest.fixture
    def store_url(self):
        url = f"memory://run-state-{uuid.uuid4().hex[:8]}"
        yield url
        fs, root = fs_root(url, None)
        if fs.exists(root):
            fs.rm(root, recursive=True)

"""Issue 12, item 5: ``export_memory`` / ``memstore export`` write a memory as a self-contained
webdataset shard set (original member bytes of shard exemplars, encoded inputs of array
exemplars, metadata), readable by a plain ``webdataset.WebDataset`` and re-openable as a
``ShardSource`` whose id ``i`` is buffer row ``i``."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds

import memstore
from memstore.cli import main
from memstore.errors import InvalidParameterError, MissingSourceError, SourceMismatchError
from memstore.sources.shards import ShardSource, write_shards
from memstore.store.export import write_export


@pytest.fixture
def memory(tmp_path):
    """A store with two commits of a class-balanced buffer over a shard and an array source."""
    rng = np.random.default_rng(0)
    x_sh = rng.standard_normal((60, 4)).astype(np.float32)
    y_sh = rng.integers(0, 4, 60)
    x_ar = rng.standard_normal((25, 4)).astype(np.float32)
    y_ar = rng.integers(4, 6, 25)
    out = write_shards(x_sh, str(tmp_path / "sh" / "train-%02d.tar"), targets=y_sh, maxcount=20)
    store = memstore.open_store(str(tmp_path / "m.zarr"))
    shards = ShardSource(out.spec, name="train", store=store, progress=False)
    arrays = memstore.ArraySource(x_ar, y_ar, task_labels=np.ones(25, dtype=np.int64))
    sources = {"train": shards, "extra": arrays}
    buf = memstore.ClassBalancedBuffer(max_size=24, seed=0)
    for e in shards.experiences(by_shards=2):
        buf.update(e)
        store.save("replay", buf, sources=sources)
    buf.update(
        memstore.Experience(
            targets=y_ar, source="extra", index=2, task_labels=arrays.targets_task_labels
        )
    )
    store.save("replay", buf, sources=sources)
    np.savez(tmp_path / "extra.npz", x=x_ar, y=y_ar, t=np.ones(25, dtype=np.int64))
    return store, shards, arrays, {"train": x_sh, "extra": x_ar}, tmp_path


def _expected_meta(ex, row, shards):
    src, i = str(ex.source[row]), int(ex.ids[row])
    return {
        "source": src,
        "id": i,
        "key": str(shards.keys[i]) if src == "train" else None,
        "target": int(ex.targets[row]),
        "task": int(ex.task_labels[row]),
        "experience": int(ex.experience[row]),
    }


def test_export_reopens_as_a_shard_source_and_reads_with_plain_webdataset(memory):
    store, shards, arrays, inputs, tmp = memory
    done = memstore.export_memory(
        store, "replay", tmp / "out", sources={"extra": arrays}, maxcount=10
    )
    ex = store.load("replay").buffer
    assert done.count == len(ex) == 24 and set(ex.source.tolist()) == {"train", "extra"}
    assert done.spec == "memory-{000000..000002}.tar" and len(done.shards) == 3
    assert done.members == ["cls", "input.npy", "memstore.json"]
    record = json.loads((tmp / "out" / "export.json").read_text())
    assert (
        record["commit"] == 2 and record["length"] == 24 and record["shard_counts"] == [10, 10, 4]
    )
    assert record["sources"]["train"]["kind"] == "shards"
    assert record["sources"]["extra"]["fingerprint"] == arrays.fingerprint()

    back = memstore.open_export(tmp / "out")
    assert len(back) == 24 and back.input_key == "input.npy"
    np.testing.assert_array_equal(back.targets, ex.targets)
    for row in range(24):
        x, y = back[row]
        src, i = str(ex.source[row]), int(ex.ids[row])
        assert torch.equal(x, torch.from_numpy(inputs[src][i])) and y == ex.targets[row]
        if src == "train":  # the original member bytes, read by offset
            assert back.get_raw([row])[0]["input.npy"] == shards.get_raw([i])[0]["input.npy"]
    plain = list(wds.WebDataset(str(tmp / "out" / done.spec), shardshuffle=False).decode())
    assert [s["__key__"] for s in plain] == [f"{r:09d}" for r in range(24)]
    assert [s["memstore.json"] for s in plain] == [_expected_meta(ex, r, shards) for r in range(24)]
    assert [s["cls"] for s in plain] == ex.targets.tolist()

    older = memstore.export_memory(store, "replay", tmp / "old", commit=0, progress=False)
    ex0 = store.load("replay", 0).buffer
    assert older.record["commit"] == 0 and older.count == len(ex0)
    np.testing.assert_array_equal(memstore.open_export(tmp / "old").targets, ex0.targets)


def test_export_loads_once_and_fingerprints_each_source_once(memory, monkeypatch):
    store, shards, arrays, inputs, tmp = memory
    calls: Counter = Counter()

    class CountedArrays(memstore.ArraySource):
        def fingerprint(self) -> str:
            calls["fingerprint extra"] += 1
            return super().fingerprint()

    shard_fingerprint = ShardSource.fingerprint

    def counted_shard_fingerprint(self):
        calls[f"fingerprint {self.name}"] += 1
        return shard_fingerprint(self)

    load = store.load

    def counted_load(*args, **kwargs):
        calls["load"] += 1
        return load(*args, **kwargs)

    extra = CountedArrays(inputs["extra"], arrays.targets, task_labels=np.ones(25, dtype=np.int64))
    monkeypatch.setattr(ShardSource, "fingerprint", counted_shard_fingerprint)
    monkeypatch.setattr(store, "load", counted_load)
    done = memstore.export_memory(store, "replay", tmp / "out", sources={"extra": extra})
    assert calls == {"load": 1, "fingerprint extra": 1, "fingerprint train": 1}
    assert done.record["sources"] == {
        "extra": {"count": 8, "fingerprint": arrays.fingerprint(), "kind": "data"},
        "train": {"count": 16, "fingerprint": shards.fingerprint(), "kind": "shards"},
    }


def test_store_check_sources_checks_as_load_and_returns_the_fingerprints(memory):
    store, shards, arrays, inputs, tmp = memory
    assert store.check_sources("replay", {"extra": arrays, "train": shards}) == {
        "extra": arrays.fingerprint(),
        "train": shards.fingerprint(),
    }
    changed = memstore.ArraySource(inputs["extra"], (arrays.targets + 1) % 6)
    with pytest.raises(SourceMismatchError, match="'extra' differs"):
        store.check_sources("replay", {"extra": changed}, commit=2)
    with pytest.raises(SourceMismatchError, match="'extra' differs"):
        store.load("replay", 2, sources={"extra": changed})
    # commit 0 holds no exemplar of 'extra', so records no fingerprint of it (load passes too)
    assert store.check_sources("replay", {"extra": changed}, 0) == {"extra": changed.fingerprint()}
    store.load("replay", 0, sources={"extra": changed})
    with pytest.raises(TypeError, match="'sources' parameter of Store.check_sources"):
        store.check_sources("replay", ["extra"])


def test_export_refuses_what_it_cannot_write(memory):
    store, shards, arrays, inputs, tmp = memory
    with pytest.raises(MissingSourceError, match=r"'extra'.*--source extra="):
        memstore.export_memory(store, "replay", tmp / "a")
    assert not (tmp / "a").exists()
    changed = memstore.ArraySource(inputs["extra"], (arrays.targets + 1) % 6)
    with pytest.raises(SourceMismatchError, match="'extra' differs"):
        memstore.export_memory(store, "replay", tmp / "b", sources={"extra": changed})
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("x")
    with pytest.raises(InvalidParameterError, match="new or empty folder"):
        memstore.export_memory(store, "replay", tmp / "full", sources={"extra": arrays})
    other = write_shards(
        inputs["extra"], str(tmp / "o" / "o-%d.tar"), targets=arrays.targets, input_ext="feat.npy"
    )
    feats = ShardSource(other.spec, name="extra", progress=False)
    ex = store.load("replay").buffer
    with pytest.raises(InvalidParameterError, match="different members"):
        write_export(ex.columns(), {"train": shards, "extra": feats}, tmp / "c")
    assert not (tmp / "c").exists()


def test_extra_columns_are_exported_generically(memory):
    store, shards, arrays, inputs, tmp = memory
    ex = store.load("replay", 0).buffer  # shard exemplars only
    n = len(ex)
    logits = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    weight = np.linspace(0, 1, n)
    cols = {**ex.columns(), "weight": weight, "logits": logits}
    done = write_export(cols, {"train": shards}, tmp / "p", progress=False)
    assert done.members == ["cls", "input.npy", "logits.npy", "memstore.json"]
    plain = list(wds.WebDataset(str(tmp / "p" / done.spec), shardshuffle=False).decode())
    assert [s["memstore.json"]["weight"] for s in plain] == weight.tolist()
    assert np.array_equal(np.stack([s["logits.npy"] for s in plain]), logits)
    back = memstore.open_export(tmp / "p", decode=False)
    assert back.members == ("cls", "input.npy", "logits.npy", "memstore.json")


def test_cli_export(memory, capsys):
    store, shards, arrays, inputs, tmp = memory
    url = str(tmp / "m.zarr")
    assert main(["export", url, "replay", "--to", str(tmp / "e1")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memstore export: error:") and "--source extra=" in err
    extra = f"extra={tmp / 'extra.npz'}"
    assert main(["export", url, "replay", "--to", str(tmp / "e2"), "--source", extra]) == 0
    assert "exported 24 exemplars of 'replay' (commit 2)" in capsys.readouterr().out
    back = memstore.open_export(tmp / "e2")
    np.testing.assert_array_equal(back.targets, store.load("replay").buffer.targets)
    args = ["export", url, "replay", "--to", str(tmp / "e3"), "--commit", "1", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["commit"] == 1
    assert main(["export", url, "replay", "--to", str(tmp / "e4"), "--source", "x"]) == 2
    assert "NAME=SPEC" in capsys.readouterr().err


def test_progress_bar_when_asked(memory, capsys):
    store, shards, arrays, inputs, tmp = memory
    memstore.export_memory(store, "replay", tmp / "q", sources={"extra": arrays}, progress=True)
    assert "export" in capsys.readouterr().err
    memstore.export_memory(store, "replay", tmp / "r", sources={"extra": arrays}, progress=False)
    assert capsys.readouterr().err == ""


def test_payload_columns_are_exported_with_their_exemplars(tmp_path):
    x = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    logits = x @ np.ones((4, 2), dtype=np.float32) + np.arange(30)[:, None]
    margin = np.arange(30, dtype=np.float64) / 7
    store = memstore.open_store(str(tmp_path / "m.zarr"))
    buf = memstore.ClassBalancedBuffer(max_size=9, seed=0)
    exp = memstore.Experience(
        targets=y, source="digits", payload={"logits": logits, "margin": margin}
    )
    buf.update(exp)
    store.save("replay", buf)
    done = memstore.export_memory(
        store,
        "replay",
        tmp_path / "out",
        sources={"digits": memstore.ArraySource(x, y)},
        progress=False,
    )
    held = store.load("replay").buffer
    plain = list(wds.WebDataset(str(tmp_path / "out" / done.spec), shardshuffle=False).decode())
    assert [s["memstore.json"]["id"] for s in plain] == held.ids.tolist()
    assert np.array_equal(np.stack([s["payload.logits.npy"] for s in plain]), logits[held.ids])
    assert [s["memstore.json"]["payload.margin"] for s in plain] == margin[held.ids].tolist()

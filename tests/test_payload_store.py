"""Payload columns in the store: saved as extra snapshot arrays (``payload.<name>``) under the
manifest's checksums, loaded back identically (dtype, shape, values), checked by verify;
damage of a payload chunk is a CorruptStoreError naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import memstore
from memstore import ClassBalancedBuffer, CorruptStoreError, Experience, open_store
from memstore.testing.reference import assert_state_equal

PAYLOADS = {
    "logits": lambda ids: (ids[:, None] * np.arange(1, 11)).astype(np.float32),
    "half": lambda ids: ids.astype(np.float16),
    "count": lambda ids: ids.astype(np.int64) * 7,
    "mask": lambda ids: ids[:, None, None] % np.arange(1, 7).reshape(1, 2, 3) == 0,
    "none_wide": lambda ids: np.zeros((len(ids), 0), dtype=np.float32),
}


def payload_of(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {name: make(ids) for name, make in PAYLOADS.items()}


def filled_buffer(experiences: int = 3) -> ClassBalancedBuffer:
    buf = ClassBalancedBuffer(12, seed=4)
    for k in range(experiences):
        ids = np.arange(20 * k, 20 * k + 20)
        buf.update(Experience(targets=ids % 5, ids=ids, index=k, payload=payload_of(ids)))
    return buf


def test_payload_round_trips_through_a_commit(tmp_path):
    store = open_store(tmp_path / "s.zarr")
    buf = filled_buffer()
    store.save("replay", buf, message="with payload")
    loaded = store.load("replay")
    for name, value in loaded.buffer.payload.items():
        saved = buf.buffer.payload[name]
        assert value.dtype == saved.dtype and value.shape == saved.shape, name
        np.testing.assert_array_equal(value, saved)
    assert sorted(loaded.buffer.payload) == sorted(PAYLOADS)
    np.testing.assert_array_equal(
        loaded.buffer.payload["logits"], PAYLOADS["logits"](loaded.buffer.ids)
    )
    assert loaded.buffer.equals(buf.buffer)
    assert_state_equal(store.state("replay"), buf.state_dict())
    manifest = (tmp_path / "s.zarr/buffers/replay/commits/0000000000.json").read_text()
    assert '"payload.logits"' in manifest and '"payload.mask"' in manifest
    assert store.verify() == []
    # The loaded buffer continues exactly as the saved one.
    ids = np.arange(100, 130)
    for b in (buf, loaded):
        b.update(Experience(targets=ids % 6, ids=ids, payload=payload_of(ids)))
    assert loaded.buffer.equals(buf.buffer)
    store.save("replay", loaded)
    assert store.load("replay").buffer.equals(buf.buffer)


def test_buffers_without_payload_keep_their_snapshot_layout(tmp_path):
    store = open_store(tmp_path / "s.zarr")
    buf = ClassBalancedBuffer(6, seed=0)
    buf.update(Experience(targets=np.arange(10) % 3))
    store.save("plain", buf)
    loaded = store.load("plain")
    assert loaded.buffer.payload == {}
    arrays = store.state("plain")["columns"]
    assert not [k for k in arrays if k.startswith("payload.")]


def _payload_chunk(root: Path, name: str = "logits") -> Path:
    chunks = sorted(root.glob(f"buffers/replay/snapshots/*/payload.{name}/c/**/*"))
    files = [c for c in chunks if c.is_file()]
    assert files, f"no chunk file of payload.{name}"
    return files[0]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_payload_chunk_is_named_by_load_and_verify(tmp_path, damage):
    root = tmp_path / "s.zarr"
    store = open_store(root)
    store.save("replay", filled_buffer(2))
    chunk = _payload_chunk(root)
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x5A
        chunk.write_bytes(bytes(data))
    elif damage == "truncate":
        chunk.write_bytes(bytes(data[: len(data) // 2]))
    else:
        chunk.unlink()
    with pytest.raises(CorruptStoreError, match="payload.logits"):
        store.load("replay")
    problems = store.verify()
    assert any("payload.logits" in f"{p.path} {p.message}" for p in problems), problems
    assert all(p.severity == "error" for p in problems)


def test_payload_chunks_hold_whole_rows_and_bounded_bytes():
    from memstore.store.snapshots import CHUNK_BYTES, CHUNK_ROWS, chunk_shape

    assert chunk_shape(np.zeros(10)) == (10,)
    assert chunk_shape(np.zeros(0)) == (1,)
    assert chunk_shape(np.zeros((5, 0), np.float32)) == (5, 1)
    assert chunk_shape(np.zeros((3, 2, 4))) == (3, 2, 4)
    wide = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (CHUNK_ROWS, 1000), (0, 0))
    rows = chunk_shape(wide)[0]
    assert rows * 1000 * 4 <= CHUNK_BYTES < (rows + 1) * 1000 * 4


def test_replay_from_a_loaded_store_returns_the_payload(tmp_path):
    store = open_store(tmp_path / "s.zarr")
    buf = filled_buffer(1)
    store.save("replay", buf)
    loaded = store.load("replay")
    src = memstore.ArraySource(np.zeros((20, 2), np.float32), np.arange(20) % 5)
    x, y, t, payload = memstore.ReplayDataset(loaded, src)[3]
    sid = int(loaded.buffer.ids[3])
    assert torch.equal(payload["logits"], torch.arange(1, 11, dtype=torch.float32) * sid)
    assert payload["mask"].dtype == torch.bool and payload["mask"].shape == (2, 3)
    assert payload["count"].item() == 7 * sid and payload["half"].dtype == torch.float16


def test_describe_and_inspect_list_the_payload_columns(tmp_path, capsys):
    from memstore.cli import main

    store = open_store(tmp_path / "s.zarr")
    ids = np.arange(12)
    two = {
        "logits": (ids[:, None] * np.arange(1, 11)).astype(np.float32),
        "mask": ids[:, None, None] % np.arange(1, 7).reshape(1, 2, 3) == 0,
    }
    buf = ClassBalancedBuffer(8, seed=0)
    buf.update(Experience(targets=ids % 4, ids=ids, payload=two))
    store.save("der", buf)
    plain = ClassBalancedBuffer(6, seed=0)
    plain.update(Experience(targets=np.arange(10) % 3))
    store.save("plain", plain)
    want = {
        "logits": {"dtype": "float32", "shape": [10]},
        "mask": {"dtype": "bool", "shape": [2, 3]},
    }
    assert store.describe("der")["payload"] == want
    assert store.describe("plain")["payload"] == {}
    assert [d["payload"] for d in store.describe_log("der")] == [want]

    assert main(["inspect", store.url, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {b["buffer"]: b["payload"] for b in printed["buffers"]} == {"der": want, "plain": {}}
    assert main(["inspect", store.url, "der"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("payload")] == [
        "payload logits: float32, shape [10] per exemplar",
        "payload mask: bool, shape [2, 3] per exemplar",
    ]
    assert main(["inspect", store.url, "plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("payload")] == ["payload: none"]

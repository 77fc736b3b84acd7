"""ShardSource, the shard writer and tools/make_shards.py: every id reads back what was written,
the index is reused and detects changed shards, buffers built over shards equal in-memory
builds, damaged shards fail with errors naming shard and key."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import memstore
from memstore.errors import CorruptShardError, MemstoreError, SourceMismatchError
from memstore.sources.shards import ShardSource, expand_spec, write_shards, write_synthetic

ROOT = Path(__file__).resolve().parents[1]


def make_shards_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``tools/make_shards.py`` (the command line over the package's writer)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_shards.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])},
    )


class FakeStore:
    """The two methods ShardSource uses, backed by a dict; counts writes."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[dict, dict]] = {}
        self.writes = 0

    def write_source_index(self, name, record, arrays):
        self.writes += 1
        self.saved[name] = (
            pickle.loads(pickle.dumps(record)),
            {k: np.array(v, copy=True) for k, v in arrays.items()},
        )

    def read_source_index(self, name):
        return self.saved.get(name)


def _data(n=257, shape=(3, 5), classes=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


@pytest.fixture
def written(tmp_path):
    x, y = _data()
    out = write_shards(x, str(tmp_path / "s" / "train-%04d.tar"), targets=y, maxcount=50)
    return x, y, out


def _tar_bytes(members, fmt=tarfile.USTAR_FORMAT, mtime=0):
    """A tar holding ``members`` [(name, bytes)] in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# -- reading back ------------------------------------------------------------------------------
def test_every_id_reads_back_what_was_written(written):
    x, y, out = written
    assert out.count == 257 and len(out.paths) == 6
    assert out.spec.endswith("train-{0000..0005}.tar")
    src = ShardSource(out.spec, progress=False)
    assert len(src) == 257 and src.members == ("cls", "input.npy")
    assert src.input_key == "input.npy"
    np.testing.assert_array_equal(src.targets, y)
    assert src.targets.dtype == np.int64
    assert src.keys.tolist() == [f"{i:09d}" for i in range(257)]
    np.testing.assert_array_equal(src.shard_starts, [0, 50, 100, 150, 200, 250, 257])
    np.testing.assert_array_equal(src.shards, np.repeat(np.arange(6), [50] * 5 + [7]))
    for i in range(len(src)):
        inp, target = src[i]
        assert isinstance(inp, torch.Tensor) and isinstance(target, int)
        assert torch.equal(inp, torch.from_numpy(x[i])) and target == y[i]
    assert torch.equal(src[-1][0], torch.from_numpy(x[-1]))
    ids = np.random.default_rng(1).permutation(np.concatenate([np.arange(257), [3, 3, 256]]))
    items = src.get_many(ids)
    assert len(items) == len(ids)
    for (inp, target), i in zip(items, ids.tolist(), strict=True):
        assert torch.equal(inp, torch.from_numpy(x[i])) and target == y[i]
    assert src.get_many([]) == []
    with pytest.raises(IndexError, match="257 samples; got id 257"):
        src[257]
    with pytest.raises(IndexError):
        src.get_many([0, -258])
    with pytest.raises(TypeError):
        src[1.0]


def test_iter_batches_streams_all_and_reads_subsets(written):
    x, y, out = written
    src = ShardSource(out.spec, progress=False)
    batches = list(src.iter_batches(batch_size=64))
    assert [len(ids) for ids, _ in batches] == [64, 64, 64, 64, 1]
    np.testing.assert_array_equal(np.concatenate([ids for ids, _ in batches]), np.arange(257))
    assert torch.equal(torch.cat([inp for _, inp in batches]), torch.from_numpy(x))
    sub = np.array([200, 5, 17, 256, 0, 99])
    batches = list(src.iter_batches(sub, batch_size=4))
    np.testing.assert_array_equal(np.concatenate([ids for ids, _ in batches]), sub)
    assert torch.equal(torch.cat([inp for _, inp in batches]), torch.from_numpy(x[sub]))


def test_ragged_members_foreign_tar_formats_and_raw_decode(tmp_path):
    """Shards written by other tools (pax headers, GNU long names, float mtimes, ragged
    arrays) index to what webdataset itself yields."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    long_dir = "d" * 60 + "/" + "e" * 60 + "/"
    arrays, paths = [], []
    for s, fmt in enumerate([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]):
        members = []
        for i in range(5):
            arr = rng.standard_normal(rng.integers(1, 9)).astype(np.float64)
            arrays.append(arr)
            key = f"{long_dir}k{s}_{i}"
            members += [
                (f"{key}.cls", str(i + s).encode()),
                (f"{key}.input.npy", _npy(arr)),
                (f"{key}.meta.json", b'{"a": %d}' % i),
            ]
        members.insert(0, ("__meta__", b"ignored by webdataset"))
        paths.append(str(tmp_path / f"f{s}.tar"))
        Path(paths[-1]).write_bytes(_tar_bytes(members, fmt=fmt, mtime=1.5e9 + 0.25))
    with pytest.raises(ValueError, match="input_key"):
        ShardSource(paths, progress=False)
    src = ShardSource(paths, input_key="input.npy", progress=False)
    assert src.members == ("cls", "input.npy", "meta.json") and len(src) == 10
    for i, arr in enumerate(arrays):
        assert torch.equal(src[i][0], torch.from_numpy(arr)) and src[i][1] == i % 5 + i // 5
    assert [
        torch.equal(a, torch.from_numpy(b))
        for (a, _), b in zip(src.get_many(np.arange(10)[::-1]), arrays[::-1], strict=True)
    ] == [True] * 10
    ragged = list(src.iter_batches(batch_size=4))
    assert isinstance(ragged[0][1], list) and len(ragged[0][1]) == 4
    raw = ShardSource(paths, decode=False, progress=False, name="raw")
    reference = list(wds.WebDataset(paths, shardshuffle=False))
    assert len(reference) == 10
    for i, ref in enumerate(reference):
        assert raw[i] == ref  # webdataset's raw sample: __key__, __url__, member bytes, ...
    assert raw.get_many([9, 0])[0] == raw[9] == reference[9]
    assert src.get_raw([9, 0]) == [reference[9], reference[0]]
    custom = ShardSource(paths, decode=False, transform=lambda d: d["meta.json"], progress=False)
    assert custom[6] == b'{"a": 1}'


def test_pickling_and_dataloader_workers(written):
    x, y, out = written
    src = ShardSource(out.spec, progress=False)
    src[0]  # an open fd must not travel
    clone = pickle.loads(pickle.dumps(src))
    assert torch.equal(clone[100][0], torch.from_numpy(x[100]))
    loader = torch.utils.data.DataLoader(src, batch_size=64, num_workers=2)
    got = list(loader)
    assert torch.equal(torch.cat([b[0] for b in got]), torch.from_numpy(x))
    assert torch.equal(torch.cat([b[1] for b in got]), torch.from_numpy(y))


# -- index persistence --------------------------------------------------------------------------
def test_index_is_reused_and_changed_shards_are_detected(written, monkeypatch):
    import memstore.sources.shards.index as shard_index_mod

    x, y, out = written
    store = FakeStore()
    first = ShardSource(out.spec, store=store, name="train", progress=False)
    assert first.indexed_shards == tuple(range(6)) and store.writes == 1
    record, arrays = store.saved["train"]
    assert record["kind"] == "shards" and record["format"] == 1
    assert record["length"] == 257 and record["shard_counts"] == [50] * 5 + [7]
    assert record["fingerprint"] == first.fingerprint()
    assert record["members"] == ["cls", "input.npy"] and record["target_key"] == "cls"
    assert sorted(arrays) == [
        "keys",
        "offset_cls",
        "offset_input.npy",
        "size_cls",
        "size_input.npy",
        "targets",
    ]
    assert all(a.ndim == 1 for a in arrays.values()) and record["key_width"] == 9

    def no_scan(*args, **kwargs):
        raise AssertionError("the shards were re-read")

    monkeypatch.setattr(shard_index_mod, "scan_tar", no_scan)
    again = ShardSource(out.spec, store=store, name="train", progress=False)
    assert again.indexed_shards == () and store.writes == 1
    assert again.fingerprint() == first.fingerprint()
    assert again.keys.tolist() == first.keys.tolist()
    assert torch.equal(again[123][0], torch.from_numpy(x[123]))
    monkeypatch.undo()

    # Same size, different content: shard 2 with other targets and inputs.
    y2 = y.copy()
    y2[100:150] = (y2[100:150] + 1) % 7
    x2 = x.copy()
    x2[100:150] += 1
    tmp = write_shards(x2, str(Path(out.paths[0]).parent / "new-%04d.tar"), targets=y2, maxcount=50)
    assert os.path.getsize(tmp.paths[2]) == os.path.getsize(out.paths[2])
    os.replace(tmp.paths[2], out.paths[2])
    with pytest.raises(SourceMismatchError, match=r"train-0002\.tar.*reindex=True"):
        ShardSource(out.spec, store=store, name="train", reindex=False, progress=False)
    with pytest.warns(UserWarning, match=r"train-0002\.tar.*re-indexing"):
        changed = ShardSource(out.spec, store=store, name="train", progress=False)
    assert changed.indexed_shards == (2,) and store.writes == 2
    np.testing.assert_array_equal(changed.targets, y2)
    assert torch.equal(changed[120][0], torch.from_numpy(x2[120]))
    assert changed.fingerprint() != first.fingerprint()
    assert changed.fingerprint() == ShardSource(out.spec, progress=False).fingerprint()
    assert memstore.sources.fingerprint(changed) == changed.fingerprint()


def test_moved_shards_reuse_the_index_and_fsspec_urls_read_the_same(written):
    fsspec = pytest.importorskip("fsspec")
    x, y, out = written
    store = FakeStore()
    local = ShardSource(out.spec, store=store, progress=False)
    mem = fsspec.filesystem("memory")
    for i, path in enumerate(out.paths):
        mem.pipe(f"/moved/t-{i}.tar", Path(path).read_bytes())
    remote = ShardSource("memory://moved/t-{0..5}.tar", store=store, progress=False)
    assert remote.indexed_shards == () and store.writes == 2  # urls updated in the record
    assert store.saved["shards"][0]["shards"][0] == "memory://moved/t-0.tar"
    assert remote.fingerprint() == local.fingerprint()
    assert torch.equal(remote[77][0], torch.from_numpy(x[77])) and remote[77][1] == y[77]
    ids = np.random.default_rng(2).permutation(257)[:100]
    assert all(
        torch.equal(a, torch.from_numpy(x[i]))
        for (a, _), i in zip(remote.get_many(ids), ids, strict=True)
    )
    assert torch.equal(
        torch.cat([b for _, b in remote.iter_batches(batch_size=100)]), torch.from_numpy(x)
    )
    fresh = ShardSource("memory://moved/t-{0..5}.tar", progress=False)  # index over fsspec
    np.testing.assert_array_equal(fresh.targets, y)
    mem.rm("/moved", recursive=True)


# -- buffers and replay over shards -------------------------------------------------------------
def test_buffers_over_shards_equal_in_memory_builds(written):
    x, y, out = written
    src = ShardSource(out.spec, progress=False)
    splits = [[0, 1, 2], [3, 4], [5, 6]]
    exps = src.experiences(by_classes=splits)
    assert [e.index for e in exps] == [0, 1, 2] and all(e.source == "shards" for e in exps)
    for e, split in zip(exps, splits, strict=True):
        ids = np.flatnonzero(np.isin(y, split))
        np.testing.assert_array_equal(e.ids, ids)
        np.testing.assert_array_equal(e.targets, y[ids])
    on_shards = memstore.ClassBalancedBuffer(max_size=40, seed=3)
    in_memory = memstore.ClassBalancedBuffer(max_size=40, seed=3)
    for k, e in enumerate(exps):
        on_shards.update(e)
        in_memory.update(memstore.Experience(targets=y[e.ids], ids=e.ids, source="shards", index=k))
    assert on_shards.buffer.equals(in_memory.buffer) and len(on_shards.buffer) == 40

    # Feature-based selection reads the inputs from the shards by offset.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(15, 8), torch.nn.ReLU())
    arrays = memstore.ArraySource(x, y)
    herd_shards = memstore.ParametricBuffer(
        30, groupby="class", selection_strategy=memstore.HerdingSelectionStrategy(model, "2")
    )
    herd_memory = memstore.ParametricBuffer(
        30, groupby="class", selection_strategy=memstore.HerdingSelectionStrategy(model, "2")
    )
    for k, e in enumerate(src.experiences(by_shards=3)):
        herd_shards.update(e)
        mem_exp = memstore.Experience(
            targets=y[e.ids],
            ids=e.ids,
            source="shards",
            index=k,
            data=torch.utils.data.Subset(arrays, e.ids.tolist()),
            source_data=arrays,
        )
        herd_memory.update(mem_exp)
    assert herd_shards.buffer.equals(herd_memory.buffer) and len(herd_shards.buffer) == 30

    replay = memstore.ReplayDataset(on_shards.buffer, {"shards": src})
    ex = on_shards.buffer
    for row in range(len(replay)):
        inp, target, task = replay[row]
        i = int(ex.ids[row])
        assert torch.equal(inp, torch.from_numpy(x[i])) and target == y[i] and task == 0
    rows = [5, 0, 39, 5]
    for row, (inp, target, task) in zip(rows, replay.__getitems__(rows), strict=True):
        i = int(ex.ids[row])
        assert torch.equal(inp, torch.from_numpy(x[i])) and target == y[i] and task == 0


def test_experiences_by_shards_and_argument_errors(written):
    x, y, out = written
    src = ShardSource(out.spec, progress=False)
    exps = src.experiences(by_shards=4)  # 6 shards -> 2, 2, 1, 1
    assert [(int(e.ids[0]), int(e.ids[-1])) for e in exps] == [
        (0, 99),
        (100, 199),
        (200, 249),
        (250, 256),
    ]
    assert all(e.source_data is src and e.data is None for e in exps)
    with pytest.raises(TypeError, match="exactly one"):
        src.experiences()
    with pytest.raises(ValueError, match="at most the number of shards"):
        src.experiences(by_shards=7)
    with pytest.raises(ValueError, match="disjoint"):
        src.experiences(by_classes=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"classes \[9\]"):
        src.experiences(by_classes=[[0], [9]])
    with pytest.raises(ValueError, match="'name' parameter of ShardSource"):
        ShardSource(out.spec, name="a/b")
    # The one name rule (buffers and sources), checked before any shard is opened.
    with pytest.raises(ValueError, match=r"'name' parameter of ShardSource must be 1-128 .*'-x'"):
        ShardSource("missing/t-{0..1}.tar", name="-x")
    with pytest.raises(TypeError, match="'name' parameter of ShardSource"):
        ShardSource(out.spec, name=3)
    with pytest.raises(TypeError, match="'decode' parameter"):
        ShardSource(out.spec, decode=3)
    with pytest.raises(TypeError, match="'store' parameter"):
        ShardSource(out.spec, store=object())
    with pytest.raises(ValueError, match="'input_key' parameter"):
        ShardSource(out.spec, input_key="x.npy", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ShardSource(out.spec.replace("train", "nope"), progress=False)
    assert expand_spec("a/{00..02}-{x,y}.tar") == [
        "a/00-x.tar",
        "a/00-y.tar",
        "a/01-x.tar",
        "a/01-y.tar",
        "a/02-x.tar",
        "a/02-y.tar",
    ]
    assert expand_spec("s-{8..10}.tar") == ["s-8.tar", "s-9.tar", "s-10.tar"]
    with pytest.raises(ValueError, match="twice"):
        expand_spec(["a.tar", "a.tar"])


# -- damaged shards -----------------------------------------------------------------------------
def _good_samples(n, skip=None):
    members = []
    for i in range(n):
        key = f"{i:09d}"
        for ext, data in (
            ("cls", str(i % 3).encode()),
            ("input.npy", _npy(np.full(4, i, dtype=np.int16))),
        ):
            if skip != (key, ext):
                members.append((f"{key}.{ext}", data))
    return members


def test_damaged_shards_name_shard_and_key(tmp_path):
    ok = tmp_path / "ok.tar"
    ok.write_bytes(_tar_bytes(_good_samples(6)))
    cases = {
        "truncated": (
            _tar_bytes(_good_samples(6))[: 512 * 9 + 40],
            r"truncated.*sample key '000000002'",
        ),
        "no_input": (
            _tar_bytes(_good_samples(6, skip=("000000004", "input.npy"))),
            r"sample key '000000004' is missing member 'input.npy'",
        ),
        "no_target": (
            _tar_bytes(_good_samples(6, skip=("000000003", "cls"))),
            r"sample key '000000003' is missing member 'cls'",
        ),
        "bad_target": (
            _tar_bytes([(n, b"cat" if n == "000000001.cls" else d) for n, d in _good_samples(6)]),
            r"sample key '000000001': the target member 'cls' must hold an int",
        ),
        "bad_header": (
            _tar_bytes(_good_samples(6))[: 512 * 8] + b"\x07" * 512 * 8,
            r"damaged tar header at byte 4096 \(after sample key '000000001'\)",
        ),
        "split_key": (
            _tar_bytes(_good_samples(2) + _good_samples(1)),
            r"sample key '000000000' appears in two places",
        ),
    }
    for name, (data, pattern) in cases.items():
        bad = tmp_path / f"{name}.tar"
        bad.write_bytes(data)
        with pytest.raises(CorruptShardError, match=pattern) as info:
            ShardSource([str(ok), str(bad)], progress=False)
        assert f"{name}.tar" in str(info.value)
        assert isinstance(info.value, MemstoreError) and isinstance(info.value, ValueError)
    first_missing = tmp_path / "first.tar"
    first_missing.write_bytes(_tar_bytes(_good_samples(3, skip=("000000000", "cls"))))
    with pytest.raises(CorruptShardError, match="no target member 'cls'.*target_key="):
        ShardSource([str(first_missing)], progress=False)


def test_shard_truncated_after_indexing_fails_on_read(tmp_path):
    path = tmp_path / "t.tar"
    path.write_bytes(_tar_bytes(_good_samples(40)))
    src = ShardSource([str(path)], progress=False)
    raw = ShardSource([str(path)], progress=False, decode=False)
    assert src[39][1] == 0 and torch.equal(src[39][0], torch.full((4,), 39, dtype=torch.int16))
    cut = int(src.index.offsets[30, 1]) + 10  # inside sample 30's input
    with open(path, "r+b") as f:
        f.truncate(cut)
    pattern = r"t\.tar', sample key '0000000(30|31|39)'.*re-open"
    with pytest.raises(CorruptShardError, match=pattern):
        src[39]
    with pytest.raises(CorruptShardError, match=pattern):
        src.get_many([0, 31, 2])
    with pytest.raises(CorruptShardError, match=pattern):
        raw.get_many([31])
    with pytest.raises(CorruptShardError, match=pattern):
        list(src.iter_batches(batch_size=8))
    assert torch.equal(src[29][0], torch.full((4,), 29, dtype=torch.int16))


# -- make_shards --------------------------------------------------------------------------------
def test_make_shards_npz_cli_and_reproducible_synthetic(tmp_path):
    x, y = _data(n=120, shape=(6,), seed=4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    pattern = str(tmp_path / "npz" / "p-%03d.tar")
    run = make_shards_cli(pattern, "--npz", str(tmp_path / "d.npz"), "--maxcount", "50")
    assert run.returncode == 0, run.stderr
    printed = run.stdout
    assert "wrote 120 samples in 3 shards" in printed and "p-{000..002}.tar" in printed
    src = ShardSource(str(tmp_path / "npz" / "p-{000..002}.tar"), progress=False)
    np.testing.assert_array_equal(src.targets, y)
    assert torch.equal(torch.stack([src[i][0] for i in range(120)]), torch.from_numpy(x))
    assert not list((tmp_path / "npz").glob("*.tmp"))
    with tarfile.open(tmp_path / "npz" / "p-000.tar") as tf:
        infos = tf.getmembers()
    assert {m.mtime for m in infos} == {0} and not any(m.pax_headers for m in infos)
    assert [m.name for m in infos[:2]] == ["000000000.cls", "000000000.input.npy"]

    a = write_synthetic(
        str(tmp_path / "a" / "s-%02d.tar"), 5000, sample_bytes=64, classes=5, seed=1, maxcount=2000
    )
    b = write_synthetic(
        str(tmp_path / "b" / "s-%02d.tar"), 5000, sample_bytes=64, classes=5, seed=1, maxcount=2000
    )
    assert len(a.paths) == 3 and a.count == 5000
    assert [Path(p).read_bytes() for p in a.paths] == [Path(p).read_bytes() for p in b.paths]
    syn = ShardSource(a.spec, progress=False)
    assert syn[4999][0].shape == (16,) and syn[0][0].dtype == torch.float32
    assert set(np.unique(syn.targets).tolist()) == set(range(5))

    with pytest.raises(TypeError, match="must hold ints"):
        write_shards(x, str(tmp_path / "bad" / "q-%d.tar"), targets=y + 0.5)
    assert not os.listdir(tmp_path / "bad")  # the temporary shard was removed
    with pytest.raises(ValueError, match="%d"):
        write_shards(x, str(tmp_path / "q.tar"), targets=y)
    run = make_shards_cli(str(tmp_path / "q-%d.tar"), "--npz", str(tmp_path / "no.npz"))
    assert run.returncode == 2 and "make_shards: error:" in run.stderr
    assert memstore.write_shards is write_shards


def _png(pixels: np.ndarray) -> bytes:
    """A minimal 8-bit grayscale PNG (no Pillow needed to write one)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    h, w = pixels.shape
    raw = b"".join(b"\0" + pixels[r].astype(np.uint8).tobytes() for r in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(5)
    images = {}
    for cls in ("cat", "dog", "emu"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (3, 5))
            path = tmp_path / "img" / cls / f"{i}.png"
            path.write_bytes(_png(pixels))
            images[str(path)] = pixels
    (tmp_path / "img" / "cat" / "notes.txt").write_text("not an image")
    out = write_shards(str(tmp_path / "img"), str(tmp_path / "sh" / "i-%d.tar"), maxcount=5)
    return out, images


def test_make_shards_image_folder_round_trip(image_folder):
    out, images = image_folder
    assert out.classes == ["cat", "dog", "emu"] and out.count == 12 and len(out.paths) == 3
    src = ShardSource(out.spec, decode=False, progress=False)
    assert src.members == ("cls", "png")
    np.testing.assert_array_equal(src.targets, np.repeat([0, 1, 2], 4))
    for i, path in enumerate(sorted(images)):  # ImageFolder order: class, then file name
        assert src[i]["png"] == Path(path).read_bytes()


def test_image_members_decode_with_pillow(image_folder):
    """decode=True decodes images with webdataset's "torch" spec: float CHW in [0, 1]."""
    out, images = image_folder
    src = ShardSource(out.spec, progress=False)
    for i, path in enumerate(sorted(images)):
        gray = torch.from_numpy(images[path].astype(np.float32) / 255.0)
        assert torch.equal(src[i][0], gray.expand(3, *gray.shape))
        assert src[i][1] == i // 4


@pytest.mark.s3
def test_shards_on_an_s3_server(written):
    """Index, random access and streaming through ranged GETs on a real S3-protocol server."""
    pytest.importorskip("s3fs")
    import fsspec

    from memstore.testing import s3server

    x, y, out = written
    with s3server.isolated_aws_env(), s3server.start_moto() as server:
        bucket = server.make_bucket()
        opts = server.storage_options(skip_instance_cache=True)
        fs = fsspec.filesystem("s3", **opts)
        for i, path in enumerate(out.paths):
            fs.put_file(path, f"{bucket}/data/t-{i:02d}.tar")
        store = FakeStore()
        src = ShardSource(
            f"s3://{bucket}/data/t-{{00..05}}.tar",
            storage_options=opts,
            store=store,
            progress=False,
        )
        assert src.indexed_shards == tuple(range(6))
        np.testing.assert_array_equal(src.targets, y)
        assert src.fingerprint() == ShardSource(out.spec, progress=False).fingerprint()
        assert torch.equal(src[200][0], torch.from_numpy(x[200])) and src[200][1] == y[200]
        ids = np.random.default_rng(3).permutation(257)[:64]
        assert all(
            torch.equal(a, torch.from_numpy(x[i])) and t == y[i]
            for (a, t), i in zip(src.get_many(ids), ids, strict=True)
        )
        assert torch.equal(
            torch.cat([b for _, b in src.iter_batches(batch_size=128)]), torch.from_numpy(x)
        )
        again = ShardSource(
            f"s3://{bucket}/data/t-{{00..05}}.tar",
            storage_options=opts,
            store=store,
            progress=False,
        )
        assert again.indexed_shards == () and store.writes == 1

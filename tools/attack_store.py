"""Attack a store as an adversary would, and count what gets through.

Builds a store holding every kind of object memstore writes (a buffer of each policy, herding
and closest-to-center memories, a shard index, a feature cache), then:

* **files**: every file under the root x {byte flip, truncate, zero, delete, swap with a
  same-kind file}; after each, the store is opened read-only and every buffer, the shard index
  and the feature cache are read back, and ``verify`` runs;
* **fields**: every field of every latest manifest changed (and one removed);
* **calls**: >= 100 wrong calls (bad types and values), each on a fresh copy of the store;
* **writers**: 3 processes x N commits on one buffer (optimistic concurrency), optionally on the
  loopback SeaweedFS server (``--s3``);
* **root**: a sentinel folder beside the store, hashed before and after everything.

Counted, each with examples:
  silent     a read returned data that differs from what was committed (no error)
  unnamed    an error that is not a ``MemstoreError`` (or, for wrong calls, not a
             TypeError/ValueError/MemstoreError), or a CorruptStoreError not naming the file
  verify_ok  ``load`` (or a read) refused while ``verify`` reported no error
  undetected a file was changed and neither a read nor ``verify`` noticed (data unaffected)
  accepted   a wrong call that raised nothing
  changed    a wrong call that raised but changed the store's files
  lost       a commit whose content was not built on the commit before it
  outside    a write or delete outside the store root

Run: ``python tools/attack_store.py [--quick] [--s3] [--writers-commits N]``. Exit 0 when every
count but ``undetected`` is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch

import memstore
from memstore.errors import CorruptStoreError, MemstoreError
from memstore.policies.base import state_digest

N_ROWS, DIM, N_CLASSES = 240, 6, 4


# -- building the store -------------------------------------------------------------------------
def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(DIM, 5))


def _write_shards(folder: str, x: np.ndarray, y: np.ndarray) -> str:
    import webdataset as wds

    os.makedirs(folder, exist_ok=True)
    with wds.ShardWriter(os.path.join(folder, "s-%04d.tar"), maxcount=60, mtime=0) as sink:
        for i in range(len(x)):
            buf = io.BytesIO()
            np.save(buf, x[i])
            sink.write({"__key__": f"{i:06d}", "input.npy": buf.getvalue(), "cls": str(int(y[i]))})
    n = -(-len(x) // 60)
    return os.path.join(folder, f"s-{{0000..{n - 1:04d}}}.tar")


def build(root: str, data_dir: str) -> dict[str, Any]:
    """The store under attack and what every object in it must read back as."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ROWS, DIM)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=N_ROWS)
    arrays = memstore.ArraySource(torch.from_numpy(x), torch.from_numpy(y))
    spec = _write_shards(data_dir, x, y)
    store = memstore.open_store(root)
    shards = memstore.ShardSource(spec, name="shards", store=store, progress=False)
    model = _model()
    herding = memstore.HerdingSelectionStrategy(model, "1", feature_cache=store, progress=False)
    buffers = {
        "reservoir": memstore.ReservoirSamplingBuffer(30, seed=1),
        "experience": memstore.ExperienceBalancedBuffer(24, seed=2),
        "classes": memstore.ClassBalancedBuffer(20, seed=3),
        "closest": memstore.ParametricBuffer(
            16,
            groupby="experience",
            selection_strategy=memstore.ClosestToCenterSelectionStrategy(model, "1"),
        ),
        "herding": memstore.ParametricBuffer(18, groupby="class", selection_strategy=herding),
    }
    sources = {"train": arrays, "shards": shards}
    for name, buf in buffers.items():
        src = "shards" if name == "herding" else "train"
        for k in range(2):
            ids = np.arange(k * 120, (k + 1) * 120)
            exp = memstore.Experience(y[ids], ids=ids, source=src, index=k)
            buf.update(exp, sources=sources)
            store.save(name, buf, message=f"{name} {k}", sources={src: sources[src]})
    cache_keys = store.feature_caches()
    expected = {
        "buffers": {n: state_digest(b.state_dict()) for n, b in buffers.items()},
        "next": {n: store.next_experience(n) for n in buffers},
        "features": {k: store.open_feature_cache(k).read(np.arange(N_ROWS)) for k in cache_keys},
        "targets": np.asarray(shards.targets).copy(),
        "spec": spec,
        "sample": _sample_bytes(shards),
    }
    return expected


def _sample_bytes(shards: Any) -> str:
    items = [shards[i] for i in (0, 61, 239)]
    return hashlib.sha256(
        repr([(np.asarray(a).tobytes(), int(b)) for a, b in items]).encode()
    ).hexdigest()


# -- reading it back ------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.cases = 0

    def add(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < 6:
            self.examples[kind].append(text[:300])


def read_back(root: str, expected: dict, case: str, tally: Tally, damaged: str | None) -> None:
    """Open read-only, read the objects ``damaged`` can affect, verify; classify the outcome."""
    parts = (damaged or "").split("/")
    scope = parts[0] if len(parts) > 2 else "all"  # buffers / sources / features, else all
    only_buffer = parts[1] if scope == "buffers" else None
    refused: list[str] = []
    noticed = False

    def named(err: BaseException, what: str) -> None:
        nonlocal noticed
        noticed = True
        if not isinstance(err, MemstoreError):
            tally.add("unnamed", f"{case}: {what}: {type(err).__name__}: {err}")
        elif (
            damaged is not None
            and isinstance(err, CorruptStoreError)
            and damaged.split("/")[0] not in str(err)
        ):
            tally.add("unnamed", f"{case}: {what}: CorruptStoreError not naming {damaged}: {err}")
        refused.append(what)

    try:
        store = memstore.open_store(root, mode="r")
    except Exception as err:  # noqa: BLE001 - classified below
        named(err, "open")
        return
    for name, want in expected["buffers"].items():
        if scope not in ("all", "buffers") or (only_buffer and name != only_buffer):
            continue
        try:
            got = state_digest(store.load(name).state_dict())
        except Exception as err:  # noqa: BLE001
            named(err, f"load {name}")
            continue
        if got != want:
            tally.add("silent", f"{case}: load {name} returned other content")
        try:
            if store.next_experience(name) != expected["next"][name]:
                tally.add("silent", f"{case}: next_experience({name}) changed")
            store.describe(name)
        except Exception as err:  # noqa: BLE001
            named(err, f"describe {name}")
    for key, want in expected["features"].items():
        if scope not in ("all", "features"):
            continue
        try:
            cache = store.open_feature_cache(key)
            got = None if cache is None else cache.read(np.arange(N_ROWS))
        except Exception as err:  # noqa: BLE001
            named(err, f"features {key}")
            continue
        if got is None:
            named(CorruptStoreError(f"features/{key} missing"), f"features {key}")
        elif not np.array_equal(got, want):
            tally.add("silent", f"{case}: feature cache {key} returned other values")
    if scope in ("all", "sources"):
        try:
            shards = memstore.ShardSource(
                expected["spec"], name="shards", store=store, reindex=False, progress=False
            )
            if not np.array_equal(np.asarray(shards.targets), expected["targets"]):
                tally.add("silent", f"{case}: shard index targets changed")
            elif _sample_bytes(shards) != expected["sample"]:
                tally.add("silent", f"{case}: shard samples read back differ")
        except Exception as err:  # noqa: BLE001
            named(err, "shard index")
    try:
        problems = [p for p in store.verify() if p.severity == "error"]
    except Exception as err:  # noqa: BLE001
        tally.add("unnamed", f"{case}: verify raised {type(err).__name__}: {err}")
        return
    if problems:
        noticed = True
    if refused and not problems:
        tally.add("verify_ok", f"{case}: refused {refused} but verify found nothing")
    if damaged is not None and not noticed:
        tally.add("undetected", f"{case}")


# -- campaigns ------------------------------------------------------------------------------------
def _files(root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def _kind(path: str) -> str:
    """Files of one kind can be swapped for each other."""
    base = path.rsplit("/", 1)[-1]
    if path.endswith(".json") and "/commits/" in path:
        return "manifest"
    if base == "zarr.json":
        return "zarr.json"
    if base == "record.json":
        return "record"
    return "chunk:" + path.split("/")[0]


def file_campaign(root: str, expected: dict, tally: Tally, quick: bool, rng: random.Random):
    files = [f for f in _files(root) if f != "zarr.json" or True]
    by_kind: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_kind[_kind(f)].append(f)
    if quick:
        files = rng.sample(files, min(40, len(files)))
    for rel in files:
        full = os.path.join(root, rel)
        with open(full, "rb") as fh:
            original = fh.read()
        others = [o for o in by_kind[_kind(rel)] if o != rel]
        for mutation in ("flip", "truncate", "zero", "delete", "swap"):
            if mutation == "swap" and not others:
                continue
            if mutation in ("flip", "truncate", "zero") and not original:
                continue
            if mutation == "flip":
                pos = rng.randrange(len(original))
                data = original[:pos] + bytes([original[pos] ^ 0x10]) + original[pos + 1 :]
            elif mutation == "truncate":
                data = original[: len(original) // 2]
            elif mutation == "zero":
                data = bytes(len(original))
            elif mutation == "swap":
                with open(os.path.join(root, rng.choice(others)), "rb") as fh:
                    data = fh.read()
                if data == original:
                    continue
            else:
                data = None
            if data is None:
                os.unlink(full)
            else:
                with open(full, "wb") as fh:
                    fh.write(data)
            tally.cases += 1
            try:
                read_back(root, expected, f"{mutation} {rel}", tally, rel)
            finally:
                with open(full, "wb") as fh:
                    fh.write(original)


def _mutated_values(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1]
    if isinstance(value, float):
        return [value * 2 + 1]
    if isinstance(value, str):
        return [value + "x"]
    if isinstance(value, list):
        return [value[:-1]] if value else [[0]]
    if isinstance(value, dict):
        return [{k: v for k, v in list(value.items())[1:]}] if value else [{"x": 1}]
    return [0]


def _field_paths(obj: Any, at: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every key path down to depth 3 (the root first)."""
    out = [at]
    if isinstance(obj, dict) and len(at) < 3:
        for k in obj:
            out.extend(_field_paths(obj[k], at + (k,)))
    return out


def field_campaign(root: str, expected: dict, tally: Tally) -> None:
    for name in expected["buffers"]:
        folder = os.path.join(root, "buffers", name, "commits")
        latest = sorted(f for f in os.listdir(folder) if f.endswith(".json"))[-1]
        path = os.path.join(folder, latest)
        with open(path, "rb") as fh:
            original = fh.read()
        manifest = json.loads(original)
        paths = _field_paths(manifest, ())
        for at in paths[1:]:
            parent = manifest
            for k in at[:-1]:
                parent = parent[k]
            for new in [*_mutated_values(parent[at[-1]]), "<removed>"]:
                changed = json.loads(original)
                target = changed
                for k in at[:-1]:
                    target = target[k]
                if new == "<removed>":
                    del target[at[-1]]
                else:
                    target[at[-1]] = new
                with open(path, "wb") as fh:
                    fh.write(json.dumps(changed, indent=1, sort_keys=True).encode())
                tally.cases += 1
                rel = f"buffers/{name}/commits/{latest}"
                try:
                    read_back(
                        root, expected, f"field {'.'.join(at)}={str(new)[:30]} in {rel}", tally, rel
                    )
                finally:
                    with open(path, "wb") as fh:
                        fh.write(original)


def _tree_hash(root: str) -> str:
    h = hashlib.sha256()
    for rel in _files(root):
        h.update(rel.encode())
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        except FileNotFoundError:  # a temp file that vanished while we listed
            h.update(b"<vanished>")
    return h.hexdigest()


def wrong_calls(root: str, tally: Tally, work: str) -> int:
    """Each wrong call runs on a fresh copy; it must raise a named error and change nothing."""
    arr = memstore.ArraySource(torch.zeros(10, DIM), torch.arange(10) % 2)
    big = 2**63
    store_calls: list[tuple[str, Any]] = [
        ("save(sources=42)", lambda s: s.save("classes", s.load("classes"), sources=42)),
        ("save(sources=['arr'])", lambda s: s.save("classes", s.load("classes"), sources=["arr"])),
        (
            "save(sources={'typo': arr})",
            lambda s: s.save("classes", s.load("classes"), sources={"trian": arr}),
        ),
        ("save(message=3)", lambda s: s.save("classes", s.load("classes"), message=3)),
        ("save(buffer=None)", lambda s: s.save("classes", None)),
        ("save(name='zarr.json')", lambda s: s.save("zarr.json", s.load("classes"))),
        ("save(name='../x')", lambda s: s.save("../x", s.load("classes"))),
        ("save(name='')", lambda s: s.save("", s.load("classes"))),
        ("save(name=3)", lambda s: s.save(3, s.load("classes"))),
        ("gc(grace_seconds='x')", lambda s: s.gc(keep=1, grace_seconds="x")),
        ("gc(grace_seconds=-1)", lambda s: s.gc(keep=1, grace_seconds=-1)),
        ("gc(keep=0)", lambda s: s.gc(keep=0)),
        ("gc(keep='1')", lambda s: s.gc(keep="1")),
        ("gc(keep=True)", lambda s: s.gc(keep=True)),
        ("load(sources=[arr])", lambda s: s.load("classes", sources=[arr])),
        ("load(sources='arr')", lambda s: s.load("classes", sources="arr")),
        (
            "load(allow_source_mismatch='no')",
            lambda s: s.load("classes", sources={"train": arr}, allow_source_mismatch="no"),
        ),
        ("load(commit=-1)", lambda s: s.load("classes", commit=-1)),
        ("load(commit='0')", lambda s: s.load("classes", commit="0")),
        ("load(commit=99)", lambda s: s.load("classes", commit=99)),
        ("load(commit=1.5)", lambda s: s.load("classes", commit=1.5)),
        ("load('missing')", lambda s: s.load("missing")),
        ("load(name=None)", lambda s: s.load(None)),
        ("load(selection_strategy=3)", lambda s: s.load("herding", selection_strategy=3)),
        ("next_experience(5)", lambda s: s.next_experience(5)),
        ("next_experience('../x')", lambda s: s.next_experience("../x")),
        ("log(5)", lambda s: s.log(5)),
        ("log('missing')", lambda s: s.log("missing")),
        ("describe('missing')", lambda s: s.describe("missing")),
        ("describe(commit=-3)", lambda s: s.describe("classes", commit=-3)),
        ("delete_buffer('missing')", lambda s: s.delete_buffer("missing")),
        ("delete_buffer(3)", lambda s: s.delete_buffer(3)),
        ("feature_cache(n=-1)", lambda s: s.feature_cache("k1", -1, 4)),
        ("feature_cache(d=0)", lambda s: s.feature_cache("k1", 4, 0)),
        ("feature_cache(dtype='int8')", lambda s: s.feature_cache("k1", 4, 4, dtype="int8")),
        ("feature_cache(key='../x')", lambda s: s.feature_cache("../x", 4, 4)),
        ("feature_cache(n='4')", lambda s: s.feature_cache("k1", "4", 4)),
        ("write_source_index(name='../x')", lambda s: s.write_source_index("../x", {}, {})),
        ("write_source_index(record=3)", lambda s: s.write_source_index("src", 3, {})),
        ("write_source_index(arrays=3)", lambda s: s.write_source_index("src", {}, 3)),
        ("read_source_index(3)", lambda s: s.read_source_index(3)),
        ("open_feature_cache(3)", lambda s: s.open_feature_cache(3)),
        ("open_feature_cache('../../x')", lambda s: s.open_feature_cache("../../x")),
    ]
    open_calls: list[tuple[str, Any]] = [
        ("open_store(mode='x')", lambda r: memstore.open_store(r, mode="x")),
        ("open_store(mode='w-') existing", lambda r: memstore.open_store(r, mode="w-")),
        ("open_store(ftp://)", lambda r: memstore.open_store("ftp://127.0.0.1:1/x")),
        ("open_store(zip://)", lambda r: memstore.open_store("zip://x::/nonexistent.zip")),
        ("open_store(file://)", lambda r: memstore.open_store("file://")),
        ("open_store('')", lambda r: memstore.open_store("")),
        ("open_store(3)", lambda r: memstore.open_store(3)),
        ("open_store(None)", lambda r: memstore.open_store(None)),
        ("open_store(storage_options=3)", lambda r: memstore.open_store(r, storage_options=3)),
        (
            "open_store(local, storage_options)",
            lambda r: memstore.open_store(r, storage_options={"key": "x"}),
        ),
        ("open_store(a file)", lambda r: memstore.open_store(os.path.join(r, "zarr.json"))),
        (
            "open_store(mode=r, missing)",
            lambda r: memstore.open_store(os.path.join(r, "nope.zarr"), mode="r"),
        ),
        ("ShardSource(a directory)", lambda r: memstore.ShardSource(r, progress=False)),
        ("ShardSource(name='-x')", lambda r: memstore.ShardSource([], name="-x")),
        ("ShardSource(3)", lambda r: memstore.ShardSource(3)),
        ("ShardSource(missing)", lambda r: memstore.ShardSource(os.path.join(r, "no-{0..1}.tar"))),
    ]
    buffer_calls: list[tuple[str, Any]] = [
        ("ReservoirSamplingBuffer(2**63)", lambda: memstore.ReservoirSamplingBuffer(big)),
        (
            "ReservoirSamplingBuffer(seed=2**64)",
            lambda: memstore.ReservoirSamplingBuffer(5, seed=2**64),
        ),
        ("ReservoirSamplingBuffer(seed=-1)", lambda: memstore.ReservoirSamplingBuffer(5, seed=-1)),
        ("ReservoirSamplingBuffer(0)", lambda: memstore.ReservoirSamplingBuffer(0)),
        ("ReservoirSamplingBuffer(-1)", lambda: memstore.ReservoirSamplingBuffer(-1)),
        ("ReservoirSamplingBuffer(1.5)", lambda: memstore.ReservoirSamplingBuffer(1.5)),
        ("ReservoirSamplingBuffer('5')", lambda: memstore.ReservoirSamplingBuffer("5")),
        ("ReservoirSamplingBuffer(True)", lambda: memstore.ReservoirSamplingBuffer(True)),
        (
            "ClassBalancedBuffer(total_num_classes=0)",
            lambda: memstore.ClassBalancedBuffer(5, adaptive_size=False, total_num_classes=0),
        ),
        (
            "ClassBalancedBuffer(adaptive='no')",
            lambda: memstore.ClassBalancedBuffer(5, adaptive_size="no"),
        ),
        (
            "ExperienceBalancedBuffer(num_experiences=-2)",
            lambda: memstore.ExperienceBalancedBuffer(5, adaptive_size=False, num_experiences=-2),
        ),
        ("ParametricBuffer(groupby='x')", lambda: memstore.ParametricBuffer(5, groupby="x")),
        (
            "ParametricBuffer(selection_strategy=3)",
            lambda: memstore.ParametricBuffer(5, selection_strategy=3),
        ),
        ("Herding(model=3)", lambda: memstore.HerdingSelectionStrategy(3, "x")),
        ("Herding(layer missing)", lambda: memstore.HerdingSelectionStrategy(_model(), "nope")),
        (
            "Herding(batch_size=0)",
            lambda: memstore.HerdingSelectionStrategy(_model(), "1", batch_size=0),
        ),
        (
            "Herding(feature_cache=3)",
            lambda: memstore.HerdingSelectionStrategy(_model(), "1", feature_cache=3),
        ),
        (
            "Herding(nprobe=0)",
            lambda: memstore.HerdingSelectionStrategy(_model(), "1", approximate=True, nprobe=0),
        ),
        (
            "Experience(ids>=2**63)",
            lambda: memstore.Experience(
                np.zeros(2, int), ids=np.array([big, big + 1], dtype=np.uint64)
            ),
        ),
        (
            "Experience(targets>=2**63)",
            lambda: memstore.Experience(np.array([big, 1], dtype=np.uint64), ids=[0, 1]),
        ),
        ("Experience(ids=[-1, 0])", lambda: memstore.Experience([0, 1], ids=[-1, 0])),
        ("Experience(ids duplicate)", lambda: memstore.Experience([0, 1], ids=[3, 3])),
        ("Experience(ids float)", lambda: memstore.Experience([0, 1], ids=[0.5, 1.0])),
        ("Experience(targets 2-D)", lambda: memstore.Experience(np.zeros((2, 2), int))),
        ("Experience(targets str)", lambda: memstore.Experience(["a", "b"])),
        (
            "Experience(task_labels wrong len)",
            lambda: memstore.Experience([0, 1], task_labels=[0, 0, 0]),
        ),
        ("Experience(source=3)", lambda: memstore.Experience([0, 1], source=3)),
        ("Experience(source='-x')", lambda: memstore.Experience([0, 1], source="-x")),
        ("Experience(index=-1)", lambda: memstore.Experience([0, 1], index=-1)),
        ("Experience(index='0')", lambda: memstore.Experience([0, 1], index="0")),
        ("Experience(ids NaN)", lambda: memstore.Experience([0, 1], ids=[np.nan, 1])),
        ("update(3)", lambda: memstore.ReservoirSamplingBuffer(5).update(3)),
        (
            "update(sources=3)",
            lambda: memstore.ReservoirSamplingBuffer(5).update(memstore.Experience([0]), sources=3),
        ),
        ("resize(0)", lambda: memstore.ReservoirSamplingBuffer(5).resize(0)),
        ("resize('3')", lambda: memstore.ReservoirSamplingBuffer(5).resize("3")),
        (
            "herding update, source too short",
            lambda: memstore.ParametricBuffer(
                3, selection_strategy=memstore.HerdingSelectionStrategy(_model(), "1")
            ).update(
                memstore.Experience([0, 1, 0, 1], ids=[0, 1, 2, 30], source="train"),
                sources={"train": arr},
            ),
        ),
        (
            "herding update, no source",
            lambda: memstore.ParametricBuffer(
                3, selection_strategy=memstore.HerdingSelectionStrategy(_model(), "1")
            ).update(memstore.Experience([0, 1, 0, 1], ids=[0, 1, 2, 3], source="train")),
        ),
        ("load_state_dict(3)", lambda: memstore.ReservoirSamplingBuffer(5).load_state_dict(3)),
        ("load_state_dict({})", lambda: memstore.ReservoirSamplingBuffer(5).load_state_dict({})),
        ("buffer_from_state(3)", lambda: memstore.buffer_from_state(3)),
        (
            "ReplayDataset(mapping wrong type)",
            lambda: memstore.ReplayDataset(memstore.ReservoirSamplingBuffer(5).buffer, [arr]),
        ),
        ("ReplayDataset(exemplars=3)", lambda: memstore.ReplayDataset(3, {"train": arr})),
        ("ReplayDataset(negative id)", lambda: _replay_negative(arr)),
        (
            "GroupBalancedSampler(batch_size=0)",
            lambda: memstore.GroupBalancedSampler(memstore.ReservoirSamplingBuffer(5).buffer, 0),
        ),
        (
            "ArraySource(len mismatch)",
            lambda: memstore.ArraySource(torch.zeros(3, 2), torch.zeros(4)),
        ),
        (
            "make_sorted_indices(k=-1)",
            lambda: memstore.HerdingSelectionStrategy(
                _model(), "1"
            ).make_sorted_indices_from_features(np.zeros((4, 2), np.float32), k=-1),
        ),
        (
            "make_sorted_indices(NaN)",
            lambda: memstore.HerdingSelectionStrategy(
                _model(), "1"
            ).make_sorted_indices_from_features(np.full((4, 2), np.nan, np.float32), k=2),
        ),
        (
            "make_sorted_indices(3-D)",
            lambda: memstore.ClosestToCenterSelectionStrategy(
                _model(), "1"
            ).make_sorted_indices_from_features(np.zeros((4, 2, 2), np.float32), k=2),
        ),
        (
            "extract_features(layer missing)",
            lambda: memstore.extract_features(_model(), "nope", arr, [0, 1]),
        ),
    ]
    allowed = (TypeError, ValueError, MemstoreError)
    total = 0
    pristine = _tree_hash(root)

    def judge(label: str, fn: Any, arg: Any, copy: str | None) -> None:
        nonlocal total
        total += 1
        tally.cases += 1
        try:
            fn(*arg) if arg is not None else fn()
        except allowed:
            pass
        except Exception as err:  # noqa: BLE001
            tally.add("unnamed", f"call {label}: {type(err).__name__}: {err}")
        else:
            tally.add("accepted", f"call {label}")
        if copy is not None and _tree_hash(copy) != pristine:
            tally.add("changed", f"call {label} changed the store")

    for label, fn in store_calls:
        copy = os.path.join(work, "calls.zarr")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy, symlinks=True)
        store = memstore.open_store(copy)
        with _quiet():
            judge(label, fn, (store,), copy)
    for label, fn in open_calls:
        copy = os.path.join(work, "calls.zarr")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy, symlinks=True)
        cwd = os.getcwd()
        scratch = os.path.join(work, "cwd")
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
        os.chdir(scratch)
        try:
            with _quiet():
                judge(label, fn, (copy,), copy)
        finally:
            os.chdir(cwd)
        if os.listdir(scratch):
            tally.add("outside", f"call {label} created {os.listdir(scratch)} in the cwd")
    for label, fn in buffer_calls:
        with _quiet():
            judge(label, fn, None, None)
    return total


def _replay_negative(arr: Any) -> Any:
    buf = memstore.ReservoirSamplingBuffer(5)
    buf.update(memstore.Experience([0, 1], ids=[0, 1], source="train"))
    state = buf.state_dict()
    state["columns"]["ids"] = np.array([-1, 0], dtype=np.int64)
    buf.load_state_dict(state)
    replay = memstore.ReplayDataset(buf.buffer, {"train": arr})
    return [replay[i] for i in range(len(replay))]


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stderr(io.StringIO()):
        yield


# -- concurrent writers ---------------------------------------------------------------------------
WRITER = r"""
import json, sys, time
import numpy as np
import memstore
url, wid, commits, opts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
store = memstore.open_store(url, storage_options=opts or None)
log = []
done = 0
while done < commits:
    buf = store.load("shared")
    base = buf.origin.seq  # the commit this content was built on
    time.sleep(0.005)  # "training": widens the window in which another writer commits
    ids = np.arange(10) + 1_000_000 * (wid + 1) + 10 * done
    buf.update(memstore.Experience(ids % 3, ids=ids, source="w"))
    try:
        c = store.save("shared", buf, message=f"w{wid}-{done}")
    except memstore.ConcurrentCommitError:
        continue
    log.append([c.seq, base])
    done += 1
print(json.dumps(log))
"""


def writers(url: str, opts: dict | None, commits: int, tally: Tally) -> tuple[int, int]:
    store = memstore.open_store(url, storage_options=opts)
    store.save("shared", memstore.ReservoirSamplingBuffer(10_000, seed=0), message="start")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(w), str(commits), json.dumps(opts or {})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(3)
    ]
    lost = 0
    published = 0
    for p in procs:
        out, err = p.communicate(timeout=900)
        if p.returncode != 0:
            tally.add("unnamed", f"writer failed: {err.strip().splitlines()[-1:]}")
            continue
        for seq, base in json.loads(out):
            published += 1
            if seq != base + 1:
                lost += 1
                tally.add("lost", f"{url}: commit {seq} was built on {base}")
    final = memstore.open_store(url, storage_options=opts).load("shared")
    want = 10 * published
    if len(final) != want:
        tally.add("lost", f"{url}: final buffer has {len(final)} rows, {want} were committed")
    return published, lost


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sample 40 files")
    parser.add_argument("--s3", action="store_true", help="also race writers on SeaweedFS")
    parser.add_argument("--writers-commits", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    tally = Tally()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, "store", "m.zarr")
        sentinel = os.path.join(work, "store", "sentinel")
        os.makedirs(sentinel)
        with open(os.path.join(sentinel, "keep.txt"), "w") as fh:
            fh.write("outside the root")
        expected = build(root, os.path.join(work, "data"))
        outside_before = _tree_hash(os.path.join(work, "store", "sentinel"))
        n_files = len(_files(root))
        file_campaign(root, expected, tally, args.quick, rng)
        print(f"files done ({time.time() - t0:.0f} s): {dict(tally.counts)}", flush=True)
        after_files = tally.cases
        field_campaign(root, expected, tally)
        print(f"fields done ({time.time() - t0:.0f} s): {dict(tally.counts)}", flush=True)
        after_fields = tally.cases
        n_calls = wrong_calls(root, tally, work)
        print(f"calls done ({time.time() - t0:.0f} s): {dict(tally.counts)}", flush=True)
        published, lost = writers(
            os.path.join(work, "race.zarr"), None, args.writers_commits, tally
        )
        summary = [("local writers", published, lost)]
        if args.s3:
            from memstore.testing.s3server import start_seaweedfs

            server = start_seaweedfs(os.path.join(work, "weed"))
            try:
                server.make_bucket("race")
                published, lost = writers(
                    "s3://race/m.zarr", server.storage_options(), args.writers_commits, tally
                )
                summary.append(("s3 writers", published, lost))
            finally:
                server.stop()
        if (
            _tree_hash(sentinel) != outside_before
            or os.listdir(os.path.join(work, "store"))
            != [
                "m.zarr",
                "sentinel",
            ]
            and sorted(os.listdir(os.path.join(work, "store"))) != ["m.zarr", "sentinel"]
        ):
            tally.add("outside", "the sentinel beside the store changed")
    print(
        f"store: {n_files} files; {after_files} file mutations, "
        f"{after_fields - after_files} manifest-field changes, {n_calls} wrong calls"
    )
    for label, pub, lst in summary:
        print(f"{label}: 3 writers, {pub} commits published, {lst} lost updates")
    kinds = (
        "silent",
        "unnamed",
        "verify_ok",
        "undetected",
        "accepted",
        "changed",
        "lost",
        "outside",
    )
    print(f"{'count':<12}{'n':>6}")
    for kind in kinds:
        print(f"{kind:<12}{tally.counts[kind]:>6}")
    for kind in kinds:
        for ex in tally.examples.get(kind, []):
            print(f"  [{kind}] {ex}")
    print(f"({time.time() - t0:.0f} s)")
    failures = [k for k in kinds if k != "undetected"]  # undetected: no read depends on it
    return 0 if not any(tally.counts[k] for k in failures) else 1


if __name__ == "__main__":
    sys.exit(main())

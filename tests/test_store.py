"""The store: exact resume (in this process and in a fresh one), damage, format, bad input,
history.

Every test takes the store location from the ``store_url`` / ``storage_options`` fixtures
(local directory here), and touches files only through fsspec, so the same bodies can run
against an object store.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import fsspec
import numpy as np
import pytest
from _store_child import (
    CHILD,
    NUM_STEPS,
    POLICIES,
    apply_step,
    child_env,
    make_experience,
    make_model,
    make_sources,
    run_stream,
    state_checksum,
    strategy_for,
)

import memstore
from memstore import (
    BufferNotFoundError,
    ClosestToCenterSelectionStrategy,
    CorruptStoreError,
    DetachedStrategyError,
    FormatVersionError,
    ReadOnlyStoreError,
    ReservoirSamplingBuffer,
    SourceMismatchError,
    StoreNotFoundError,
    open_store,
)
from memstore.testing.reference import assert_state_equal

FEATURE_POLICIES = ("herding-class", "closest-task")


@pytest.fixture
def sources():
    return make_sources()


def fs_root(url: str, options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url, **(options or {}))
    return fs, root.rstrip("/")


def tree(url: str, options: dict | None) -> dict[str, str]:
    """Every path under ``url`` with a digest of its content ("dir" for directories)."""
    fs, root = fs_root(url, options)
    fs.invalidate_cache()  # another Store may have written since this instance listed
    if not fs.exists(root):
        return {}
    out = {}
    local = "file" in fs.protocol or "local" in fs.protocol
    # Object stores have no real directories (SeaweedFS lists emptied ones for a while):
    # compare files only there.
    for path, info in fs.find(root, withdirs=local, detail=True).items():
        rel = path[len(root) :]
        if info["type"] == "directory":
            out[rel] = "dir"
        else:
            out[rel] = hashlib.md5(fs.cat_file(path)).hexdigest()
    return out


def put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    fs.mkdirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def manifest(url: str, options: dict | None, name: str, seq: int) -> dict:
    fs, root = fs_root(url, options)
    return json.loads(fs.cat_file(f"{root}/buffers/{name}/commits/{seq:010d}.json"))


def snapshot_path(url, options, name, seq) -> str:
    return f"buffers/{name}/{manifest(url, options, name, seq)['snapshot']}"


# --------------------------------------------------------------------------------------------
# exact resume


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("saved_after", [1, 3])
def test_save_load_then_continue_equals_uninterrupted(
    store_url, storage_options, sources, policy, saved_after
):
    buf = run_stream(policy, saved_after, sources)
    store = open_store(store_url, storage_options=storage_options)
    commit = store.save("buf", buf, message=f"after {saved_after}", sources=sources)
    assert (commit.seq, commit.message) == (0, f"after {saved_after}")
    assert commit.sizes["rows"] == len(buf)
    assert store.next_experience("buf") == saved_after

    loaded = store.load("buf", sources=sources, selection_strategy=strategy_for(policy))
    assert type(loaded) is type(buf)
    assert_state_equal(loaded.state_dict(), buf.state_dict())
    for step in range(saved_after, NUM_STEPS):
        apply_step(loaded, step, sources)
    assert_state_equal(loaded.state_dict(), run_stream(policy, NUM_STEPS, sources).state_dict())


def test_resume_in_a_fresh_process_equals_uninterrupted(store_url, storage_options, sources):
    """Every policy, saved after 1 and after 3 steps; one child process resumes them all."""
    store = open_store(store_url, storage_options=storage_options)
    jobs, expected = [], {}
    for policy in POLICIES:
        for saved_after in (1, 3):
            name = f"{policy}-{saved_after}"
            store.save(name, run_stream(policy, saved_after, sources), sources=sources)
            jobs.append({"name": name, "policy": policy})
            expected[name] = run_stream(policy, NUM_STEPS, sources).state_dict()
    proc = subprocess.run(
        [sys.executable, CHILD, "resume", store_url, json.dumps(jobs)],
        env=child_env(storage_options),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    failures = []
    for job in jobs:
        name, policy = job["name"], job["policy"]
        assert report[name]["start"] == int(name.rsplit("-", 1)[1])
        assert report[name]["seq"] == 1
        loaded = store.load(name, selection_strategy=strategy_for(policy))
        try:
            assert_state_equal(loaded.state_dict(), expected[name])
            assert report[name]["checksum"] == state_checksum(expected[name])
        except AssertionError as err:
            failures.append(f"{name}: {err}")
    assert not failures, "\n".join(failures)


def test_feature_based_buffer_loads_detached_and_refuses_to_update(
    store_url, storage_options, sources
):
    buf = run_stream("herding-class", 3, sources)
    store = open_store(store_url, storage_options=storage_options)
    store.save("h", buf)
    loaded = store.load("h")  # no model: inspectable, replayable, not updatable
    assert_state_equal(loaded.state_dict(), buf.state_dict())
    assert loaded.buffer.ids.tolist() == buf.buffer.ids.tolist()
    before = loaded.state_dict()
    pattern = r"store\.load\(.*selection_strategy=HerdingSelectionStrategy\(model, 'feat'\)"
    with pytest.raises(DetachedStrategyError, match=pattern):
        loaded.update(make_experience(3, sources), sources=sources)
    with pytest.raises(DetachedStrategyError, match=pattern):
        loaded.resize(10, sources=sources)
    assert_state_equal(loaded.state_dict(), before)

    # A strategy of another class than the recorded one is refused.
    with pytest.raises(ValueError, match="HerdingSelectionStrategy"):
        store.load("h", selection_strategy=ClosestToCenterSelectionStrategy(make_model(), "feat"))


def test_source_fingerprint_mismatch_is_refused_unless_allowed(store_url, storage_options, sources):
    buf = run_stream("class", 3, sources)
    store = open_store(store_url, storage_options=storage_options)
    store.save("c", buf, sources=sources)
    before = tree(store_url, storage_options)

    other = dict(sources)
    a = sources["a"]
    other["a"] = memstore.ArraySource(a.inputs, (a.targets + 1) % 10)
    with pytest.raises(SourceMismatchError, match=r"'a'.*allow_source_mismatch=True"):
        store.load("c", sources=other)
    loaded = store.load("c", sources=other, allow_source_mismatch=True)
    assert_state_equal(loaded.state_dict(), buf.state_dict())
    # Same sources, a subset of them, or none at all: no complaint.
    assert_state_equal(store.load("c", sources=sources).state_dict(), buf.state_dict())
    assert_state_equal(store.load("c", sources={"b": sources["b"]}).state_dict(), buf.state_dict())
    assert len(store.load("c")) == len(buf)
    assert tree(store_url, storage_options) == before


# --------------------------------------------------------------------------------------------
# damage


@pytest.fixture
def three_commits(store_url, storage_options, sources):
    """Buffer 'b' with commits 0, 1, 2 (states after 1, 2, 3 steps) and buffer 'x' (1 commit)."""
    store = open_store(store_url, storage_options=storage_options)
    states = []
    for steps in (1, 2, 3):
        buf = run_stream("class", steps, sources)
        store.save("b", buf, message=f"steps {steps}")
        states.append(buf.state_dict())
    store.save("x", run_stream("reservoir", 2, sources))
    assert store.verify() == []
    return store, states


def _errors(problems):
    return [p for p in problems if p.severity == "error"]


def _debris(problems):
    return sorted(p.path for p in problems if p.severity == "debris")


def _damage(kind: str, url: str, options: dict | None) -> str:
    """Damage commit 2 of buffer 'b'; return the path that must be named."""
    fs, root = fs_root(url, options)
    snap = snapshot_path(url, options, "b", 2)
    if kind == "truncated chunk":
        chunk = f"{root}/{snap}/ids/c/0"
        data = fs.cat_file(chunk)
        fs.pipe_file(chunk, data[: len(data) // 2])
        return f"{snap}/ids"
    if kind == "deleted chunk":
        fs.rm_file(f"{root}/{snap}/targets/c/0")
        return f"{snap}/targets"
    if kind == "deleted array metadata":
        fs.rm_file(f"{root}/{snap}/weight/zarr.json")
        return f"{snap}/weight"
    if kind == "deleted snapshot":
        fs.rm(f"{root}/{snap}", recursive=True)
        return snap
    if kind == "garbled manifest":
        path = "buffers/b/commits/0000000002.json"
        fs.pipe_file(f"{root}/{path}", fs.cat_file(f"{root}/{path}")[:200] + b"\x00garbage")
        return path
    if kind == "manifest fields":
        path = "buffers/b/commits/0000000002.json"
        m = manifest(url, options, "b", 2)
        m["seq"] = 1
        fs.pipe_file(f"{root}/{path}", json.dumps(m).encode())
        return path
    raise AssertionError(kind)


DAMAGE = [
    "truncated chunk",
    "deleted chunk",
    "deleted array metadata",
    "deleted snapshot",
    "garbled manifest",
    "manifest fields",
]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damage_is_named_and_older_commits_stay_loadable(
    three_commits, store_url, storage_options, kind
):
    store, states = three_commits
    named = _damage(kind, store_url, storage_options)

    errors = _errors(store.verify())
    assert len(errors) == 1, errors
    assert named in errors[0].path + " " + errors[0].message

    with pytest.raises(CorruptStoreError) as info:
        store.load("b", commit=2)
    assert named in str(info.value)
    with pytest.raises(CorruptStoreError):
        store.state("b", commit=2)
    for seq in (0, 1):
        assert_state_equal(store.load("b", commit=seq).state_dict(), states[seq])
    assert len(store.load("x")) == 40

    # gc never removes a damaged commit (it is not debris), even with no grace.
    before = tree(store_url, storage_options)
    assert store.gc(keep=10, grace_seconds=0) == []
    assert tree(store_url, storage_options) == before
    assert len(_errors(store.verify())) == 1


def test_leftover_temp_files_are_debris_and_gc_removes_them(
    three_commits, store_url, storage_options
):
    store, states = three_commits
    fs, root = fs_root(store_url, storage_options)
    snaps_before = set(fs.ls(f"{root}/buffers/b/snapshots", detail=False))
    leftovers = [
        "buffers/b/commits/.tmp-0123456789ab",
        "buffers/b/snapshots/0000000003-deadbeef",
        "buffers/x/snapshots/0000000001-0badcafe",
    ]
    put(fs, f"{root}/{leftovers[0]}", b'{"seq": 3')
    put(fs, f"{root}/{leftovers[1]}/ids/c/0", b"\x01\x02")
    put(fs, f"{root}/{leftovers[2]}/zarr.json", b"{}")

    problems = store.verify()
    assert _errors(problems) == []
    assert _debris(problems) == sorted(leftovers)
    assert_state_equal(store.load("b").state_dict(), states[2])
    assert [c.seq for c in store.log("b")] == [0, 1, 2]

    # Fresh debris may belong to a writer still committing: the default grace keeps it.
    assert store.gc(keep=10) == []
    assert _debris(store.verify()) == sorted(leftovers)
    assert sorted(store.gc(keep=10, grace_seconds=0)) == sorted(leftovers)
    assert store.verify() == []
    assert set(fs.ls(f"{root}/buffers/b/snapshots", detail=False)) == snaps_before
    assert_state_equal(store.load("b").state_dict(), states[2])


def test_gc_keeps_the_snapshot_of_a_garbled_manifest(three_commits, store_url, storage_options):
    """Only the manifest is damaged: its snapshot is evidence, not debris."""
    store, _ = three_commits
    fs, root = fs_root(store_url, storage_options)
    snap = snapshot_path(store_url, storage_options, "b", 2)
    fs.pipe_file(f"{root}/buffers/b/commits/0000000002.json", b"{not json")
    assert store.gc(keep=10, grace_seconds=0) == []
    assert fs.exists(f"{root}/{snap}/ids/zarr.json")


# --------------------------------------------------------------------------------------------
# format


def test_root_of_a_newer_format_is_refused(store_url, storage_options, sources):
    store = open_store(store_url, storage_options=storage_options)
    store.save("b", run_stream("reservoir", 1, sources))
    fs, root = fs_root(store_url, storage_options)
    meta = json.loads(fs.cat_file(f"{root}/zarr.json"))
    meta["attributes"]["memstore_format"] = 2
    fs.pipe_file(f"{root}/zarr.json", json.dumps(meta).encode())
    before = tree(store_url, storage_options)
    for mode in ("r", "a"):
        with pytest.raises(FormatVersionError, match=r"memstore format 2.*Upgrade memstore"):
            open_store(store_url, mode=mode, storage_options=storage_options)
    assert tree(store_url, storage_options) == before


def test_a_plain_zarr_group_is_not_a_memstore(store_url, storage_options):
    import zarr

    zarr.open_group(store_url, mode="w", storage_options=storage_options).attrs["x"] = 1
    before = tree(store_url, storage_options)
    for mode in ("r", "a", "w-"):
        with pytest.raises(FormatVersionError, match="not a memstore"):
            open_store(store_url, mode=mode, storage_options=storage_options)
    assert tree(store_url, storage_options) == before


def test_a_directory_of_other_files_is_not_a_memstore(store_url, storage_options):
    fs, root = fs_root(store_url, storage_options)
    put(fs, f"{root}/notes.txt", b"hello")
    before = tree(store_url, storage_options)
    with pytest.raises(FormatVersionError, match="not a memstore"):
        open_store(store_url, storage_options=storage_options)
    assert tree(store_url, storage_options) == before


@pytest.mark.parametrize("keep_fields", [True, False])
def test_manifest_of_a_newer_format_is_refused(store_url, storage_options, sources, keep_fields):
    store = open_store(store_url, storage_options=storage_options)
    first = run_stream("reservoir", 1, sources)
    store.save("b", first)
    store.save("b", run_stream("reservoir", 2, sources))
    fs, root = fs_root(store_url, storage_options)
    m = manifest(store_url, storage_options, "b", 1)
    newer = (
        dict(m, memstore_format=2)
        if keep_fields
        else {"memstore_format": 2, "seq": 1, "layout": "something new"}
    )
    fs.pipe_file(f"{root}/buffers/b/commits/0000000001.json", json.dumps(newer).encode())
    with pytest.raises(FormatVersionError, match="commits/0000000001.json.*newer memstore"):
        store.load("b")
    assert_state_equal(store.load("b", commit=0).state_dict(), first.state_dict())


def test_create_only_mode_refuses_an_existing_store(store_url, storage_options):
    open_store(store_url, storage_options=storage_options)
    with pytest.raises(FileExistsError, match="w-"):
        open_store(store_url, mode="w-", storage_options=storage_options)


# --------------------------------------------------------------------------------------------
# bad input: a clear error and nothing written


@pytest.fixture
def saved(store_url, storage_options, sources):
    store = open_store(store_url, storage_options=storage_options)
    buf = run_stream("class", 2, sources)
    store.save("b", buf, message="one")
    store.save("b", buf, message="two")
    return store, buf, tree(store_url, storage_options)


def test_unknown_buffer(saved, store_url, storage_options):
    store, _, before = saved
    for call in (store.load, store.log, store.describe, store.state):
        with pytest.raises(BufferNotFoundError, match=r"No buffer named 'nope'"):
            call("nope")
    with pytest.raises(BufferNotFoundError, match=r"it holds \['b'\]"):
        store.load("nope")
    with pytest.raises(KeyError):
        store.load("nope")
    assert "nope" not in store and "b" in store
    assert store.buffers() == ["b"]
    assert store.next_experience("nope") == 0
    assert tree(store_url, storage_options) == before


def test_commit_out_of_range(saved, store_url, storage_options):
    store, buf, before = saved
    with pytest.raises(BufferNotFoundError, match=r"has no commit 7; its commits are 0\.\.1"):
        store.load("b", commit=7)
    with pytest.raises(ValueError, match="'commit' parameter"):
        store.load("b", commit=-1)
    for bad in ("1", 1.0, True):
        with pytest.raises(TypeError, match="'commit' parameter"):
            store.load("b", commit=bad)
    assert_state_equal(store.load("b", commit=1).state_dict(), buf.state_dict())
    assert tree(store_url, storage_options) == before


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "-x", "a b", "x" * 129])
def test_invalid_buffer_names(saved, store_url, storage_options, bad):
    store, buf, before = saved
    with pytest.raises(ValueError, match="buffer name"):
        store.save(bad, buf)
    with pytest.raises(ValueError, match="buffer name"):
        store.load(bad)
    assert bad not in store
    assert tree(store_url, storage_options) == before


@pytest.mark.parametrize("bad", [5, None, b"b"])
def test_non_str_buffer_names(saved, store_url, storage_options, bad):
    store, buf, before = saved
    with pytest.raises(TypeError, match="buffer name"):
        store.save(bad, buf)
    with pytest.raises(TypeError, match="buffer name"):
        store.load(bad)
    assert tree(store_url, storage_options) == before


def test_save_of_a_non_buffer(saved, store_url, storage_options):
    store, buf, before = saved
    for bad in (buf.state_dict(), None, [1, 2]):
        with pytest.raises(TypeError, match="'buffer' parameter of Store.save"):
            store.save("b", bad)
    with pytest.raises(TypeError, match="'message' parameter"):
        store.save("b", buf, message=3)
    assert tree(store_url, storage_options) == before


def test_read_only_store(saved, store_url, storage_options):
    _, buf, before = saved
    store = open_store(store_url, mode="r", storage_options=storage_options)
    with pytest.raises(ReadOnlyStoreError, match="mode='r'") as info:
        store.save("b", buf)
    assert isinstance(info.value, PermissionError)
    with pytest.raises(ReadOnlyStoreError):
        store.save("new", buf)
    with pytest.raises(ReadOnlyStoreError):
        store.gc(keep=1)
    with pytest.raises(ReadOnlyStoreError):
        store.delete_buffer("b")
    assert_state_equal(store.load("b").state_dict(), buf.state_dict())
    assert tree(store_url, storage_options) == before


def test_read_mode_on_a_missing_store(store_url, storage_options):
    with pytest.raises(StoreNotFoundError, match="mode='r'") as info:
        open_store(store_url, mode="r", storage_options=storage_options)
    assert isinstance(info.value, FileNotFoundError)
    assert tree(store_url, storage_options) == {}


def test_invalid_mode_and_url(store_url, storage_options):
    with pytest.raises(ValueError, match="'mode' parameter"):
        open_store(store_url, mode="w", storage_options=storage_options)
    with pytest.raises(TypeError, match="'url' parameter"):
        open_store(None)
    assert tree(store_url, storage_options) == {}


def test_unknown_url_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="'nosuchproto'"):
        open_store("nosuchproto://bucket/x")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    target = str(afile / "store")
    for mode in ("a", "w-", "r"):
        with pytest.raises(OSError, match="afile/store") as info:
            open_store(target, mode=mode)
        assert isinstance(info.value, memstore.MemstoreError)
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]
    assert afile.read_text() == "not a directory"


def test_storage_options_with_a_local_path(tmp_path):
    with pytest.raises(ValueError, match="storage_options"):
        open_store(str(tmp_path / "m.zarr"), storage_options={"anon": True})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# history


def test_log_load_by_commit_next_experience_and_gc(store_url, storage_options, sources):
    store = open_store(store_url, storage_options=storage_options)
    assert store.buffers() == [] and store.next_experience("b") == 0
    states = []
    for steps in range(1, 6):
        buf = run_stream("random-class", steps, sources)
        commit = store.save("b", buf, message=f"after step {steps - 1}")
        assert commit.seq == steps - 1
        assert store.next_experience("b") == steps
        states.append(buf.state_dict())
    store.save("other", ReservoirSamplingBuffer(5))

    log = store.log("b")
    assert [c.seq for c in log] == [0, 1, 2, 3, 4]
    assert [c.message for c in log] == [f"after step {k}" for k in range(5)]
    assert [c.sizes["rows"] for c in log] == [len(s["columns"]["ids"]) for s in states]
    assert len({c.id for c in log}) == 5
    assert [c.time for c in log] == sorted(c.time for c in log)
    assert store.buffers() == ["b", "other"]
    for seq, state in enumerate(states):
        assert_state_equal(store.load("b", commit=seq).state_dict(), state)
    assert_state_equal(store.load("b").state_dict(), states[-1])

    fs, root = fs_root(store_url, storage_options)
    kept = {seq: manifest(store_url, storage_options, "b", seq)["snapshot"] for seq in (3, 4)}
    removed = store.gc(keep=2, grace_seconds=0)
    assert len(removed) == 6  # three manifests and their snapshots
    commits = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/buffers/b/commits", False))
    assert commits == ["0000000003.json", "0000000004.json"]
    snaps = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/buffers/b/snapshots", False))
    assert [s for s in snaps if s != "zarr.json"] == sorted(v.split("/")[1] for v in kept.values())
    assert [c.seq for c in store.log("b")] == [3, 4]
    assert [c.seq for c in store.log("other")] == [0]
    with pytest.raises(BufferNotFoundError, match="has no commit 0"):
        store.load("b", commit=0)
    assert_state_equal(store.load("b", commit=3).state_dict(), states[3])
    assert store.next_experience("b") == 5
    assert store.verify() == []

    # The next commit continues the numbering.
    assert store.save("b", run_stream("random-class", 5, sources)).seq == 5
    with pytest.raises(ValueError, match="'keep' parameter"):
        store.gc(keep=0)


def test_describe_summarises_a_commit(store_url, storage_options, sources):
    store = open_store(store_url, storage_options=storage_options)
    buf = run_stream("class", 3, sources)
    store.save("b", buf, message="m", sources=sources)
    info = store.describe("b")
    assert info["policy"] == "ClassBalancedBuffer"
    assert info["size"] == len(buf) == sum(g["size"] for g in info["groups"])
    classes, counts = np.unique(buf.buffer.targets, return_counts=True)
    assert info["classes"] == {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
    assert info["params"]["max_size"] == buf.max_size
    assert sorted(info["sources"]) == ["a", "b"]
    assert info["sources"]["a"]["fingerprint"] == memstore.fingerprint(sources["a"])
    assert [c["message"] for c in info["commits"]] == ["m"]


def test_delete_buffer(store_url, storage_options, sources):
    store = open_store(store_url, storage_options=storage_options)
    store.save("b", run_stream("reservoir", 1, sources))
    store.save("keep", run_stream("reservoir", 1, sources))
    store.delete_buffer("b")
    assert store.buffers() == ["keep"] and "b" not in store
    with pytest.raises(BufferNotFoundError):
        store.delete_buffer("b")
    assert store.verify() == []


def test_selection_strategy_only_for_parametric_buffers(saved, store_url, storage_options):
    store = open_store(store_url, storage_options=storage_options)
    name = store.buffers()[0]
    policy = store.describe(name)["policy"]
    if policy == "ParametricBuffer":
        pytest.skip("the saved fixture buffer is parametric")
    with pytest.raises(TypeError, match="only applies to a ParametricBuffer"):
        store.load(name, selection_strategy=memstore.RandomExemplarsSelectionStrategy())

"""A reusable, backend-agnostic test-suite for memstore stores (as zarr-python's
``StoreTests``).

Subclass :class:`StoreTests` (and :class:`ConcurrencyTests`) in a test module and override the
``store_url`` / ``storage_options`` fixtures to point at a backend::

    class TestLocalStore(StoreTests):
        @pytest.fixture
        def store_url(self, tmp_path):
            return str(tmp_path / "m.zarr")

The tests cover exact resume (in this process and in a fresh one), damage, format, bad input,
history, and racing writers. They touch the store's files only through fsspec, so the same
bodies run against a local directory and an object store.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import Counter

import fsspec
import numpy as np
import pytest

import memstore
from memstore import (
    BufferNotFoundError,
    ClosestToCenterSelectionStrategy,
    ConcurrentCommitError,
    CorruptStoreError,
    DetachedStrategyError,
    FormatVersionError,
    InvalidParameterError,
    InvalidParameterTypeError,
    ReadOnlyStoreError,
    ReservoirSamplingBuffer,
    SourceMismatchError,
    StoreExistsError,
    StoreNotFoundError,
    open_store,
)
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import (
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
    writer_buffer,
)

__all__ = ["StoreTests", "ConcurrencyTests", "fs_root", "tree", "put", "manifest"]


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


class StoreTests:
    """Store behaviour every backend must show. Override ``store_url`` (a URL where no store
    exists yet, fresh per test) and, if needed, ``storage_options``."""

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("a StoreTests subclass must define the store_url fixture")

    @pytest.fixture
    def storage_options(self) -> dict | None:
        return None

    @pytest.fixture
    def sources(self):
        return make_sources()

    @pytest.mark.parametrize("policy", list(POLICIES))
    @pytest.mark.parametrize("saved_after", [1, 3])
    def test_save_load_then_continue_equals_uninterrupted(
        self, store_url, storage_options, sources, policy, saved_after
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

    def test_resume_in_a_fresh_process_equals_uninterrupted(
        self, store_url, storage_options, sources
    ):
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
            [*CHILD, "resume", store_url, json.dumps(jobs)],
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
        self, store_url, storage_options, sources
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
            store.load(
                "h", selection_strategy=ClosestToCenterSelectionStrategy(make_model(), "feat")
            )

    def test_source_fingerprint_mismatch_is_refused_unless_allowed(
        self, store_url, storage_options, sources
    ):
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
        assert_state_equal(
            store.load("c", sources={"b": sources["b"]}).state_dict(), buf.state_dict()
        )
        assert len(store.load("c")) == len(buf)
        assert tree(store_url, storage_options) == before

    @pytest.fixture
    def three_commits(self, store_url, storage_options, sources):
        """Buffer 'b' with commits 0, 1, 2 (states after 1, 2, 3 steps), buffer 'x' (1 commit)."""
        store = open_store(store_url, storage_options=storage_options)
        states = []
        for steps in (1, 2, 3):
            buf = run_stream("class", steps, sources)
            store.save("b", buf, message=f"steps {steps}")
            states.append(buf.state_dict())
        store.save("x", run_stream("reservoir", 2, sources))
        assert store.verify() == []
        return store, states

    @pytest.mark.parametrize("kind", DAMAGE)
    def test_damage_is_named_and_older_commits_stay_loadable(
        self, three_commits, store_url, storage_options, kind
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
        self, three_commits, store_url, storage_options
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

    def test_gc_keeps_the_snapshot_of_a_garbled_manifest(
        self, three_commits, store_url, storage_options
    ):
        """Only the manifest is damaged: its snapshot is evidence, not debris."""
        store, _ = three_commits
        fs, root = fs_root(store_url, storage_options)
        snap = snapshot_path(store_url, storage_options, "b", 2)
        fs.pipe_file(f"{root}/buffers/b/commits/0000000002.json", b"{not json")
        assert store.gc(keep=10, grace_seconds=0) == []
        assert fs.exists(f"{root}/{snap}/ids/zarr.json")

    def test_root_of_a_newer_format_is_refused(self, store_url, storage_options, sources):
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

    def test_a_plain_zarr_group_is_not_a_memstore(self, store_url, storage_options):
        import zarr

        zarr.open_group(store_url, mode="w", storage_options=storage_options).attrs["x"] = 1
        before = tree(store_url, storage_options)
        for mode in ("r", "a", "w-"):
            with pytest.raises(FormatVersionError, match="not a memstore"):
                open_store(store_url, mode=mode, storage_options=storage_options)
        assert tree(store_url, storage_options) == before

    def test_a_directory_of_other_files_is_not_a_memstore(self, store_url, storage_options):
        fs, root = fs_root(store_url, storage_options)
        put(fs, f"{root}/notes.txt", b"hello")
        before = tree(store_url, storage_options)
        with pytest.raises(FormatVersionError, match="not a memstore"):
            open_store(store_url, storage_options=storage_options)
        assert tree(store_url, storage_options) == before

    @pytest.mark.parametrize("keep_fields", [True, False])
    def test_manifest_of_a_newer_format_is_refused(
        self, store_url, storage_options, sources, keep_fields
    ):
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

    def test_create_only_mode_refuses_an_existing_store(self, store_url, storage_options):
        open_store(store_url, storage_options=storage_options)
        with pytest.raises(StoreExistsError, match="w-") as info:
            open_store(store_url, mode="w-", storage_options=storage_options)
        assert isinstance(info.value, FileExistsError)

    @pytest.fixture
    def saved(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        buf = run_stream("class", 2, sources)
        store.save("b", buf, message="one")
        store.save("b", buf, message="two")
        return store, buf, tree(store_url, storage_options)

    def test_unknown_buffer(self, saved, store_url, storage_options):
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

    def test_commit_out_of_range(self, saved, store_url, storage_options):
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

    @pytest.mark.parametrize(
        "bad", ["", "../x", "a/b", ".hidden", "-x", "a b", "x" * 129, "zarr.json"]
    )
    def test_invalid_buffer_names(self, saved, store_url, storage_options, bad):
        store, buf, before = saved
        with pytest.raises(ValueError, match=r"'name' parameter of Store\.save") as info:
            store.save(bad, buf)
        assert isinstance(info.value, InvalidParameterError)
        with pytest.raises(ValueError, match=r"'name' parameter of Store\.load"):
            store.load(bad)
        for call in (store.log, store.describe, store.state, store.read_source_index):
            with pytest.raises(InvalidParameterError, match="'name' parameter"):
                call(bad)
        assert bad not in store
        assert tree(store_url, storage_options) == before

    @pytest.mark.parametrize("bad", [5, None, b"b"])
    def test_non_str_buffer_names(self, saved, store_url, storage_options, bad):
        store, buf, before = saved
        with pytest.raises(TypeError, match=r"'name' parameter of Store\.save") as info:
            store.save(bad, buf)
        assert isinstance(info.value, InvalidParameterTypeError)
        with pytest.raises(TypeError, match=r"'name' parameter of Store\.load"):
            store.load(bad)
        assert bad not in store
        assert tree(store_url, storage_options) == before

    def test_save_of_a_non_buffer(self, saved, store_url, storage_options):
        store, buf, before = saved
        for bad in (buf.state_dict(), None, [1, 2]):
            with pytest.raises(TypeError, match="'buffer' parameter of Store.save"):
                store.save("b", bad)
        with pytest.raises(TypeError, match="'message' parameter"):
            store.save("b", buf, message=3)
        assert tree(store_url, storage_options) == before

    def test_read_only_store(self, saved, store_url, storage_options):
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

    def test_read_mode_on_a_missing_store(self, store_url, storage_options):
        with pytest.raises(StoreNotFoundError, match="mode='r'") as info:
            open_store(store_url, mode="r", storage_options=storage_options)
        assert isinstance(info.value, FileNotFoundError)
        assert tree(store_url, storage_options) == {}

    def test_invalid_mode_and_url(self, store_url, storage_options):
        with pytest.raises(ValueError, match="'mode' parameter"):
            open_store(store_url, mode="w", storage_options=storage_options)
        with pytest.raises(TypeError, match="'url' parameter"):
            open_store(None)
        assert tree(store_url, storage_options) == {}

    def test_log_load_by_commit_next_experience_and_gc(self, store_url, storage_options, sources):
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
        assert [s for s in snaps if s != "zarr.json"] == sorted(
            v.split("/")[1] for v in kept.values()
        )
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

    def test_describe_summarises_a_commit(self, store_url, storage_options, sources):
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

    def test_delete_buffer(self, store_url, storage_options, sources):
        store = open_store(store_url, storage_options=storage_options)
        store.save("b", run_stream("reservoir", 1, sources))
        store.save("keep", run_stream("reservoir", 1, sources))
        store.delete_buffer("b")
        assert store.buffers() == ["keep"] and "b" not in store
        with pytest.raises(BufferNotFoundError):
            store.delete_buffer("b")
        assert store.verify() == []

    def test_selection_strategy_only_for_parametric_buffers(
        self, saved, store_url, storage_options
    ):
        store = open_store(store_url, storage_options=storage_options)
        name = store.buffers()[0]
        policy = store.describe(name)["policy"]
        if policy == "ParametricBuffer":
            pytest.skip("the saved fixture buffer is parametric")
        with pytest.raises(TypeError, match="only applies to a ParametricBuffer"):
            store.load(name, selection_strategy=memstore.RandomExemplarsSelectionStrategy())


NAME = "shared"


class ConcurrencyTests:
    """Concurrent writers: exactly one wins each commit number, the other gets
    ConcurrentCommitError; readers never see a partial commit. ``tries`` saves per writer."""

    tries = 20

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("a ConcurrencyTests subclass must define the store_url fixture")

    @pytest.fixture
    def storage_options(self) -> dict | None:
        return None

    def test_the_loser_of_a_race_gets_concurrent_commit_error(self, store_url, storage_options):
        """Writer B publishes between writer A's listing and A's publish (made deterministic)."""
        a = open_store(store_url, storage_options=storage_options)
        b = open_store(store_url, storage_options=storage_options)
        first, mine, theirs = writer_buffer(0, 0), writer_buffer(0, 1), writer_buffer(1, 0)
        a.save(NAME, first)
        publish = a.files.create_if_absent

        def b_commits_first(path: str, data: bytes) -> None:
            assert b.save(NAME, theirs, message="b").seq == 1
            publish(path, data)

        a.files.create_if_absent = b_commits_first
        with pytest.raises(
            ConcurrentCommitError, match=rf"version 1 of buffer '{NAME}'.*store\.load"
        ):
            a.save(NAME, mine, message="a")
        a.files.create_if_absent = publish

        assert [(c.seq, c.message) for c in a.log(NAME)] == [(0, ""), (1, "b")]
        assert_state_equal(a.load(NAME).state_dict(), theirs.state_dict())
        assert a.verify() == []  # the loser removed its snapshot: no debris
        # Reloading and retrying is the way out.
        assert a.save(NAME, mine, message="a").seq == 2
        assert_state_equal(b.load(NAME).state_dict(), mine.state_dict())

    def test_two_writers_and_a_reader(self, store_url, storage_options):
        open_store(store_url, storage_options=storage_options)  # created before anyone races
        reader = _start(["reader", store_url, NAME], storage_options)
        writers = [
            _start(["writer", store_url, NAME, str(proc), str(self.tries)], storage_options)
            for proc in (0, 1)
        ]
        try:
            for child in (reader, *writers):
                line = child.stdout.readline().strip()
                assert line == "ready", line + child.stderr.read()[-3000:]
            for child in writers:  # start both at once
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = []
            for child in writers:
                out, err = child.communicate(timeout=120)
                assert child.returncode == 0, err[-3000:]
                outputs.append(out.split("\n"))
            out, err = reader.communicate(input="", timeout=60)
            assert reader.returncode == 0, err[-3000:]
            read_lines = out.split("\n")
        finally:
            for child in (reader, *writers):
                if child.poll() is None:
                    child.kill()

        acked: dict[int, tuple[int, str]] = {}  # seq -> (writer, digest)
        lost = Counter()
        for proc, lines in enumerate(outputs):
            results = [line for line in lines if line.startswith(("ack ", "lost"))]
            assert len(results) == self.tries and lines[-2:] == ["done", ""], lines[-5:]
            for line in results:
                if line == "lost":
                    lost[proc] += 1
                    continue
                _, seq, digest = line.split()
                assert int(seq) not in acked, f"commit {seq} acknowledged twice"
                acked[int(seq)] = (proc, digest)

        store = open_store(store_url, storage_options=storage_options)
        seqs = [c.seq for c in store.log(NAME)]
        assert seqs == sorted(acked) == list(range(len(acked)))  # one manifest per won seq
        assert len(acked) + sum(lost.values()) == 2 * self.tries
        assert sum(lost.values()) >= 1, "the writers never raced; nothing was tested"
        for seq, (proc, digest) in acked.items():
            loaded = store.load(NAME, commit=seq)
            assert state_checksum(loaded.state_dict()) == digest, f"commit {seq} of writer {proc}"
            assert store.log(NAME)[seq].message == f"p{proc}"
        assert store.verify() == []  # every commit verifies; losers left no debris

        assert not [line for line in read_lines if line.startswith("error")], read_lines[:5]
        loads = int(read_lines[-2].split()[1])
        seen = [line.split() for line in read_lines if line.startswith("seen ")]
        assert loads > 0 and seen
        for _, seq, digest in seen:
            assert acked[int(seq)][1] == digest, f"reader saw commit {seq} with another content"
        print(f"wins {len(acked)}, conflicts {dict(lost)}, reader loads {loads}, saw {len(seen)}")


def _start(args: list[str], options: dict | None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(options),
        text=True,
    )

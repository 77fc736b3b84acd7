"""The ``memstore`` command: inspect, log, diff, verify, gc (text and --json), and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import fsspec
import numpy as np
import pytest

import memstore
from memstore import open_store
from memstore.cli import main
from memstore.testing.store_child import child_env, make_sources, run_stream


@pytest.fixture
def store(store_url, storage_options):
    """Buffer 'cb' (two commits) and 'r' (one), with source fingerprints on the first."""
    sources = make_sources()
    s = open_store(store_url, storage_options=storage_options)
    s.save("cb", run_stream("class", 3, sources), message="first", sources=sources)
    s.save("cb", run_stream("class", 4, sources), message="second", overwrite=True)
    s.save("r", run_stream("reservoir", 2, sources), message="res")
    return s


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_table(store, store_url, capsys):
    buf = run_stream("class", 4, make_sources())
    code, out, err = run(capsys, "inspect", store_url, "cb")
    assert (code, err) == (0, "")
    assert "ClassBalancedBuffer" in out and f"size {len(buf)}" in out
    assert "commit 1" in out and "'second'" in out
    assert "max_size=30" in out and "adaptive_size=True" in out
    classes, counts = np.unique(buf.buffer.targets, return_counts=True)
    for c, n in zip(classes.tolist(), counts.tolist(), strict=True):
        assert re.search(rf"│ {c}\s+│ {n}\s+│", out), (c, n)
    assert re.search(r"│ 0\s+│ \S+\s+│ 30\s+│ first", out)
    assert "ReservoirSamplingBuffer" not in out  # only the named buffer

    code, out, _ = run(capsys, "inspect", store_url)
    assert code == 0 and "ClassBalancedBuffer" in out and "ReservoirSamplingBuffer" in out


def test_inspect_json(store, store_url, capsys):
    sources = make_sources()
    buf = run_stream("class", 4, sources)
    code, out, _ = run(capsys, "inspect", store_url, "cb", "--json")
    assert code == 0
    data = json.loads(out)
    (summary,) = data["buffers"]
    assert summary["policy"] == "ClassBalancedBuffer"
    assert summary["size"] == len(buf) == 30
    assert summary["num_updates"] == 4
    assert summary["commit"]["seq"] == 1 and summary["commit"]["message"] == "second"
    classes, counts = np.unique(buf.buffer.targets, return_counts=True)
    assert summary["classes"] == {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
    groups = buf.state_dict()["groups"]
    assert [g["key"] for g in summary["groups"]] == groups["keys"].tolist()
    assert [g["max_size"] for g in summary["groups"]] == groups["max_sizes"].tolist()
    assert sum(g["size"] for g in summary["groups"]) == 30
    assert [c["message"] for c in summary["commits"]] == ["first", "second"]

    code, out, _ = run(capsys, "inspect", store_url, "cb", "--commit", "0", "--json")
    first = json.loads(out)["buffers"][0]
    assert first["commit"]["seq"] == 0 and first["num_updates"] == 3
    assert first["sources"]["a"]["fingerprint"] is not None


def test_log(store, store_url, capsys):
    code, out, _ = run(capsys, "log", store_url, "cb")
    assert code == 0 and "first" in out and "second" in out
    ids = [c.id for c in store.log("cb")]
    assert all(i in out for i in ids)
    code, out, _ = run(capsys, "log", store_url, "cb", "--json")
    entries = json.loads(out)
    assert [(e["seq"], e["message"], e["id"]) for e in entries] == [
        (0, "first", ids[0]),
        (1, "second", ids[1]),
    ]
    assert entries[1]["sizes"]["rows"] == 30


def test_diff(store, store_url, capsys):
    code, out, err = run(capsys, "diff", store_url, "cb", "0", "1", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data == json.loads(json.dumps(store.diff("cb", 0, 1)))
    assert set(data) == {"buffer", "a", "b", "added", "removed", "groups", "params", "sources"}
    old, new = (run_stream("class", k, make_sources()).buffer for k in (3, 4))
    pairs = [set(zip(x.source.tolist(), x.ids.tolist(), strict=True)) for x in (old, new)]
    assert [tuple(p) for p in data["added"]] == sorted(pairs[1] - pairs[0])
    assert [tuple(p) for p in data["removed"]] == sorted(pairs[0] - pairs[1])
    assert data["sources"]["fingerprints"]["a"][1] is None  # recorded at 0 only

    code, out, err = run(capsys, "diff", store_url, "cb", "0", "1")
    assert (code, err) == (0, "")
    added, removed = len(data["added"]), len(data["removed"])
    assert f"commit 0 'first' (30 rows) -> commit 1 'second' (30 rows): +{added} added, " in out
    assert f"-{removed} removed" in out and "params: unchanged" in out
    assert "sources: a fingerprint " in out and "-> not recorded" in out
    for key, g in data["groups"].items():
        row = rf"│ {key}\s+│ {g['size'][0]} -> {g['size'][1]}\s+│ "
        row += rf"{g['max_size'][0]} -> {g['max_size'][1]}\s+│ \+{len(g['added'])}\s+│ "
        assert re.search(row + rf"-{len(g['removed'])}\s+│", out), key
    first = data["added"][0]
    assert re.search(rf"^added: .*{first[0]}: {first[1]}\b", out, re.M)


def test_verify_good_and_damaged(store, store_url, storage_options, capsys):
    code, out, _ = run(capsys, "verify", store_url)
    assert code == 0 and out.strip() == "OK"

    fs, root = fsspec.core.url_to_fs(store_url, **(storage_options or {}))
    fs.pipe_file(f"{root}/buffers/r/commits/.tmp-0000aaaabbbb", b"x")
    code, out, _ = run(capsys, "verify", store_url)
    assert code == 0  # debris alone is no damage
    assert "DEBRIS: buffers/r/commits/.tmp-0000aaaabbbb" in out and out.endswith("OK\n")

    snap = json.loads(fs.cat_file(f"{root}/buffers/cb/commits/0000000001.json"))["snapshot"]
    chunk = f"{root}/buffers/cb/{snap}/ids/c/0"
    fs.pipe_file(chunk, fs.cat_file(chunk)[:5])
    code, out, _ = run(capsys, "verify", store_url)
    assert code == 1
    assert f"ERROR: buffers/cb/{snap}" in out and f"{snap}/ids" in out
    assert "DAMAGED: 1 problem(s)" in out
    code, out, _ = run(capsys, "verify", store_url, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [p["path"] for p in report["problems"] if p["severity"] == "error"] == [
        f"buffers/cb/{snap}"
    ]


def test_gc(store, store_url, capsys):
    code, out, _ = run(capsys, "gc", store_url, "--keep", "1")
    assert code == 0
    assert "removed buffers/cb/commits/0000000000.json" in out
    assert "2 path(s) removed" in out
    assert [c.seq for c in store.log("cb")] == [1] and [c.seq for c in store.log("r")] == [0]
    code, out, _ = run(capsys, "gc", store_url, "--keep", "1", "--json")
    assert code == 0 and json.loads(out) == {"removed": []}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["log", "{url}", "nope"], "No buffer named 'nope'"),
        (["inspect", "{url}", "nope"], "No buffer named 'nope'"),
        (["inspect", "{url}", "cb", "--commit", "9"], "has no commit 9"),
        (["gc", "{url}", "--keep", "0"], "'keep' parameter"),
        (["verify", "{url}/missing"], "No memstore"),
        (["log", "{url}", "../x"], "'name' parameter of Store.log"),
        (["inspect", "{url}", "cb", "--commit", "-1"], "'commit' parameter"),
        (["verify", "nosuchproto://x"], "'nosuchproto'"),
        (["gc", "{url}/buffers/cb", "--keep", "1"], "not a memstore"),
        (["diff", "{url}", "cb", "0", "9"], "Buffer 'cb' has no commit 9"),
        (["diff", "{url}", "nope", "0", "1"], "No buffer named 'nope'"),
        (["diff", "{url}", "cb", "-1", "1"], "'a' parameter of Store.diff"),
    ],
)
def test_errors_print_one_line_and_exit_nonzero(store, store_url, capsys, argv, message):
    code, out, err = run(capsys, *(a.format(url=store_url) for a in argv))
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_module_entry_point(store, store_url):
    env = child_env()
    ok = subprocess.run(
        [sys.executable, "-m", "memstore.cli", "log", store_url, "r", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)[0]["message"] == "res"
    bad = subprocess.run(
        [sys.executable, "-m", "memstore.cli", "log", store_url, "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("memstore log: error: No buffer named 'nope'")
    assert "Traceback" not in bad.stderr


def test_maintain_store_prunes_only_an_undamaged_store(store_url, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "tools" / "maintain_store.py"
    spec = importlib.util.spec_from_file_location("maintain_store", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    store = memstore.open_store(store_url)
    buf = memstore.ReservoirSamplingBuffer(5)
    for k in range(3):
        buf.update(memstore.Experience(targets=np.arange(10), ids=np.arange(10) + 10 * k))
        store.save("b", buf)
    assert tool.main([store_url, "--keep", "2", "--grace", "0"]) == 0
    assert [c.seq for c in store.log("b")] == [1, 2]
    manifest = pathlib.Path(store_url) / "buffers" / "b" / "commits" / "0000000002.json"
    manifest.write_text("{garbled")
    assert tool.main([store_url, "--keep", "1", "--grace", "0"]) == 1
    assert "not pruning" in capsys.readouterr().err
    assert [c.seq for c in store.log("b")] == [1]  # the damaged one is skipped, nothing pruned
    assert manifest.exists()


def _edit_manifest(store_url, name, seq, edit):
    fs, root = fsspec.core.url_to_fs(store_url)
    path = f"{root}/buffers/{name}/commits/{seq:010d}.json"
    manifest = json.loads(fs.cat_file(path))
    edit(manifest)
    fs.pipe_file(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return f"buffers/{name}/commits/{seq:010d}.json"


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(num_updates=m["num_updates"] + 1),
        lambda m: m["params"].update(seed=99),
        lambda m: m.update(num_update=m.pop("num_updates")),
        lambda m: m.update(groups=[]),
        lambda m: m["arrays"].update(ids=3),
    ],
    ids=["num_updates", "seed", "renamed key", "groups a list", "array spec an int"],
)
def test_damaged_manifest_named_by_verify_and_inspect(store, store_url, capsys, edit):
    rel = _edit_manifest(store_url, "cb", 1, edit)
    code, out, err = run(capsys, "verify", store_url)
    assert code == 1 and f"ERROR: {rel}" in out and "DAMAGED: 1 problem(s)" in out
    code, out, err = run(capsys, "inspect", store_url, "cb")
    assert code == 2 and out == "" and rel in err and "Traceback" not in err
    code, out, err = run(capsys, "inspect", store_url, "cb", "--commit", "0")
    assert code == 0 and "commit 0" in out  # the older commit is intact


def test_damaged_source_record_named_by_verify(store, store_url, capsys):
    store.write_source_index("src", {"n": 1}, {"offsets": np.arange(2)})
    fs, root = fsspec.core.url_to_fs(store_url)
    fs.pipe_file(f"{root}/sources/src/record.json", b'{"_index": {"prefix": 3}}')
    code, out, err = run(capsys, "verify", store_url, "--json")
    assert code == 1 and err == ""
    problems = json.loads(out)["problems"]
    assert [p["path"] for p in problems] == ["sources/src"]
    assert "sources/src/record.json" in problems[0]["message"]


def test_gc_negative_grace_is_refused_before_anything_is_removed(store, store_url, capsys):
    code, out, err = run(capsys, "gc", store_url, "--keep", "1", "--grace", "-1")
    assert code == 2 and "grace_seconds" in err and out == ""
    assert [c.seq for c in open_store(store_url, mode="r").log("cb")] == [0, 1]

"""Shared fixtures-as-code for the store tests, and the child process they run.

Importable part: the deterministic stream (two :class:`~memstore.ArraySource` sources, five
experiences, a resize after the third), one buffer factory per policy, a seeded feature model,
and the crash/resume workers (states compared by
:func:`memstore.policies.base.state_digest`). The test in the parent and this script in a
fresh process build the same objects from the same names, so the child can resume a buffer
the parent saved.

Run as a module (``python -m memstore.testing.store_child MODE ...``; :data:`CHILD` is that
command line):

* ``resume URL JOBS_JSON`` — for each ``{"name", "policy"}`` job, load the buffer from the
  store (checking source fingerprints; herding gets its model re-attached), apply the remaining
  steps of the stream from ``store.next_experience(name)`` on, save it; prints one JSON line.
* ``writer URL NAME PROC COMMITS`` — after reading ``go`` on stdin, COMMITS times: loads the
  latest commit of NAME, adds 10 new ids (:func:`add_rows`), saves; on
  ``ConcurrentCommitError`` reloads and retries. Prints ``ack SEQ LOADED FIRST_ID`` per commit,
  then ``conflicts N`` and ``done``.
* ``gc URL KEEP`` — runs ``store.gc(keep=KEEP)`` in a loop until stdin closes; prints
  ``error ...`` on any failure, then ``runs N``.
* ``reader URL NAME`` — loads the newest commit in a loop until stdin closes; prints
  ``seen SEQ CHECKSUM`` per load and ``error ...`` on any failure.
* ``crash-server URL NAME ROWS [RUN_STATE_SIZE]`` — imports everything once, then forks a
  fresh save-loop worker per ``run`` line on stdin (so each SIGKILL costs a fork, not a 2 s
  interpreter start); the worker prints phase markers and ``ack SEQ CHECKSUM`` after each
  save returns. With ``RUN_STATE_SIZE`` each commit also carries
  :func:`crash_run_state` of its step (phase marker ``runstate`` while it is written).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

import memstore
from memstore import (
    ClassBalancedBuffer,
    ClosestToCenterSelectionStrategy,
    Experience,
    ExperienceBalancedBuffer,
    HerdingSelectionStrategy,
    ParametricBuffer,
    ReservoirSamplingBuffer,
)
from memstore.policies.base import state_digest

__all__ = [
    "CHILD",
    "NUM_STEPS",
    "POLICIES",
    "make_sources",
    "make_experience",
    "make_model",
    "strategy_for",
    "apply_step",
    "run_stream",
    "crash_buffer",
    "crash_step",
    "crash_run_state",
    "child_env",
    "add_rows",
    "main",
]

NUM_STEPS = 5
RESIZE_AFTER = 2  # step 2 ends with a resize to RESIZED
MAX_SIZE = 40
RESIZED = 30
FEATURE_DIM = 6
LAYER = "feat"

# --------------------------------------------------------------------------------------------
# the deterministic stream


def make_sources() -> dict[str, memstore.ArraySource]:
    """Two sources with random inputs and 10 classes (fixed seed)."""
    rng = np.random.default_rng(1234)
    out = {}
    for name, n in (("a", 150), ("b", 120)):
        x = rng.standard_normal((n, FEATURE_DIM)).astype(np.float32)
        y = rng.integers(0, 10, size=n)
        out[name] = memstore.ArraySource(x, y, task_labels=np.zeros(n, dtype=np.int64))
    return out


def make_experience(step: int, sources: dict[str, memstore.ArraySource]) -> Experience:
    """Step ``k``: 40 ids of source ``a`` (even k) or ``b`` (odd k), task ``k // 2``.

    Each step takes its own slice of a fixed permutation of its source, so a (source, id)
    never comes back with another task label (a buffer refuses that: IdConflictError).
    """
    name = "a" if step % 2 == 0 else "b"
    src = sources[name]
    order = np.random.default_rng(100 + (step % 2)).permutation(len(src))
    ids = np.sort(order[40 * (step // 2) : 40 * (step // 2 + 1)])
    return Experience(
        targets=src.targets[ids], ids=ids, task_labels=step // 2, source=name, index=step
    )


def make_model() -> torch.nn.Module:
    """A small model whose weights come from a fixed generator (same in every process)."""
    gen = torch.Generator().manual_seed(99)
    model = torch.nn.Sequential(
        OrderedDict(
            feat=torch.nn.Linear(FEATURE_DIM, 4),
            act=torch.nn.ReLU(),
            head=torch.nn.Linear(4, 10),
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model.eval()


def _parametric(groupby: str | None, strategy: Any = None) -> ParametricBuffer:
    return ParametricBuffer(MAX_SIZE, groupby=groupby, selection_strategy=strategy, seed=5)


POLICIES: dict[str, Any] = {
    "reservoir": lambda: ReservoirSamplingBuffer(MAX_SIZE, seed=3),
    "experience": lambda: ExperienceBalancedBuffer(MAX_SIZE, seed=3),
    "experience-fixed": lambda: ExperienceBalancedBuffer(
        MAX_SIZE, adaptive_size=False, num_experiences=NUM_STEPS, seed=3
    ),
    "class": lambda: ClassBalancedBuffer(MAX_SIZE, seed=3),
    "class-fixed": lambda: ClassBalancedBuffer(
        MAX_SIZE, adaptive_size=False, total_num_classes=10, seed=3
    ),
    "random-none": lambda: _parametric(None),
    "random-class": lambda: _parametric("class"),
    "random-task": lambda: _parametric("task"),
    "random-experience": lambda: _parametric("experience"),
    "herding-class": lambda: _parametric("class", strategy_for("herding-class")),
    "closest-task": lambda: _parametric("task", strategy_for("closest-task")),
}


def strategy_for(policy: str) -> Any:
    """The strategy a feature-based policy is (re)built with; ``None`` for the others."""
    if policy.startswith("herding"):
        return HerdingSelectionStrategy(make_model(), LAYER, batch_size=32)
    if policy.startswith("closest"):
        return ClosestToCenterSelectionStrategy(make_model(), LAYER, batch_size=32)
    return None


def apply_step(buf: memstore.ExemplarsBuffer, step: int, sources: dict) -> None:
    """One step of the stream: update with experience ``step`` (then maybe a resize)."""
    buf.update(make_experience(step, sources), sources=sources)
    if step == RESIZE_AFTER:
        buf.resize(RESIZED, sources=sources)


def run_stream(policy: str, upto: int, sources: dict | None = None) -> memstore.ExemplarsBuffer:
    """A fresh buffer of ``policy`` after steps ``0 .. upto - 1``."""
    sources = make_sources() if sources is None else sources
    buf = POLICIES[policy]()
    for step in range(upto):
        apply_step(buf, step, sources)
    return buf


# --------------------------------------------------------------------------------------------
# crash loop: a big reservoir so that each save takes ~50-150 ms


def crash_buffer(rows: int) -> ReservoirSamplingBuffer:
    return ReservoirSamplingBuffer(rows, seed=7)


def crash_step(buf: ReservoirSamplingBuffer, step: int, rows: int) -> None:
    n = rows // 2
    ids = np.arange(step * n, (step + 1) * n, dtype=np.int64)
    buf.update(Experience(targets=(ids * 7919) % 10, ids=ids, source="s", index=step))


def crash_run_state(step: int, size: int) -> dict[str, Any]:
    """The run state committed with step ``step``: a frozen tensor every commit shares (the
    store writes it once) and one that encodes the step, ``size`` float32 values each."""
    return {
        "step": step,
        "model": {
            "frozen": torch.arange(size, dtype=torch.float32),
            "head": torch.full((size,), float(step)),
        },
    }


def _emit(text: str) -> None:
    os.write(1, (text + "\n").encode())  # one write: lines of concurrent processes never mix


def _instrument(store: memstore.Store) -> None:
    """Print a marker when each phase of a commit starts (and widen the link window a bit).

    Only ever called in a forked worker, which exits after its save loop: the patches below
    (of module functions and of the store's file layer) never leak into another test.
    """
    import memstore.io.local as files_mod
    import memstore.store.snapshots as snapshots_mod

    def marked(phase: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _emit(f"phase {phase}")
            return fn(*args, **kwargs)

        return wrapper

    snapshots_mod.write_arrays = marked("write", snapshots_mod.write_arrays)
    import memstore.store.run_state as run_state_mod

    run_state_mod.RunStates.write = marked("runstate", run_state_mod.RunStates.write)
    store.files.sync_tree = marked("fsync", store.files.sync_tree)
    store.files.create_if_absent = marked("publish", store.files.create_if_absent)
    real_link = os.link

    def link(src: str, dst: str, *args: Any, **kwargs: Any) -> None:
        _emit("phase prelink")
        time.sleep(random.uniform(0, 0.004))
        real_link(src, dst, *args, **kwargs)
        _emit("phase linked")
        time.sleep(random.uniform(0, 0.004))

    class OsWithSlowLink:  # only memstore's own link is marked, not zarr's
        def __getattr__(self, attr: str) -> Any:
            return getattr(os, attr)

    OsWithSlowLink.link = staticmethod(link)
    files_mod.os = OsWithSlowLink()


def crash_worker(url: str, name: str, rows: int, run_state_size: int = 0) -> None:
    random.seed(os.getpid())
    store = open_store(url)
    _instrument(store)
    _emit("phase load")
    buf = store.load(name) if name in store else crash_buffer(rows)
    step = store.next_experience(name)
    for _ in range(50):
        _emit("phase update")
        crash_step(buf, step, rows)
        digest = state_digest(buf.state_dict())
        run = crash_run_state(step, run_state_size) if run_state_size else None
        commit = store.save(name, buf, message=f"step {step}", run_state=run)
        _emit("phase saved")
        _emit(f"ack {commit.seq} {digest}")
        step += 1


def crash_server(url: str, name: str, rows: int, run_state_size: int = 0) -> None:
    import zarr.storage  # noqa: F401  (imported once here, not in every worker)

    # Forking is only safe while this process has a single thread.
    _emit(f"ready threads={len(os.listdir('/proc/self/task'))}")
    for line in sys.stdin:
        if line.strip() != "run":
            break
        pid = os.fork()
        if pid == 0:
            code = 0
            _emit(f"worker {os.getpid()}")
            try:
                crash_worker(url, name, rows, run_state_size)
            except BaseException as err:  # report, never fall back into the server loop
                _emit(f"error {type(err).__name__}: {err}")
                code = 3
            os._exit(code)  # shape: allow os._exit is public API (no cleanup in a fork)
        _, status = os.waitpid(pid, 0)
        _emit(f"exit {pid} {status}")


# --------------------------------------------------------------------------------------------
# resume / concurrency children


def storage_options() -> dict[str, Any] | None:
    """fsspec options for the store URL, passed by the parent test in an env variable."""
    raw = os.environ.get("MEMSTORE_TEST_STORAGE_OPTIONS")
    return json.loads(raw) if raw else None


def open_store(url: str, mode: str = "a") -> memstore.Store:
    return memstore.open_store(url, mode=mode, storage_options=storage_options())


def child_env(storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment for running :data:`CHILD`: this memstore importable, one thread."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(memstore.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if storage_options:
        env["MEMSTORE_TEST_STORAGE_OPTIONS"] = json.dumps(storage_options)
    return env


CHILD = (sys.executable, "-m", "memstore.testing.store_child")  # the child's command line


def resume(url: str, jobs: list[dict[str, str]]) -> None:
    store = open_store(url)
    sources = make_sources()
    out = {}
    for job in jobs:
        name, policy = job["name"], job["policy"]
        buf = store.load(name, sources=sources, selection_strategy=strategy_for(policy))
        start = store.next_experience(name)
        for step in range(start, NUM_STEPS):
            apply_step(buf, step, sources)
        commit = store.save(name, buf, message="resumed in a child", sources=sources)
        out[name] = {
            "start": start,
            "seq": commit.seq,
            "checksum": state_digest(buf.state_dict()),
        }
    print(json.dumps(out), flush=True)


def add_rows(buf: ReservoirSamplingBuffer, first: int, n: int = 10) -> None:
    """Add ``n`` new rows with ids ``first .. first + n - 1`` (a large reservoir keeps all)."""
    ids = np.arange(first, first + n, dtype=np.int64)
    buf.update(Experience(targets=ids % 10, ids=ids, source="s"))


def writer(url: str, name: str, proc: int, commits: int) -> None:
    """Load, add 10 ids, save; on a conflict reload and apply the update again."""
    store = open_store(url)
    _emit("ready")
    sys.stdin.readline()
    conflicts = 0
    for k in range(commits):
        first = 1_000_000 * (proc + 1) + 10 * k  # unique per (process, commit)
        while True:
            try:
                buf = store.load(name)
            except memstore.BufferNotFoundError:  # the listed newest was pruned meanwhile
                continue
            loaded = buf.origin.seq
            add_rows(buf, first)
            try:
                commit = store.save(name, buf, message=f"p{proc} k{k}")
            except memstore.ConcurrentCommitError:
                conflicts += 1
                continue
            break
        _emit(f"ack {commit.seq} {loaded} {first}")
    _emit(f"conflicts {conflicts}")
    _emit("done")


def collector(url: str, keep: int) -> None:
    """Run gc until stdin closes (debris within the default grace is left alone)."""
    import select

    store = open_store(url)
    _emit("ready")
    runs = 0
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready and not sys.stdin.readline():
            break
        try:
            store.gc(keep=keep)
        except Exception as err:
            _emit(f"error {type(err).__name__}: {err}")
        runs += 1
    _emit(f"runs {runs}")


def reader(url: str, name: str) -> None:
    """Load the newest commit until stdin closes; report each distinct state seen once."""
    import select

    store = open_store(url, mode="r")
    _emit("ready")
    seen: dict[int, str] = {}
    loads = 0
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready and not sys.stdin.readline():
            break
        try:
            if name not in store:
                continue
            seq = store.log(name)[-1].seq
            buf = store.load(name, commit=seq)
        except Exception as err:
            _emit(f"error {type(err).__name__}: {err}")
            continue
        loads += 1
        digest = state_digest(buf.state_dict())
        if seen.setdefault(seq, digest) != digest:
            _emit(f"error commit {seq} changed: {seen[seq]} then {digest}")
    for seq, digest in sorted(seen.items()):
        _emit(f"seen {seq} {digest}")
    _emit(f"loads {loads}")


def main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    if mode == "resume":
        resume(url, json.loads(argv[2]))
    elif mode == "writer":
        writer(url, argv[2], int(argv[3]), int(argv[4]))
    elif mode == "gc":
        collector(url, int(argv[2]))
    elif mode == "reader":
        reader(url, argv[2])
    elif mode == "crash-server":
        crash_server(url, argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

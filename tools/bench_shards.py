"""Memories over 1 000 000 webdataset samples: throughput against bare webdataset, peak RSS.

Generates (untimed) ``--n`` synthetic samples of ``--sample-bytes`` float32 ``.npy`` inputs in
``--shards`` tar shards with ``memstore.sources.shards.write_synthetic``, warms the page cache with
one read of every shard, then runs each phase in its own subprocess (peak RSS = that process's
``ru_maxrss`` from ``os.wait4``):

(a) baseline: ``webdataset.WebDataset(urls, shardshuffle=False)`` iterating the raw samples
    (dicts of bytes, no decoding), touching each input's length; run first and again last.
    A decoded variant (``.decode().to_tuple("input.npy", "cls")``) runs over the first 10% of
    the shards, for reference only.
(b) ClassBalancedBuffer: ``ShardSource(spec, store=store)`` indexes the shards in one
    streaming pass into a fresh ``open_store`` store, then ``buffer.update`` over
    ``--experiences`` experiences (contiguous shard ranges) and ``store.save``.
(c) ParametricBuffer(groupby="class", HerdingSelectionStrategy(Linear(dim -> --feature-dim),
    feature_cache=store)) over the same experiences: the index is reused; each sample's
    input is read from the shards once and its features land in the store's feature cache;
    old exemplars' features are read back from the cache. Extraction and herding times are
    measured separately (wrapping the strategy's methods).
Streaming every sample (``ShardSource.iter_batches()``, as feature extraction over a whole
source does) is timed twice: memstore's raw-``.npy`` fast path (sequential 16 MiB reads, one
vectorised decode per read) and the webdataset pipeline taken whenever decoding is
webdataset's (``decode="torch"``: webdataset's tar reader and ``Decoder`` per sample).
(d) ReplayDataset over the ShardSource: ``DataLoader(batch_size=256, shuffle=True)`` over the
    herding memory (batches through ``__getitems__`` -> ``ShardSource.get_many``), random
    access by offset, against sequential webdataset iteration (a).

Targets (issue 4): (b) and (c) at >= 0.9x the samples/s of (a); every phase < 1.5 GB peak RSS.
The table shows wall-clock samples/s (what the targets use) and, beside it, the ratio of
samples per CPU-second (process CPU time, all threads, over the same interval), which moves
less when other jobs share the cores. OMP/MKL/OpenBLAS threads and torch threads are set to 1.
Herding's cost depends on the buffer (groups x picks x experiences), not on N, so the smaller
``--quick`` run uses a 1 000-exemplar buffer; the targets are defined for the full run.

    python tools/bench_shards.py                         # 1 000 000 samples, 100 shards
    python tools/bench_shards.py --quick                 # 100 000 samples, 100 shards
    python tools/bench_shards.py --data /tmp/shards-1m   # generate once, reuse afterwards
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch load their thread pools; children inherit

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
_MARK = "RESULT "
_RSS_TARGET = 1.5e9
_RATIO_TARGET = 0.9


# -- data -------------------------------------------------------------------------------------
def data_params(args: argparse.Namespace) -> dict:
    per_shard = -(-args.n // args.shards)
    return {
        "n": args.n,
        "sample_bytes": args.sample_bytes,
        "classes": args.classes,
        "seed": 0,
        "maxcount": per_shard,
    }


def read_marker(directory: str, params: dict) -> dict | None:
    """What a previous run generated in ``directory`` (``bench-data.json``), if the same."""
    marker = os.path.join(directory, "bench-data.json")
    if not os.path.exists(marker):
        return None
    with open(marker) as f:
        saved = json.load(f)
    if {k: saved.get(k) for k in params} != params:
        raise SystemExit(
            f"{directory} holds shards made with {saved}, not {params}; pass another --data."
        )
    return saved


def warm_page_cache(urls: list[str]) -> tuple[int, float]:
    """Read every shard once (16 MiB reads) so that every phase starts warm."""
    total, t0 = 0, time.perf_counter()
    for url in urls:
        with open(url, "rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                total += len(chunk)
    return total, time.perf_counter() - t0


# -- phases (each runs in its own process) ----------------------------------------------------
def _setup_child() -> None:
    """One torch thread; heavy imports done before the phase's CPU time is measured."""
    import torch
    import webdataset  # noqa: F401

    import memstore  # noqa: F401

    torch.set_num_threads(1)


def phase_generate(cfg: dict) -> dict:
    """Write the shards and ``bench-data.json`` (untimed)."""
    from memstore.sources.shards import write_synthetic

    params, directory = cfg["params"], cfg["directory"]
    os.makedirs(directory, exist_ok=True)
    out = write_synthetic(
        os.path.join(directory, "train-%06d.tar"),
        params["n"],
        sample_bytes=params["sample_bytes"],
        classes=params["classes"],
        seed=params["seed"],
        maxcount=params["maxcount"],
    )
    saved = {**params, "spec": out.spec}
    with open(os.path.join(directory, "bench-data.json"), "w") as f:
        json.dump(saved, f)
    return saved


def phase_idle(cfg: dict) -> dict:
    """Imports only: the fixed RSS of the interpreter with torch, webdataset and memstore;
    also reports the versions (the parent process imports nothing heavy: a child's peak RSS
    starts from its parent's, inherited through fork)."""
    import numpy as np
    import torch
    import webdataset

    import memstore

    return {
        "versions": f"memstore {memstore.__version__}, webdataset {webdataset.__version__}, "
        f"torch {torch.__version__}, numpy {np.__version__}"
    }


def phase_wds(cfg: dict) -> dict:
    import webdataset as wds

    from memstore.sources.shards import expand_spec

    urls = expand_spec(cfg["spec"])
    n = nbytes = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for sample in wds.WebDataset(urls, shardshuffle=False):
        n += 1
        nbytes += len(sample["input.npy"])
    return {
        "samples": n,
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "input_bytes": nbytes,
    }


def phase_wds_decoded(cfg: dict) -> dict:
    import webdataset as wds

    from memstore.sources.shards import expand_spec

    urls = expand_spec(cfg["spec"])
    urls = urls[: max(1, len(urls) // 10)]
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _x, _y in wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("input.npy", "cls"):
        n += 1
    return {
        "samples": n,
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "shards": len(urls),
    }


def _open_source(cfg: dict, store):
    import memstore

    return memstore.ShardSource(cfg["spec"], name="train", store=store, progress=False)


def phase_class_balanced(cfg: dict) -> dict:
    import memstore

    if os.path.exists(cfg["store"]):
        shutil.rmtree(cfg["store"])
    t0 = time.perf_counter()
    c0 = time.process_time()
    store = memstore.open_store(cfg["store"])
    src = _open_source(cfg, store)
    t1 = time.perf_counter()
    buf = memstore.ClassBalancedBuffer(max_size=cfg["buffer_size"], seed=0)
    for exp in src.experiences(by_shards=cfg["experiences"]):
        buf.update(exp)
    t2 = time.perf_counter()
    store.save("class_balanced", buf, message="bench", sources={"train": src})
    t3, cpu = time.perf_counter(), time.process_time() - c0
    return {
        "samples": len(src),
        "seconds": t3 - t0,
        "cpu": cpu,
        "index_seconds": t1 - t0,
        "update_seconds": t2 - t1,
        "save_seconds": t3 - t2,
        "indexed_shards": len(src.indexed_shards),
        "exemplars": len(buf.buffer),
    }


def phase_stream(cfg: dict) -> dict:
    """ShardSource's own sequential stream (the raw-npy fast path: decoded tensors)."""
    import memstore

    src = _open_source(cfg, memstore.open_store(cfg["store"]))
    return _time_stream(src, cfg)


def phase_stream_wds(cfg: dict) -> dict:
    """The same stream when decoding is webdataset's (``decode="torch"``): webdataset's tar
    reader and ``Decoder`` per sample, what non-``.npy`` inputs (images, ...) go through."""
    import memstore

    src = memstore.ShardSource(
        cfg["spec"],
        name="train",
        store=memstore.open_store(cfg["store"]),
        decode="torch",
        input_key="input.npy",
        progress=False,
    )
    return _time_stream(src, cfg)


def _time_stream(src, cfg: dict) -> dict:
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for ids, _inputs in src.iter_batches(batch_size=cfg["batch_size"]):
        n += len(ids)
    return {"samples": n, "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}


class _Timed:
    """Wraps a function or method, accumulating its wall time; as a class attribute it binds
    like a method (``FeatureCache.read``)."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def __get__(self, obj, owner=None):
        return self if obj is None else functools.partial(self, obj)


def phase_herding(cfg: dict) -> dict:
    import torch

    import memstore

    t0 = time.perf_counter()
    c0 = time.process_time()
    store = memstore.open_store(cfg["store"])
    src = _open_source(cfg, store)
    t_open = time.perf_counter() - t0
    dim = cfg["sample_bytes"] // 4
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(dim, cfg["feature_dim"]))
    rows_through_model = [0]
    model.register_forward_hook(
        lambda m, i, o: rows_through_model.__setitem__(0, rows_through_model[0] + o.shape[0])
    )
    strategy = memstore.HerdingSelectionStrategy(
        model, "0", feature_cache=store, batch_size=cfg["batch_size"]
    )
    extract = strategy.compute_features = _Timed(strategy.compute_features)
    herd = strategy.make_sorted_indices_from_features = _Timed(
        strategy.make_sorted_indices_from_features
    )
    from memstore.features.cache import FeatureCache

    cache_read = FeatureCache.lookup = _Timed(FeatureCache.lookup)
    cache_write = FeatureCache.write = _Timed(FeatureCache.write)
    buf = memstore.ParametricBuffer(
        cfg["buffer_size"], groupby="class", selection_strategy=strategy, seed=0
    )
    t1 = time.perf_counter()
    for exp in src.experiences(by_shards=cfg["experiences"]):
        buf.update(exp)
    t2 = time.perf_counter()
    store.save("herding", buf, message="bench", sources={"train": src})
    t3, cpu = time.perf_counter(), time.process_time() - c0
    cache = store.open_feature_cache(store.feature_caches()[0])
    return {
        "samples": len(src),
        "seconds": t3 - t0,
        "cpu": cpu,
        "open_seconds": t_open,
        "indexed_shards": len(src.indexed_shards),
        "update_seconds": t2 - t1,
        "extract_seconds": extract.seconds,
        "herding_seconds": herd.seconds,
        "herding_calls": herd.calls,
        "cache_read_seconds": cache_read.seconds,
        "cache_write_seconds": cache_write.seconds,
        "save_seconds": t3 - t2,
        "rows_through_model": rows_through_model[0],
        "features_cached": cache.num_done(),
        "exemplars": len(buf.buffer),
    }


def phase_replay(cfg: dict) -> dict:
    import torch

    import memstore

    store = memstore.open_store(cfg["store"])
    src = _open_source(cfg, store)
    buf = store.load("herding")
    replay = memstore.ReplayDataset(buf.buffer, {"train": src})
    loader = torch.utils.data.DataLoader(
        replay,
        batch_size=cfg["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    n, epochs = 0, 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while n < cfg["replay_samples"]:
        for x, _y, _task in loader:
            n += x.shape[0]
        epochs += 1
    return {
        "samples": n,
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "exemplars": len(replay),
        "epochs": epochs,
    }


PHASES = {
    "generate": phase_generate,
    "idle": phase_idle,
    "wds": phase_wds,
    "wds_decoded": phase_wds_decoded,
    "class_balanced": phase_class_balanced,
    "stream": phase_stream,
    "stream_wds": phase_stream_wds,
    "herding": phase_herding,
    "replay": phase_replay,
}


def run_phase(name: str, cfg: dict) -> dict:
    """Run one phase in a fresh interpreter; add its peak RSS (bytes) from ``os.wait4``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", name, "--config", json.dumps(cfg)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed (exit {proc.returncode}); output:\n{out}")
    line = next(x for x in out.splitlines() if x.startswith(_MARK))
    result = json.loads(line[len(_MARK) :])
    result["rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    return result


# -- report -----------------------------------------------------------------------------------
def report(results: dict, base_rate: float) -> list[str]:
    """The results table; returns the list of missed targets."""
    rows = [
        ("(a) webdataset raw iteration", "wds", True),
        ("    webdataset decoded, first 10% shards", "wds_decoded", False),
        ("    ShardSource.iter_batches stream (npy)", "stream", False),
        ("    ... through webdataset (decode=torch)", "stream_wds", False),
        ("(b) ClassBalancedBuffer: index + updates", "class_balanced", True),
        ("(c) ParametricBuffer herding, total", "herding", True),
        ("(d) ReplayDataset random access", "replay", False),
        ("(a) webdataset raw iteration, again", "wds_again", False),
        ("    imports only (torch, wds, memstore)", "idle", False),
    ]
    head = (
        f"{'phase':42s} {'samples':>8s} {'wall s':>7s} {'CPU s':>7s} {'samples/s':>9s} "
        f"{'vs (a)':>6s} {'CPU vs (a)':>10s} {'peak RSS':>9s}"
    )
    print(head)
    print("-" * len(head))
    base = results["wds"]
    base_cpu_rate = base["samples"] / base["cpu"]
    missed = []
    for label, key, target in rows:
        r = results.get(key)
        if r is None:
            continue
        rss = f"{r['rss'] / 2**20:5.0f} MiB"
        if "samples" in r:
            rate = r["samples"] / r["seconds"]
            ratio = rate / base_rate
            cpu_ratio = r["samples"] / r["cpu"] / base_cpu_rate
            print(
                f"{label:42s} {r['samples']:8d} {r['seconds']:7.2f} {r['cpu']:7.2f} {rate:9.0f} "
                f"{ratio:5.2f}x {cpu_ratio:9.2f}x {rss:>9s}"
            )
            if target and key != "wds" and ratio < _RATIO_TARGET:
                missed.append(f"{key}: {ratio:.2f}x < {_RATIO_TARGET}x")
        else:
            print(f"{label:42s} {'':8s} {'':7s} {'':7s} {'':9s} {'':6s} {'':10s} {rss:>9s}")
        if r["rss"] >= _RSS_TARGET and key != "idle":
            missed.append(f"{key}: peak RSS {r['rss'] / 1e9:.2f} GB >= 1.5 GB")
    cb, hd, rp = results["class_balanced"], results["herding"], results["replay"]
    st, sw = results["stream"], results["stream_wds"]
    print()
    print(
        f"streaming every sample: raw-npy fast path {st['samples'] / st['seconds']:.0f} "
        f"samples/s, webdataset pipeline {sw['samples'] / sw['seconds']:.0f} samples/s "
        f"(fast path {sw['seconds'] / st['seconds']:.1f}x faster)"
    )
    print(
        f"(b) index pass {cb['index_seconds']:.2f} s ({cb['indexed_shards']} shards, "
        f"{cb['samples'] / cb['index_seconds']:.0f} samples/s), updates {cb['update_seconds']:.2f} "
        f"s, save {cb['save_seconds']:.2f} s; {cb['exemplars']} exemplars"
    )
    other = hd["update_seconds"] - hd["extract_seconds"] - hd["herding_seconds"]
    print(
        f"(c) open with the saved index {hd['open_seconds']:.2f} s ({hd['indexed_shards']} "
        "shards re-indexed)\n"
        f"    feature extraction {hd['extract_seconds']:.2f} s "
        f"({hd['samples'] / hd['extract_seconds']:.0f} samples/s; {hd['rows_through_model']} "
        f"rows through the model, {hd['features_cached']} rows cached), of which feature "
        f"cache writes {hd['cache_write_seconds']:.2f} s, reads {hd['cache_read_seconds']:.2f}"
        " s (new rows and old exemplars, whole 4096-row chunks)\n"
        f"    herding {hd['herding_seconds']:.2f} s over {hd['herding_calls']} group "
        f"selections; other update work {other:.2f} s; save {hd['save_seconds']:.2f} s; "
        f"{hd['exemplars']} exemplars"
    )
    print(
        f"(d) {rp['samples']} samples = {rp['epochs']} epochs over {rp['exemplars']} exemplars: "
        f"{rp['samples'] / rp['seconds']:.0f} samples/s random access vs "
        f"{base_rate:.0f} samples/s sequential webdataset "
        f"({rp['samples'] / rp['seconds'] / base_rate:.2f}x)"
    )
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 000 samples (smoke run)")
    parser.add_argument("--n", type=int, default=None, help="samples (default 1 000 000)")
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--sample-bytes", type=int, default=3072)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument(
        "--buffer-size", type=int, default=None, help="default 10 000 (--quick: 1 000)"
    )
    parser.add_argument("--experiences", type=int, default=10)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--replay-samples", type=int, default=None, help="default n / 5")
    parser.add_argument("--data", help="shard directory: generated once, reused afterwards")
    parser.add_argument("--work", help="directory for the store (default: a temp dir)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _setup_child()
        result = PHASES[args.phase](json.loads(args.config))
        print(_MARK + json.dumps(result), flush=True)
        return 0
    if args.n is None:
        args.n = 100_000 if args.quick else 1_000_000
    if args.buffer_size is None:
        args.buffer_size = 1_000 if args.quick else 10_000
    replay_samples = args.replay_samples or max(args.n // 5, args.buffer_size)

    print("command:", shlex.join([sys.executable, *sys.argv]))
    idle = run_phase("idle", {})
    print(
        f"{idle['versions']}, python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} cpus"
    )
    print(
        "threads: "
        + ", ".join(
            f"{v}={os.environ[v]}"
            for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        )
        + ", torch.set_num_threads(1) in every phase; DataLoader num_workers=0; "
        f"load average (1, 5, 15 min) {os.getloadavg()}"
    )
    temp = tempfile.mkdtemp(prefix="bench_shards-")
    try:
        data_dir = os.path.abspath(args.data or os.path.join(temp, "data"))
        params = data_params(args)
        t0 = time.perf_counter()
        saved = read_marker(data_dir, params)
        reused = saved is not None
        if saved is None:
            saved = run_phase("generate", {"params": params, "directory": data_dir})
        spec = saved["spec"]
        urls = sorted(
            os.path.join(data_dir, f)
            for f in os.listdir(data_dir)
            if f.startswith("train-") and f.endswith(".tar")
        )
        print(
            f"data: {spec} ({len(urls)} shards, {args.n} samples of {args.sample_bytes} B "
            f"float32 .npy + cls, {args.classes} classes) "
            + ("reused" if reused else f"generated in {time.perf_counter() - t0:.0f} s (untimed)")
        )
        nbytes, secs = warm_page_cache(urls)
        print(f"page cache warmed: read {nbytes / 1e9:.2f} GB in {secs:.1f} s before the phases")
        cfg = {
            "spec": spec,
            "store": os.path.join(args.work or temp, "bench-store.zarr"),
            "sample_bytes": args.sample_bytes,
            "buffer_size": args.buffer_size,
            "experiences": args.experiences,
            "feature_dim": args.feature_dim,
            "batch_size": args.batch_size,
            "replay_samples": replay_samples,
        }
        print(
            f"buffers: max_size {args.buffer_size}, {args.experiences} experiences of "
            f"{len(urls) // args.experiences} shards; herding model Linear({args.sample_bytes // 4}"
            f", {args.feature_dim}), batch {args.batch_size}; store {cfg['store']}\n",
            flush=True,
        )
        results = {}
        for name in (
            "idle",
            "wds",
            "wds_decoded",
            "class_balanced",
            "stream",
            "stream_wds",
            "herding",
            "replay",
            "wds_again",
        ):
            results[name] = run_phase("wds" if name == "wds_again" else name, cfg)
            r = results[name]
            rate = f", {r['samples'] / r['seconds']:.0f} samples/s" if "samples" in r else ""
            print(
                f"  done {name}{rate}, peak RSS {r['rss'] / 2**20:.0f} MiB, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}\n")
        missed = report(results, results["wds"]["samples"] / results["wds"]["seconds"])
        print(
            "\ntargets (>= 0.9x webdataset for (b), (c); peak RSS < 1.5 GB):",
            "all met" if not missed else "MISSED: " + "; ".join(missed),
        )
        return 0 if not missed else 1
    finally:
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

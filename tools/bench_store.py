"""Save / load latency of a 100 000-exemplar buffer, locally and on a loopback S3 server;
then the same buffer committed with a ResNet-18-sized run state (11.7M float32 parameters,
~47 MB; ``--no-run-state`` skips it).

Targets (local disk): commit < 0.2 s, load < 0.1 s; with the run state, commit < 1 s, and a
second commit whose backbone is frozen (only the 1000-class head changed) writes only the
head. Prints medians over ``--repeat`` runs, bytes written, and ratios against the same
run's baselines (the memory-only commit; a raw write + fsync of the model's bytes).

    python tools/bench_store.py            # local, plus S3 if a server can be started
    python tools/bench_store.py --no-s3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import memstore


def make_buffer(rows: int, classes: int) -> memstore.ClassBalancedBuffer:
    rng = np.random.default_rng(0)
    buf = memstore.ClassBalancedBuffer(max_size=rows, seed=0)
    for k in range(2):
        n = rows  # two experiences of `rows` candidates each
        buf.update(
            memstore.Experience(
                targets=rng.integers(0, classes, n),
                ids=np.arange(n) + k * n,
                source="train",
                index=k,
            )
        )
    return buf


def time_store(url: str, buf, repeat: int, **open_kwargs) -> tuple[float, float]:
    store = memstore.open_store(url, **open_kwargs)
    saves, loads = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        store.save("replay", buf)
        t1 = time.perf_counter()
        loaded = store.load("replay")
        t2 = time.perf_counter()
        assert loaded.buffer.equals(buf.buffer)
        saves.append(t1 - t0)
        loads.append(t2 - t1)
    return statistics.median(saves), statistics.median(loads)


def resnet18_state(seed: int = 0) -> dict:
    """A state dict with ResNet-18's names and shapes (conv, batch-norm, fc): ~11.7M floats."""
    import torch

    shapes: dict[str, tuple] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    cin = 64
    for layer, c in enumerate((64, 128, 256, 512), 1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = (c, cin if block == 0 else c, 3, 3)
            bn(f"{p}.bn1", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if block == 0 and cin != c:
                shapes[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                bn(f"{p}.downsample.1", c)
        cin = c
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v, generator=gen) if v else torch.tensor(0, dtype=torch.int64)
        for k, v in shapes.items()
    }


def _tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def time_run_state(tmp: str, buf, repeat: int) -> dict[str, float]:
    """Commit buffer + model (first), buffer + model with a new head (second), read back."""
    import torch

    model = resnet18_state()
    nbytes = sum(t.numel() * t.element_size() for t in model.values())
    raw = np.concatenate([t.reshape(-1).numpy().view(np.uint8) for t in model.values()])
    out: dict[str, list[float]] = {k: [] for k in ("raw", "memory", "first", "second", "load")}
    written: dict[str, int] = {}
    for r in range(repeat):
        t0 = time.perf_counter()
        with open(os.path.join(tmp, f"raw-{r}"), "wb") as f:
            f.write(memoryview(raw))
            f.flush()
            os.fsync(f.fileno())
        out["raw"].append(time.perf_counter() - t0)
        store = memstore.open_store(os.path.join(tmp, f"rs-{r}.zarr"))
        t0 = time.perf_counter()
        store.save("memory-only", buf)
        out["memory"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.save("replay", buf, run_state={"model": model, "epoch": 0})
        out["first"].append(time.perf_counter() - t0)
        head = dict(model, **{"fc.weight": model["fc.weight"] + 1, "fc.bias": model["fc.bias"] + 1})
        t0 = time.perf_counter()
        store.save("replay", buf, run_state={"model": head, "epoch": 1})
        out["second"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        back = store.run_state("replay")
        out["load"].append(time.perf_counter() - t0)
        assert all(torch.equal(back["model"][k], v) for k, v in head.items())
        snaps = os.path.join(store.files.root, "buffers", "replay", "snapshots")
        first, second = sorted(n for n in os.listdir(snaps) if n != "zarr.json")
        written = {
            "first": _tree_bytes(os.path.join(snaps, first)),
            "second": _tree_bytes(os.path.join(snaps, second)),
            "memory": _tree_bytes(os.path.join(store.files.root, "buffers", "memory-only")),
        }
    med = {k: statistics.median(v) for k, v in out.items()}
    print(
        f"\nrun state: ResNet-18-shaped state dict, {len(model)} tensors, {nbytes / 1e6:.1f} MB, "
        f"with the same buffer; local disk, median of {repeat}"
    )
    rows = [
        ("raw write+fsync of the model", med["raw"], nbytes, "(I/O floor)"),
        ("commit, memory only", med["memory"], written["memory"], "(baseline)"),
        ("commit 1: memory + model", med["first"], written["first"], "< 1 s"),
        ("commit 2: frozen backbone, new head", med["second"], written["second"], "< 1 s"),
        ("run_state() read back", med["load"], nbytes, "-"),
    ]
    print(f"{'step':<38}{'s':>8}{'MB written':>12}{'x memory-only':>15}{'x raw':>8}  target")
    for label, secs, size, target in rows:
        print(
            f"{label:<38}{secs:>8.3f}{size / 1e6:>12.2f}{secs / med['memory']:>15.1f}"
            f"{secs / med['raw']:>8.1f}  {target}"
        )
    return med


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-run-state", action="store_true")
    args = parser.parse_args()
    buf = make_buffer(args.rows, args.classes)
    print(
        f"buffer: {type(buf).__name__}, {len(buf)} exemplars, {args.classes} classes; "
        f"median of {args.repeat}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        save, load = time_store(os.path.join(tmp, "m.zarr"), buf, args.repeat)
        rows.append(("local", save, load, "< 0.2 s", "< 0.1 s"))
        if not args.no_s3:
            try:
                from memstore.testing.s3server import start_seaweedfs
            except ImportError as err:
                print(f"S3 skipped: {err}")
            else:
                server = start_seaweedfs(os.path.join(tmp, "weed"))
                try:
                    server.make_bucket("bench")
                    save, load = time_store(
                        "s3://bench/m.zarr",
                        buf,
                        args.repeat,
                        storage_options=server.storage_options(),
                    )
                    rows.append(("s3 (seaweedfs, loopback)", save, load, "-", "-"))
                finally:
                    server.stop()
    print(f"{'backend':<26}{'save s':>10}{'load s':>10}  target save / load")
    for name, save, load, ts, tl in rows:
        print(f"{name:<26}{save:>10.3f}{load:>10.3f}  {ts} / {tl}")
    if not args.no_run_state:
        with tempfile.TemporaryDirectory() as tmp:
            time_run_state(tmp, buf, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

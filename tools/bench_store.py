"""Save / load latency of a 100 000-exemplar buffer, locally and on a loopback S3 server.

Targets (local disk): commit < 0.2 s, load < 0.1 s. Prints medians over ``--repeat`` runs.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

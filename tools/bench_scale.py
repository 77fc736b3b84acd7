"""Benchmark: herding and closest-to-center selection at scale, approximate vs exact.

Features (a seeded Gaussian mixture, ``N×d``) are written to a zarr v3 array with chunks
``(4096, d)`` in a temporary directory — the feature cache's layout — before any timing.
Every timed run starts from that zarr array, so its seconds *include* reading the features
(and, for the approximate mode, training and filling the IVF index):

* approximate herding (``memstore.selection.faiss_ivf.approximate_herding_order``)
  straight from the zarr array, chunk by chunk;
* exact herding (``memstore.selection.herding.exact_herding_chunked``): the zarr array is
  read once into RAM (each of the ``k`` picks scans every row, so decoding the zarr chunks
  ``k`` times would dominate), then scanned in blocks; and ``herding.herding_order`` (in
  RAM, int8 pre-scoring), which must pick the very same rows;
* closest-to-center: ``memstore.selection.closest.chunked_closest_order`` (chunked)
  against ``closest.closest_to_center_order`` (in RAM).

The herding objective is ``‖mean(picked) − mean(all)‖``; since it oscillates by ±15% from
one pick to the next, the table also gives its mean over picks ``k/2..k``. Ratios are to
exact herding at the same ``N`` in the same run.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python tools/bench_scale.py
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python tools/bench_scale.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import faiss  # before torch (OpenMP runtimes)
import numpy as np
import torch  # noqa: E402
import zarr

from memstore.selection.closest import (  # noqa: E402
    chunked_closest_order,
    closest_to_center_order,
)
from memstore.selection.faiss_ivf import (  # noqa: E402
    approximate_herding_order,
    default_nlist,
    default_nprobe,
)
from memstore.selection.herding import exact_herding_chunked, herding_order  # noqa: E402
from memstore.selection.ivf_cache import IndexCache  # noqa: E402
from memstore.selection.readers import DEFAULT_CHUNK_ROWS  # noqa: E402
from memstore.testing.quality import herding_errors  # noqa: E402

CACHE_CHUNK_ROWS = 4096


class RowPrefix:
    """The first ``n`` rows of a chunked reader, itself a chunked reader."""

    def __init__(self, reader, n: int) -> None:
        self.reader, self.shape, self.dtype = reader, (n, reader.shape[1]), reader.dtype

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        return self.reader[start:stop]


def write_mixture(path: Path, n: int, d: int, components: int, seed: int, dtype: str):
    """A seeded Gaussian mixture (unequal weights and spreads) written block by block."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((components, d)).astype(np.float32) * 2.0
    spreads = rng.uniform(0.5, 1.5, size=components).astype(np.float32)
    weights = rng.dirichlet(np.full(components, 2.0))
    arr = zarr.create_array(
        store=str(path), shape=(n, d), chunks=(CACHE_CHUNK_ROWS, d), dtype=dtype, zarr_format=3
    )
    step = 16 * CACHE_CHUNK_ROWS
    for start in range(0, n, step):
        m = min(step, n - start)
        label = rng.choice(components, size=m, p=weights)
        noise = rng.standard_normal((m, d), dtype=np.float32) * spreads[label, None]
        arr[start : start + m] = (centers[label] + noise).astype(dtype)
    return zarr.open_array(str(path), mode="r")


def stream_read(reader) -> None:
    """Decode every block once, keeping none (the bound for bytes read from the array)."""
    n = reader.shape[0]
    for start in range(0, n, DEFAULT_CHUNK_ROWS):
        reader[start : start + DEFAULT_CHUNK_ROWS]


def index_reuse(big, k: int, tmp: Path, args, herd: list) -> None:
    """Build and save the IVF index beside the features, then re-select from the saved one."""
    n = big.shape[0]
    nlist = args.nlist or default_nlist(n)
    nprobe = args.nprobe or default_nprobe(nlist)
    cache = IndexCache(zarr.open_group(str(tmp / "index.zarr"), mode="w"), "bench")
    runs = []
    for what in ("build + save index", "reuse saved index"):
        with Timer() as t:
            picks = approximate_herding_order(big, k, nlist=nlist, nprobe=nprobe, index_cache=cache)
        runs.append(picks)
        herd.append((n, f"approx, {what}", t, picks))
        print(f"N={n}: approximate herding, {what}: {t.wall:.2f} s ({load()})")
    size = cache.group[cache.name].nbytes_stored() / 2**20
    same = np.array_equal(runs[0], runs[1])
    print(f"saved index: {size:.0f} MiB on disk; picks from the saved index identical: {same}")
    print(f"peak RSS after the index runs: {peak_rss_mb():.0f} MB")


def read_all(reader) -> np.ndarray:
    n, d = reader.shape
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, DEFAULT_CHUNK_ROWS):
        out[start : start + DEFAULT_CHUNK_ROWS] = reader[start : start + DEFAULT_CHUNK_ROWS]
    return out


class Timer:
    """Wall and process-CPU seconds of a block (CPU / threads ≈ wall on idle cores)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rows (default 1M)")
    parser.add_argument("--n-small", type=int, default=200_000, help="second, smaller N")
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=10_000)
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="approximate runs at N")
    parser.add_argument("--skip-exact-1m", action="store_true", help="no exact herding at N")
    parser.add_argument(
        "--skip-herding-order", action="store_true", help="only the chunked exact herding"
    )
    parser.add_argument(
        "--approx-only",
        action="store_true",
        help="at N only the approximate runs (build, then save and reuse the index); exact "
        "herding and closest-to-center at --n-small (10^7 rows: an exact run takes hours)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N=100k, k=2000")
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_small, args.k = 100_000, 50_000, 2_000
    n, d, k = args.n, args.d, args.k

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(
        f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '<unset>')} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '<unset>')} "
        f"faiss.omp_get_max_threads()={faiss.omp_get_max_threads()} "
        f"torch.get_num_threads()={torch.get_num_threads()} cpus={os.cpu_count()}"
    )
    print(
        f"versions: python {platform.python_version()} numpy {np.__version__} "
        f"faiss {faiss.__version__} zarr {zarr.__version__} torch {torch.__version__}"
    )
    print(load())
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        with Timer() as t:
            big = write_mixture(
                Path(tmp) / "features.zarr", n, d, args.components, args.seed, args.dtype
            )
        print(
            f"data: N={n} d={d} k={k} {args.components}-component mixture, zarr v3 {args.dtype} "
            f"chunks {big.chunks}, codecs {big.compressors} (written in {t.wall:.1f} s, not timed)"
        )
        sizes = sorted({m for m in (args.n_small, n) if 0 < m <= n})
        readers = {m: big if m == n else RowPrefix(big, m) for m in sizes}
        herd: list[tuple] = []  # (N, method, Timer, picks)
        closest: list[tuple] = []  # (N, method, Timer, order)

        with Timer() as t:
            stream_read(big)
        print(f"baseline: one streaming read of the N-row zarr array (decode): {t.wall:.2f} s")

        # Approximate first, so the peak RSS printed after it is theirs alone.
        for m in sizes:
            nlist = args.nlist or default_nlist(m)
            nprobe = args.nprobe or default_nprobe(nlist)
            first = None
            for _ in range(args.repeat if m == n else 1):
                with Timer() as t:
                    picks = approximate_herding_order(readers[m], k, nlist=nlist, nprobe=nprobe)
                if first is not None and not np.array_equal(picks, first):
                    raise SystemExit("approximate herding is not deterministic across runs")
                first = picks
                herd.append((m, f"approx IVF nlist={nlist} nprobe={nprobe}", t, picks))
            print(f"N={m}: approximate herding done ({load()})")
        print(f"peak RSS after the approximate runs: {peak_rss_mb():.0f} MB")
        if args.approx_only:
            index_reuse(big, k, Path(tmp), args, herd)
        for m in sizes:
            if args.approx_only and m == n:
                continue
            with Timer() as t:
                order = chunked_closest_order(readers[m], k)
            closest.append((m, "chunked_closest_order (chunked)", t, order))
            with Timer() as t:
                order = closest_to_center_order(read_all(readers[m]), k)
            closest.append((m, "closest_to_center_order (in RAM)", t, order))

        for m in sizes:
            if m == n and (args.skip_exact_1m or args.approx_only):
                continue
            with Timer() as t:
                picks = exact_herding_chunked(read_all(readers[m]), k)
            herd.append((m, "exact herding (chunked scan)", t, picks))
            if not args.skip_herding_order:  # the in-RAM exact must pick the very same rows
                with Timer() as t:
                    same = herding_order(read_all(readers[m]), k)
                herd.append((m, "exact herding_order (in RAM)", t, same))
                if not np.array_equal(same, picks):
                    first = int(np.flatnonzero(same != picks)[0])
                    raise SystemExit(f"exact_herding_chunked != herding_order at pick {first}")
            print(f"N={m}: exact herding done ({load()})")

        print()
        print("seconds include reading the zarr array; cpu = process CPU seconds (all threads)")
        print(
            f"{'N':>9}  {'method':<32} {'wall s':>7} {'cpu s':>7} {'objective':>10} {'ratio':>6}"
            f" {'mean err k/2..k':>15} {'ratio':>6}"
        )
        half = slice(k // 2, k)
        for m in sizes:
            errs = [(meth, t, herding_errors(readers[m], p)) for mm, meth, t, p in herd if mm == m]
            base = next((e for meth, _, e in errs if meth.startswith("exact")), None)
            if base is None and m != sizes[0]:
                print(f"{'':>9}  (no exact run at N={m}: ratios n/a; see N={sizes[0]})")
            for method, t, e in errs:
                r1 = "n/a" if base is None else f"{e[-1] / base[-1]:.3f}"
                r2 = "n/a" if base is None else f"{e[half].mean() / base[half].mean():.3f}"
                print(
                    f"{m:>9}  {method:<32} {t.wall:>7.2f} {t.cpu:>7.2f} {e[-1]:>10.4g} {r1:>6}"
                    f" {e[half].mean():>15.4g} {r2:>6}"
                )
            rand = np.random.default_rng(1).choice(m, size=k, replace=False)
            e = herding_errors(readers[m], rand)
            print(
                f"{m:>9}  {'random k rows (reference)':<32} {'':>7} {'':>7} {e[-1]:>10.4g}"
                f" {'':>6} {e[half].mean():>15.4g}"
            )
        print()
        print(f"{'N':>9}  {'closest-to-center method':<36} {'wall s':>7} {'cpu s':>7} recall@k")
        for m in sizes:
            ref = next((o for mm, meth, _, o in closest if mm == m and "RAM" in meth), None)
            if ref is None:
                continue
            for mm, method, t, order in closest:
                if mm == m:
                    recall = np.intersect1d(order, ref).size / k
                    same = " (same order)" if np.array_equal(order, ref) else ""
                    print(f"{m:>9}  {method:<36} {t.wall:>7.2f} {t.cpu:>7.2f} {recall:.4f}{same}")
        print(f"\npeak RSS at the end: {peak_rss_mb():.0f} MB; {load()}")


if __name__ == "__main__":
    main()

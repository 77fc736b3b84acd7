"""Benchmark memstore's exact herding and closest-to-center against the reference loops.

The reference is a straightforward implementation of the published algorithm as Avalanche
0.6.0 runs it (float32 torch, full ``N×d`` temporaries per pick), timed in the same process,
single-threaded, on seeded data. For herding it is timed stopped after ``k`` picks and for the
full ordering Avalanche computes; memstore always stops after ``k`` picks. Every timing is the
best of ``--repeat`` runs, for the reference and for memstore alike, except memstore's herding
stopped at ``k`` and its yardstick, one float32 mat-vec: those two are timed in turn,
``--rounds`` times (each round one herding and the best of 20 mat-vecs), so that both see the
same load; a reference run (0.2–8 s) already averages the machine's noise over its own picks,
a memstore run (5–30 ms) does not. The picks are compared
with the reference's: the first ``k``, and for the full ordering either every pick (small
sizes, measured) or blocks of picks spread through the ordering (large sizes, where the full
reference ordering takes minutes and its time is estimated as mean time per pick × N).

    python tools/bench_selection.py            # N=10000 d=512 k=200 and N=2000 d=128 k=50
    python tools/bench_selection.py --quick    # small sizes, a few seconds
    python tools/bench_selection.py --scale [--quick ...]
        # selection at scale (N = 200 000 and 1 000 000, d = 128, k = 10 000): exact vs the
        # approximate FAISS mode, on 2 threads — runs tools/bench_scale.py in a subprocess
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch load their thread pools

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from math import inf  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import memstore  # noqa: E402
from memstore.testing.reference import herding_loop  # noqa: E402

FULL_SIZES = ((10_000, 512, 200), (10_000, 128, 200), (2_000, 128, 50))
MATVEC: dict[tuple[str, int, int], float] = {}  # best float32 mat-vec seconds per input
QUICK_SIZES = ((2_000, 128, 50), (500, 32, 20))


# -- reference implementations (the published loops, float32 torch) ----------------------------
# The literal Avalanche loop lives once, in memstore.testing.reference (shared with the tests).
reference_herding = herding_loop


def reference_state(features: torch.Tensor, picks: np.ndarray, i: int) -> torch.Tensor:
    """The reference's running center after the picks ``picks[:i]`` (same float32 ops)."""
    current = features.mean(dim=0) * 0
    for j, p in enumerate(picks[:i].tolist()):
        current = current * j / (j + 1) + features[p] / (j + 1)
    return current


def reference_closest(features: torch.Tensor) -> torch.Tensor:
    """Avalanche's closest-to-center order: squared distance to the mean, ``argsort``."""
    center = features.mean(dim=0)
    distances = pow(features - center, 2).sum(dim=1)
    return distances.argsort()


def stable_closest(features: torch.Tensor) -> list[int]:
    """The order memstore promises: the same distances, ties by lower index."""
    center = features.mean(dim=0)
    distances = pow(features - center, 2).sum(dim=1)
    return torch.argsort(distances, stable=True).tolist()


# -- helpers --------------------------------------------------------------------------------
def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Best wall time (seconds) of ``repeat`` calls, and the last result."""
    best, result = inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def make_data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    if kind == "relu":
        np.maximum(x, 0, out=x)
    return x


def screen_used(features: np.ndarray, k: int) -> str:
    """Which first pass memstore's exact herding takes for this input (for the table)."""
    from memstore.selection.kernels import make_scores
    from memstore.selection.scores import Float32Scores, Int8Scores, VnniScores

    xt = torch.from_numpy(features)
    c32 = xt.mean(dim=0).numpy()
    xmax = float(np.sqrt(np.einsum("ij,ij->i", features, features).max())) * 1.001
    scorer = make_scores(xt, c32, xmax, k)
    names = {Float32Scores: "float32", Int8Scores: "torch-int8", VnniScores: "vnni-int8"}
    name = names.get(type(scorer), type(scorer).__name__)
    if isinstance(scorer, VnniScores):  # the plan: query digits + look-ahead rows per pass
        return f"{name} {scorer.query_digits}+{scorer.look_ahead}"
    return name


def matvec_time(features: np.ndarray, repeat: int) -> float:
    """Best time of one plain float32 mat-vec over the features (the per-pick yardstick)."""
    v = np.random.default_rng(1).standard_normal(features.shape[1]).astype(np.float32)
    best, _ = best_time(lambda: features @ v, 20 * repeat)
    return best


@dataclass
class HerdingRow:
    data: str
    n: int
    d: int
    k: int
    screen: str
    ref_k: float
    ours_k: float
    ref_full: float
    full_measured: bool
    ours_full: float
    same_k: bool
    same_full: bool
    full_checked: int


@dataclass
class ClosestRow:
    data: str
    n: int
    d: int
    k: int
    ref: float
    ours_k: float
    ours_full: float
    same_k: bool
    same_full: bool


def bench_herding(kind, n, d, k, args, strategy) -> HerdingRow:
    x = make_data(kind, n, d, args.seed)
    xt = torch.from_numpy(x)
    ref_k, ref_picks = best_time(lambda: reference_herding(xt, k), args.repeat)
    ours_k = mv = inf
    for _ in range(args.rounds):  # in turn: the yardstick under the load of the timed runs
        mv = min(mv, matvec_time(x, 1))
        seconds, picks = best_time(lambda: strategy.make_sorted_indices_from_features(x, k), 1)
        ours_k = min(ours_k, seconds)
    ours_full, full = best_time(lambda: strategy.make_sorted_indices_from_features(x), 1)
    same_k = picks.tolist() == ref_picks
    MATVEC[(kind, n, d)] = mv
    if n * d <= args.measure_full_below:
        ref_full, ref_order = best_time(lambda: reference_herding(xt, n), 1)
        return HerdingRow(
            kind,
            n,
            d,
            k,
            screen_used(x, k),
            ref_k,
            ours_k,
            ref_full,
            True,
            ours_full,
            same_k,
            full.tolist() == ref_order,
            n,
        )
    # Full reference ordering too long: time blocks of picks spread through the ordering,
    # each started from the reference's exact state there (memstore's full order is checked
    # to be the reference's inside every block).
    block = args.block
    starts = np.linspace(0, n - block, args.blocks).astype(int).tolist()
    spent, same_full = 0.0, True
    for start in starts:
        current = reference_state(xt, full, start)
        prefix = full[:start].tolist()
        t0 = time.perf_counter()
        got = reference_herding(xt, start + block, start, prefix, current)
        spent += time.perf_counter() - t0
        same_full &= got == full[start : start + block].tolist()
    ref_full = spent / (block * len(starts)) * n
    return HerdingRow(
        kind,
        n,
        d,
        k,
        screen_used(x, k),
        ref_k,
        ours_k,
        ref_full,
        False,
        ours_full,
        same_k,
        same_full,
        block * len(starts),
    )


def bench_closest(kind, n, d, k, args, strategy) -> ClosestRow:
    x = make_data(kind, n, d, args.seed)
    xt = torch.from_numpy(x)
    ref, _ = best_time(lambda: reference_closest(xt), args.repeat)
    ours_k, picks = best_time(lambda: strategy.make_sorted_indices_from_features(x, k), args.repeat)
    ours_full, full = best_time(lambda: strategy.make_sorted_indices_from_features(x), args.repeat)
    expected = stable_closest(xt)
    return ClosestRow(
        kind,
        n,
        d,
        k,
        ref,
        ours_k,
        ours_full,
        picks.tolist() == expected[:k],
        full.tolist() == expected,
    )


def bench_closest_scale(n: int, d: int, k: int, args) -> bool:
    """Closest-to-center at scale against one float32 pass over the same features (a plain
    ``x @ v``), interleaved in one run, best of ``args.repeat`` — with its parts timed the
    same way: the center (memstore's one-pass reproduction of torch's float32 mean, and
    torch's own, which the order depends on to the last bit; their bits are compared) and
    the bounded distance pass. The order is checked against the reference's distances
    (computed blockwise, bit-identical) sorted stably."""
    from memstore.selection.center import torch_mean
    from memstore.selection.closest import (
        bounded_distances,
        closest_to_center_order,
        reference_distances,
    )

    x = make_data("gauss", n, d, args.seed)
    xt = torch.from_numpy(x)
    v = np.ones(d, dtype=np.float32)
    c = xt.mean(dim=0).numpy()
    torch_mean(x[:1000].copy())  # the kernel's probe and compile, outside the timing
    times = {"pass": inf, "mean": inf, "torch mean": inf, "distances": inf, "ours": inf}
    runs = {
        "pass": lambda: x @ v,
        "mean": lambda: torch_mean(x),
        "torch mean": lambda: xt.mean(dim=0),
        "distances": lambda: bounded_distances(x, c),
        "ours": lambda: closest_to_center_order(x, k),
    }
    for _ in range(args.repeat):
        for name, run in runs.items():
            t0 = time.perf_counter()
            out = run()
            times[name] = min(times[name], time.perf_counter() - t0)
            if name == "ours":
                order = out
    ref = reference_distances(xt, xt.mean(dim=0))
    expected = np.argsort(ref, kind="stable")[:k]
    same = bool(np.array_equal(order, expected))
    same_center = bool(np.array_equal(torch_mean(x).view(np.int32), c.view(np.int32)))
    one = times["pass"]
    print(
        f"\nClosestToCenter at scale, N={n} d={d} k={k}: one float32 pass {ms(one)} ms; "
        f"ours {ms(times['ours'])} ms = {times['ours'] / one:.2f}x one pass, of which the "
        f"center {ms(times['mean'])} ms ({times['mean'] / one:.2f}x; torch's own mean "
        f"{ms(times['torch mean'])} ms = {times['torch mean'] / one:.2f}x, features at "
        f"{x.ctypes.data % 64} mod 64 bytes; same bits: {same_center}) and the bounded "
        f"distance pass {ms(times['distances'])} ms ({times['distances'] / one:.2f}x); "
        f"identical order: {same}"
    )
    return same and same_center


def bench_chunked_scale(n: int, d: int, k: int, picks: int, args) -> None:
    """Exact herding over a chunked reader (an ``np.memmap`` of float32 features, as a
    feature cache read once into a file would be) against a plain streaming read of the
    same bytes (``x @ v`` over the memmap: one sgemv), interleaved in one run. Each pick
    reads the whole matrix once; the per-pick time is measured over ``picks`` picks
    (after the first, which includes the ‖x‖² / mean pass) and extrapolated to ``k``."""
    import tempfile

    from memstore.selection.herding import exact_herding_chunked

    x = make_data("gauss", n, d, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.memmap(f"{tmp}/x.f32", dtype=np.float32, mode="w+", shape=(n, d))
        mm[:] = x
        mm.flush()
        del x
        v = np.ones(d, dtype=np.float32)
        stream, one, many = inf, inf, inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            mm @ v
            stream = min(stream, time.perf_counter() - t0)
            t0 = time.perf_counter()
            exact_herding_chunked(mm, 1)
            one = min(one, time.perf_counter() - t0)
            t0 = time.perf_counter()
            exact_herding_chunked(mm, 1 + picks)
            many = min(many, time.perf_counter() - t0)
        per_pick = (many - one) / picks
        nbytes = n * d * 4
        print(
            f"\nExact herding over a chunked reader (memmap float32), N={n} d={d}: "
            f"{nbytes / 2**20:.0f} MiB read per pick (+ {n * 9 / 2**20:.0f} MiB of ‖x‖², mask); "
            f"streaming read of those bytes {ms(stream)} ms ({nbytes / stream / 2**30:.1f} GiB/s); "
            f"per pick {ms(per_pick)} ms = {per_pick / stream:.2f}x the streaming read "
            f"(over {picks} picks; k={k} ≈ {per_pick * k:.0f} s)"
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def print_tables(herding: list[HerdingRow], closest: list[ClosestRow]) -> None:
    print("\nHerding — reference loop (float32 torch) vs memstore exact herding, k picks")
    head = (
        f"{'data':<6}{'N':>7}{'d':>5}{'k':>5} {'pass':<12}{'ref@k ms':>11}{'ours@k ms':>11}"
        f"{'ratio':>8}{'ref/pick':>10}{'ours/pick':>10}{'ref full ms':>14}{'ratio':>9}"
        f"{'ours full ms':>14}  identical@k  identical full"
    )
    print(head)
    print("-" * len(head))
    for r in herding:
        full = ms(r.ref_full) + ("" if r.full_measured else "*")
        checked = "all" if r.full_measured else f"{r.full_checked} spread"
        print(
            f"{r.data:<6}{r.n:>7}{r.d:>5}{r.k:>5} {r.screen:<12}{ms(r.ref_k):>11}"
            f"{ms(r.ours_k):>11}{r.ref_k / r.ours_k:>7.1f}x{r.ref_k / r.k * 1e3:>10.3f}"
            f"{r.ours_k / r.k * 1e3:>10.3f}{full:>14}{r.ref_full / r.ours_k:>8.0f}x"
            f"{ms(r.ours_full):>14}  {str(r.same_k):<11}  {r.same_full} ({checked})"
        )
    if any(not r.full_measured for r in herding):
        print(
            "* estimated: mean measured time per reference pick over the spread blocks × N "
            "(each block starts from the reference's exact state at that position)."
        )
    print("  ratio (2nd) = reference full ordering / memstore's k picks (what a buffer keeps).")
    print("\nCost per pick (setup included) against one float32 mat-vec over the same features")
    for r in herding:
        mv = MATVEC[(r.data, r.n, r.d)]
        print(
            f"{r.data:<6}{r.n:>7}{r.d:>5}{r.k:>5} {r.screen:<12} mat-vec {mv * 1e3:.3f} ms, "
            f"ours/pick {r.ours_k / r.k * 1e3:.3f} ms = {r.ours_k / r.k / mv:.2f}x mat-vec"
        )
    print("\nClosestToCenter — reference (distances + argsort) vs memstore (top-k, stable)")
    head = (
        f"{'data':<6}{'N':>7}{'d':>5}{'k':>5}{'ref ms':>10}{'ours@k ms':>11}{'ratio':>8}"
        f"{'ours full ms':>14}{'ratio':>8}  identical@k  identical full"
    )
    print(head)
    print("-" * len(head))
    for r in closest:
        print(
            f"{r.data:<6}{r.n:>7}{r.d:>5}{r.k:>5}{ms(r.ref):>10}{ms(r.ours_k):>11}"
            f"{r.ref / r.ours_k:>7.1f}x{ms(r.ours_full):>14}{r.ref / r.ours_full:>7.1f}x  "
            f"{str(r.same_k):<11}  {r.same_full}"
        )
    print("  identical = same order as the reference's distances sorted with ties by index.")


def run_scale(argv: list[str]) -> int:
    """The at-scale benchmark runs on both cores, so in its own process and thread settings."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_scale.py")
    return subprocess.call([sys.executable, script, *argv], env=env)


def main(argv: list[str] | None = None) -> int:

    argv = sys.argv[1:] if argv is None else argv
    if "--scale" in argv:
        return run_scale([a for a in argv if a != "--scale"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=None, help="timing runs (best kept)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of memstore's herding at k and the mat-vec, timed in turn (best kept)",
    )
    parser.add_argument("--blocks", type=int, default=6, help="spread blocks (large N)")
    parser.add_argument("--block", type=int, default=50, help="picks per spread block")
    parser.add_argument(
        "--measure-full-below",
        type=int,
        default=2_000_000,
        help="measure the full reference ordering when N·d is at most this",
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 3
    if args.rounds is None:
        args.rounds = 3 if args.quick else 10
    torch.set_num_threads(1)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    print(
        f"memstore {memstore.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{platform.machine()} {platform.processor() or ''}".rstrip()
        + f", torch threads {torch.get_num_threads()}, best of {args.repeat} runs"
        + f" (herding at k and its mat-vec: best of {args.rounds} rounds in turn)"
    )
    model = torch.nn.Sequential(OrderedDict(feat=torch.nn.Identity()))
    herd = memstore.HerdingSelectionStrategy(model, "feat")
    close = memstore.ClosestToCenterSelectionStrategy(model, "feat")
    herding, closest = [], []
    for n, d, k in sizes:
        for kind in ("gauss", "relu"):
            herding.append(bench_herding(kind, n, d, k, args, herd))
            closest.append(bench_closest(kind, n, d, k, args, close))
            print(f"  done {kind} N={n} d={d} k={k}", flush=True)
    print_tables(herding, closest)
    n_scale = 100_000 if args.quick else 1_000_000
    scale_ok = bench_closest_scale(n_scale, 128, n_scale // 100, args)
    bench_chunked_scale(n_scale, 128, n_scale // 100, 3 if args.quick else 10, args)
    ok = (
        scale_ok
        and all(r.same_k and r.same_full for r in herding)
        and all(r.same_k and r.same_full for r in closest)
    )
    print("\nall picks identical to the reference:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

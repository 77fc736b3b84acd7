"""The first-pass kernels exact herding could use, timed back to back on one thread.

Why herding's per-pick cost has the floor it has here: one float32 mat-vec over ``N×d``
features (numpy, the yardstick of ``tools/bench_selection.py``) against the low-precision
kernels on offer — torch's weight-only int8 kernel (memstore's fallback) for 1, 2 and 16
queries, fbgemm's dynamically quantized ``Linear`` (and its weight packing), bf16,
``torch._int_mm``, int8 passes compiled by numba (what LLVM makes of a plain loop) and
memstore's AVX-512 VNNI pass (the one exact herding uses where the CPU has it) — plus
torch's float32 mean on numpy- and torch-allocated arrays against memstore's one-pass
reproduction (the closest-to-center floor) and how often herding's next pick is among the
current best rows (whether speculating the next picks could batch the passes). Best of
``--repeat`` calls.

    OMP_NUM_THREADS=1 python tools/bench_kernels.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch load their thread pools

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from memstore.selection.center import torch_mean  # noqa: E402
from memstore.selection.herding import herding_order  # noqa: E402


def numba_passes():
    """Two int8 first passes as plain numba loops: int8 rows · float32 query (reassociation
    allowed, so LLVM vectorises the sum) and int8 rows · int8 query in int32 (exact)."""
    import numba

    @numba.njit(nogil=True, fastmath={"reassoc", "contract"})
    def f32_query(q, t, out):
        for j in range(q.shape[0]):
            acc = np.float32(0.0)
            for c in range(q.shape[1]):
                acc += np.float32(q[j, c]) * t[c]
            out[j] = acc

    @numba.njit(nogil=True)
    def i8_query(q, a, out):
        for j in range(q.shape[0]):
            acc = np.int32(0)
            for c in range(q.shape[1]):
                acc = np.int32(acc + np.int32(q[j, c]) * np.int32(a[c]))
            out[j] = acc

    return f32_query, i8_query


def vnni_pass(x: np.ndarray, repeat: int) -> float:
    """memstore's VNNI first pass (``VnniScores.scores``: the query's int8 digits — two,
    or one where the rows sit in cache — one read of the blocked int8 copy, every row's
    float32 score); NaN where it cannot run."""
    from memstore.selection.scores import VnniScores, vnni_usable

    if not vnni_usable(*x.shape):
        return float("nan")
    c32 = x.mean(axis=0)
    scorer = VnniScores(x, c32, float(np.sqrt((x.astype(np.float64) ** 2).sum(axis=1).max())))
    tp = np.cos(np.arange(x.shape[1]) * 0.3)
    return best_ms(lambda: scorer.scores(tp, float(np.linalg.norm(tp))), repeat)


def vnni_widths(x: np.ndarray, repeat: int) -> dict[int, float]:
    """memstore's integer VNNI pass alone (no scores) with each width of digit rows its plans
    use — the query's one or two digits and 0, 1 or 4 look-ahead rows
    (``VnniScores.pass_seconds``) — best of ``repeat`` each, interleaved; NaN where it
    cannot run."""
    from memstore.selection.scores import WIDTHS, VnniScores, vnni_usable

    if not vnni_usable(*x.shape):
        return {w: float("nan") for w in (1, 2, 3, 6)}
    xmax = float(np.sqrt((x.astype(np.float64) ** 2).sum(axis=1).max()))
    scorer = VnniScores(x, x.mean(axis=0), xmax, plan=(2, 4))
    times: dict[int, list[float]] = {w: [] for w in WIDTHS}
    for _ in range(repeat + 1):  # the first of each warms up
        for width in WIDTHS:
            times[width].append(scorer.pass_seconds(width))
    return {w: min(t[1:]) * 1e3 for w, t in times.items()}


def best_ms(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def kernels(n: int, d: int, repeat: int) -> None:
    x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    v = np.ones(d, dtype=np.float32)
    q = torch.randint(-127, 127, (n, d), dtype=torch.int8)
    scales = torch.ones(n, dtype=torch.bfloat16)
    mv = best_ms(lambda: x @ v, repeat)
    rows = [("numpy float32 mat-vec", mv)]
    for m in (1, 2, 16):
        a = torch.randn(m, d).bfloat16()
        t = best_ms(lambda a=a: torch._weight_int8pack_mm(a, q, scales), repeat)
        rows.append((f"torch int8 (_weight_int8pack_mm), {m} queries", t))
    xb, vb = torch.from_numpy(x).bfloat16(), torch.from_numpy(v).bfloat16()
    rows.append(("torch bf16 mat-vec", best_ms(lambda: xb @ vb, repeat)))
    a8 = torch.randint(-127, 127, (1, d), dtype=torch.int8)
    rows.append(("torch._int_mm, 1 query", best_ms(lambda: torch._int_mm(a8, q.T), repeat)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch
        w = torch.quantize_per_channel(
            torch.from_numpy(x), torch.full((n,), 0.03, dtype=torch.float64),
            torch.zeros(n, dtype=torch.long), 0, torch.qint8,
        )  # fmt: skip
        t0 = time.perf_counter()
        packed = torch.ops.quantized.linear_prepack(w, None)
        pack = (time.perf_counter() - t0) * 1e3
        xq = torch.randn(1, d)
        dyn = best_ms(lambda: torch.ops.quantized.linear_dynamic(xq, packed, False), repeat)
    rows.append((f"fbgemm dynamic int8 Linear (packing {pack:.1f} ms)", dyn))
    f32_query, i8_query = numba_passes()
    qn, out32, outi = q.numpy(), np.empty(n, dtype=np.float32), np.empty(n, dtype=np.int32)
    a8n = a8.numpy()[0].copy()
    rows.append(
        ("numba int8 rows x float32 query", best_ms(lambda: f32_query(qn, v, out32), repeat))
    )
    rows.append(
        ("numba int8 rows x int8 query (int32)", best_ms(lambda: i8_query(qn, a8n, outi), repeat))
    )
    rows.append(("memstore VNNI pass (int8 query digits, scores)", vnni_pass(x, repeat)))
    for width, t in vnni_widths(x, repeat).items():
        rows.append((f"memstore VNNI integer pass, {width} digit rows", t))
    print(f"\nOne pass over N={n} d={d}, best of {repeat} (ms; ratio to the float32 mat-vec)")
    for name, t in rows:
        print(f"  {name:52s} {t:8.3f}  {t / mv:5.2f}x")


def mean_alignment(n: int, d: int, repeat: int) -> None:
    x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    t = torch.empty(n, d)
    t.copy_(torch.from_numpy(x))
    v = np.ones(d, dtype=np.float32)
    one = best_ms(lambda: x @ v, repeat)
    un = best_ms(lambda: torch.from_numpy(x).mean(dim=0), repeat)
    al = best_ms(lambda: t.mean(dim=0), repeat)
    ours = best_ms(lambda: torch_mean(x), repeat)
    same = np.array_equal(
        torch_mean(x).view(np.int32), torch.from_numpy(x).mean(0).numpy().view(np.int32)
    )
    print(
        f"\ntorch float32 mean, N={n} d={d}: one numpy pass {one:.1f} ms; numpy-allocated "
        f"({x.ctypes.data % 64} mod 64 bytes) {un:.1f} ms = {un / one:.2f}x; torch-allocated "
        f"({t.data_ptr() % 64} mod 64) {al:.1f} ms = {al / one:.2f}x; same bits: "
        f"{torch.equal(torch.from_numpy(x).mean(dim=0), t.mean(dim=0))}; memstore's one-pass "
        f"reproduction (memstore.selection.center) {ours:.1f} ms = {ours / one:.2f}x, "
        f"same bits: {same}"
    )


def next_pick_ranks(n: int, d: int, k: int) -> None:
    for kind in ("gauss", "relu"):
        x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
        if kind == "relu":
            np.maximum(x, 0, out=x)
        picks = herding_order(x, k)
        y = (x - x.mean(axis=0)).astype(np.float64)
        sq = np.einsum("ij,ij->i", y, y)
        t = np.zeros(d)
        ranks = []
        for i in range(k - 1):
            score = sq - 2 * (y @ t)
            score[picks[:i]] = np.inf
            ranks.append(int(np.flatnonzero(np.argsort(score) == picks[i + 1])[0]))
            t -= y[picks[i]]
        r = np.asarray(ranks)
        share = ", ".join(f"best {b}: {np.mean(r < b):.2f}" for b in (2, 4, 16, 32))
        print(f"  {kind} N={n} d={d}: next pick among the current {share}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    kernels(10_000, 512, args.repeat)
    kernels(10_000, 128, args.repeat)
    mean_alignment(1_000_000, 128, max(3, args.repeat // 10))
    print("\nHerding: how often the next pick is among the current best rows (k=200)")
    for d in (512, 128):
        next_pick_ranks(10_000, d, 200)


if __name__ == "__main__":
    main()

"""Per-experience update time: Avalanche's ParametricBuffer + herding vs memstore's drop-in.

Both policies see the same class-incremental stream (``nc_benchmark`` over synthetic
features) in the same run, with the same model; each update is timed on its own, and the
memories are compared (herding is deterministic: they must be equal).

Usage: ``python tools/bench_avalanche.py [--rows-per-class 1000] [--dim 128]
[--experiences 5] [--classes-per-exp 2] [--mem 200]`` (needs ``memstore[avalanche]``).
"""

from __future__ import annotations

import argparse
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from avalanche.benchmarks import nc_benchmark  # noqa: E402
from avalanche.training import storage_policy as av  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import memstore.avalanche as ms  # noqa: E402
from memstore.avalanche.chain import resolve_rows  # noqa: E402


class _Agent:
    """What a storage policy reads of a training strategy."""

    def __init__(self, experience, batch: int) -> None:
        self.experience, self.device, self.eval_mb_size = experience, "cpu", batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-class", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--experiences", type=int, default=5)
    parser.add_argument("--classes-per-exp", type=int, default=2)
    parser.add_argument("--mem", type=int, default=200)
    args = parser.parse_args()
    classes = args.experiences * args.classes_per_exp
    n = args.rows_per_class * classes
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, args.dim, generator=gen) + y[:, None].float()
    data = TensorDataset(x, y)
    data.targets = y.tolist()
    bench = nc_benchmark(data, data, n_experiences=args.experiences, task_labels=False, seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(args.dim, args.dim), torch.nn.ReLU())
    theirs = av.ParametricBuffer(
        args.mem, groupby="class", selection_strategy=av.HerdingSelectionStrategy(model, "0")
    )
    mine = ms.ParametricBuffer(
        args.mem, groupby="class", selection_strategy=ms.HerdingSelectionStrategy(model, "0")
    )
    print(
        f"ParametricBuffer(groupby='class', herding), mem={args.mem}, "
        f"{args.rows_per_class} rows x {args.dim} features per class, "
        f"{args.classes_per_exp} classes per experience"
    )
    print(f"{'exp':>3} {'avalanche s':>12} {'memstore s':>11} {'speedup':>8} {'same':>5}")
    for exp in bench.train_stream:
        agent = _Agent(exp, 256)
        t0 = time.perf_counter()
        theirs.post_adapt(agent, exp)
        t1 = time.perf_counter()
        mine.update(agent)
        t2 = time.perf_counter()
        same = np.array_equal(resolve_rows(theirs.buffer).ids, mine.memory.buffer.ids)
        print(
            f"{exp.current_experience:>3} {t1 - t0:>12.3f} {t2 - t1:>11.3f} "
            f"{(t1 - t0) / max(t2 - t1, 1e-9):>7.1f}x {str(same):>5}"
        )


if __name__ == "__main__":
    main()

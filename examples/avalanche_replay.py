"""Avalanche's Naive + ReplayPlugin on split scikit-learn digits, with memstore's drop-in.

The only change to an Avalanche script is the import of the storage policy. The memory is
committed to a memstore store after every experience; the run is stopped after experience
``--stop-after`` (a separate process exits) and resumed by another process from Avalanche's
own checkpoint — which pickles the policy as a reference (store, name, commit). The final
memory and test accuracy equal those of an uninterrupted run.

Run: ``python examples/avalanche_replay.py`` (needs ``pip install memstore[avalanche]``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from avalanche.benchmarks import nc_benchmark  # noqa: E402
from avalanche.checkpointing import maybe_load_checkpoint, save_checkpoint  # noqa: E402
from avalanche.training.plugins import ReplayPlugin  # noqa: E402
from avalanche.training.supervised import Naive  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from memstore.avalanche import ClassBalancedBuffer  # noqa: E402  (the one-line switch)

MEM_SIZE = 100


def digits(train: bool) -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    part = slice(0, 1400) if train else slice(1400, None)
    data = TensorDataset(x[part], y[part])
    data.targets = y[part].tolist()
    return data


def build(workdir: Path):
    torch.manual_seed(0)
    bench = nc_benchmark(digits(True), digits(False), n_experiences=5, task_labels=False, seed=0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    policy = ClassBalancedBuffer(MEM_SIZE, seed=0, store=str(workdir / "memory"), name="digits")
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=32,
        train_epochs=2,
        eval_mb_size=256,
        plugins=[ReplayPlugin(mem_size=MEM_SIZE, storage_policy=policy)],
        evaluator=None,
    )
    return bench, strategy


def run(workdir: Path, stop_after: int | None) -> dict:
    """Train from the checkpoint in ``workdir`` (if any); stop after ``stop_after``."""
    bench, strategy = build(workdir)
    strategy, start = maybe_load_checkpoint(strategy, str(workdir / "checkpoint.pkl"))
    # The optimizer is left out of the checkpoint (torch 2.14's optimizers do not pickle
    # with dill here) and rebuilt on the loaded model: plain SGD has no state to lose.
    strategy.optimizer = torch.optim.SGD(strategy.model.parameters(), lr=0.1)
    for exp in bench.train_stream[start:]:
        strategy.train(exp)
        save_checkpoint(strategy, str(workdir / "checkpoint.pkl"), exclude=["optimizer"])
        if stop_after is not None and exp.current_experience == stop_after:
            return {"stopped_after": stop_after}
    test = digits(False)
    with torch.no_grad():
        accuracy = (strategy.model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()
    policy = strategy.plugins[0].storage_policy
    return {
        "accuracy": round(float(accuracy), 4),
        "memory_ids": policy.memory.buffer.ids.tolist(),
        "commit": policy.commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--stop-after", type=int, default=None)
    args = parser.parse_args()
    if args.workdir is not None:  # one process of the run
        print(json.dumps(run(args.workdir, args.stop_after)))
        return

    def process(workdir: str, *extra: str) -> dict:
        cmd = [sys.executable, __file__, "--workdir", workdir, *extra]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as straight, tempfile.TemporaryDirectory() as resumed:
        whole = process(straight)
        process(resumed, "--stop-after", "2")  # stopped mid-run
        again = process(resumed)  # a new process resumes from Avalanche's checkpoint
    print(f"uninterrupted: accuracy {whole['accuracy']}, {len(whole['memory_ids'])} exemplars")
    print(f"resumed:       accuracy {again['accuracy']}, {len(again['memory_ids'])} exemplars")
    same = whole == again
    print("same final memory and accuracy:", same)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()

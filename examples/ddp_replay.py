"""Split-Digits trained by 2 DDP ranks (gloo, CPU) with one shared replay memory.

Each rank trains on its half of every experience (``DistributedSampler``) plus replay draws
from the shared memory (``GroupBalancedSampler`` splits one class-balanced stream across the
ranks). After each experience the ranks update the memory together
(``memstore.distributed.update``: only ids and labels cross the wire; ``draws="hash"`` makes
the memory independent of how rows are split) and rank 0 commits it
(``memstore.distributed.save``: every rank gets the same Commit), with the model's weights as
the commit's run state: memory and weights are published together or not at all.

Kill it and run it again: it resumes from the last commit. ``--stop-after K`` simulates the
crash: after committing experience K, rank 1 dies (``os._exit``) half-way through training
experience K+1; rank 0 fails cleanly at the next collective.

    python examples/ddp_replay.py --store runs/ddp/memory.zarr --stop-after 1   # dies
    python examples/ddp_replay.py --store runs/ddp/memory.zarr                  # resumes
    python examples/ddp_replay.py --store runs/ddp/memory.zarr --check
        # --check: also runs an uninterrupted copy in a temporary store and compares
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# examples/ is on sys.path when this file runs as a script: the shared digits set-up.
from split_digits import SOURCE, evaluate, make_experiences, make_model  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler

import memstore  # noqa: E402
from memstore import distributed as mdist  # noqa: E402
from memstore.policies.base import state_digest  # noqa: E402

BUFFER, WORLD, BATCH = "replay", 2, 32


def train(model, dataset, replay, rank: int, epochs: int, seed: int, die: bool) -> None:
    """DDP training on this rank's shard of ``dataset`` plus this rank's replay draws."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        if die and epoch == epochs // 2:
            os._exit(1)  # the simulated crash: rank 1 vanishes mid-experience
        shard = DistributedSampler(dataset, WORLD, rank, shuffle=True, seed=seed)
        shard.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=BATCH, sampler=shard)
        batches = None
        if replay is not None:  # num_replicas / rank come from the process group
            draws = memstore.GroupBalancedSampler(
                replay.exemplars, "class", num_samples=len(loader) * BATCH * WORLD, seed=seed
            )
            draws.set_epoch(epoch)
            batches = iter(DataLoader(replay, batch_size=BATCH, sampler=draws))
        for x, y in loader:
            if batches is not None:
                rx, ry, _ = next(batches)
                x, y = torch.cat([x, rx]), torch.cat([y, ry])
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()  # DDP averages the gradients across ranks
            optimizer.step()


def _rank(rank: int, port: int, args: dict) -> None:
    try:
        _run_rank(rank, port, args)
    except (RuntimeError, mdist.CollectiveError) as err:  # another rank died: say so, briefly
        print(f"rank {rank}: stopped, the process group failed ({str(err)[:120]}...)")
        os._exit(1)


def _run_rank(rank: int, port: int, args: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    split = make_experiences(args["seed"])
    if rank == 0:
        memstore.open_store(args["store"])
    dist.barrier()
    store = memstore.open_store(args["store"])
    start = store.next_experience(BUFFER)
    model = make_model(args["seed"])
    if start:  # resume: the memory and the weights committed with it (experience start - 1)
        model.load_state_dict(store.run_state(BUFFER)["model"])
        buf = store.load(BUFFER)
    else:
        buf = memstore.ClassBalancedBuffer(args["memory"], seed=args["seed"], draws="hash")
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    for k in range(start, len(split.train_experiences)):
        experience = split.train_experiences[k]
        replay = memstore.ReplayDataset(buf, {SOURCE: split.train}) if len(buf) else None
        die = rank == 1 and args["stop_after"] is not None and k == args["stop_after"] + 1
        train(ddp, experience, replay, rank, args["epochs"], args["seed"] + k, die)
        whole = memstore.Experience.from_dataset(experience, source=SOURCE, index=k)
        mine = memstore.Experience(  # the rows this rank holds: every other id
            targets=whole.targets[rank::WORLD],
            ids=whole.ids[rank::WORLD],
            source=SOURCE,
            index=k,
        )
        mdist.update(buf, mine)
        # DDP keeps the replicas equal; rank 0's copy is the one committed.
        run = {"model": model.state_dict(), "experience": k} if rank == 0 else None
        commit = mdist.save(store, BUFFER, buf, f"after experience {k}", run_state=run)
        if rank == 0:
            seen = [c for ks in split.classes[: k + 1] for c in ks]
            acc = evaluate(model, split.test, seen)
            print(
                f"experience {k}: commit {commit.seq}, memory {len(buf)}, "
                f"accuracy on seen classes {acc:.3f}",
                flush=True,
            )
    if rank == 0:
        result = {
            "digest": state_digest(buf.state_dict()),
            "classes": np.bincount(buf.buffer.targets, minlength=10).tolist(),
            "accuracy": evaluate(model, split.test, range(10)),
        }
        with open(args["result"], "w") as f:
            json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def launch(args: dict) -> int:
    """Start the 2 ranks; 0 if both finished, else 1 (the other rank is stopped)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, port, args)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    for p in procs:
        if p.is_alive():
            p.kill()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="runs/ddp/memory.zarr")
    parser.add_argument("--memory", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--check", action="store_true")
    a = parser.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.store)), exist_ok=True)
    common = {"memory": a.memory, "epochs": a.epochs, "seed": a.seed}
    result = f"{a.store}.result.json"
    code = launch({**common, "store": a.store, "stop_after": a.stop_after, "result": result})
    if code:
        print("a rank died (simulated crash): run again without --stop-after to resume")
        return code
    with open(result) as f:
        got = json.load(f)
    print(f"final memory per class {got['classes']}, accuracy {got['accuracy']:.3f}")
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            ref = os.path.join(tmp, "memory.zarr.result.json")
            launch(
                {
                    **common,
                    "store": os.path.join(tmp, "memory.zarr"),
                    "stop_after": None,
                    "result": ref,
                }
            )
            with open(ref) as f:
                want = json.load(f)
        same = want == got
        print(f"uninterrupted run: same memory and accuracy: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

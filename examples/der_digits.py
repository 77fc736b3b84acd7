"""DER++ on Split-Digits: the memory keeps each exemplar's logits as a payload, and the whole
run — memory, model, optimizer, generators — is one commit after every experience.

DER++ (Buzzega et al., 2020) replays two batches from the memory per step:
``loss = CE(model(x), y) + alpha * MSE(model(x'), stored logits of x') + beta * CE(model(x''),
y'')``. Here the logits are stored when an experience ends (the trained model's outputs on its
samples), as ``Experience(payload={"logits": ...})``; the buffer (``ClassBalancedBuffer`` or
``ReservoirSamplingBuffer``) keeps every logits row with its exemplar, and ``ReplayDataset``
returns it as ``(x, y, t, {"logits": ...})``.

After experience k the store gets one atomic commit holding the memory (with its logits) and
``run_state={"model", "optimizer", "rng": memstore.rng_state(), "experience": k}``, so a
crash leaves both at experience k-1 or both at k. Shuffling and replay draws use torch's
global generator, which the commit captures: a resumed run draws what the uninterrupted
one draws.

    python examples/der_digits.py --store runs/der/memory.zarr --stop-after 2  # killed in exp 2
    python examples/der_digits.py --store runs/der/memory.zarr                 # resumes at exp 2
    python examples/der_digits.py --check   # uninterrupted vs killed + resumed: identical?

``--stop-after K`` kills the process (SIGKILL, no clean-up) half-way through training
experience K. ``--check`` runs the uninterrupted run here, then the killed run and its resume
as separate processes on a second store, and compares the final memory ids, the logits
payload and the accuracy (exit status 0 when identical).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from split_digits import SOURCE, evaluate, make_experiences, make_model  # examples/ on sys.path
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

import memstore

BUFFER = "der"
BATCH = 32
LR = 0.005


def make_memory(policy: str, memory: int, seed: int) -> memstore.ExemplarsBuffer:
    if policy == "class-balanced":
        return memstore.ClassBalancedBuffer(max_size=memory, seed=seed)
    return memstore.ReservoirSamplingBuffer(max_size=memory, seed=seed)


def replay_batch(replay: memstore.ReplayDataset) -> list:
    """``[x, y, t, {"logits": ...}]`` of ``BATCH`` exemplars drawn with replacement (global
    torch generator, as a training loop would)."""
    idx = torch.randint(len(replay), (BATCH,)).tolist()
    return default_collate(replay.__getitems__(idx))


def train_der(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    replay: memstore.ReplayDataset | None,
    *,
    epochs: int,
    alpha: float,
    beta: float,
    die_half_way: bool = False,
) -> None:
    """DER++ on one experience; with ``die_half_way`` the process is SIGKILLed mid-way."""
    model.train()
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)  # global torch generator
    steps, kill_at = 0, epochs * len(loader) // 2
    for _ in range(epochs):
        for x, y in loader:
            if die_half_way and steps == kill_at:
                print(f"killing the run half-way through the experience (step {steps})")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            loss = F.cross_entropy(model(x), y)
            if replay is not None:
                rx, _, _, payload = replay_batch(replay)
                loss = loss + alpha * F.mse_loss(model(rx), payload["logits"])
                rx, ry, _, _ = replay_batch(replay)
                loss = loss + beta * F.cross_entropy(model(rx), ry)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1


@torch.no_grad()
def logits_of(model: torch.nn.Module, experience: Subset) -> torch.Tensor:
    """The model's logits on an experience's samples, in the experience's order."""
    model.eval()
    x = torch.stack([experience[i][0] for i in range(len(experience))])
    return model(x)


def run(args: argparse.Namespace, store_path: str, stop_after: int | None) -> dict:
    """Train (or resume from the latest commit) over every experience; the final result."""
    split = make_experiences(args.seed)
    store = memstore.open_store(store_path)
    model = make_model(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = store.next_experience(BUFFER)
    if start:
        buffer = store.load(BUFFER, sources={SOURCE: split.train})
        saved = store.run_state(BUFFER)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        memstore.set_rng_state(saved["rng"])
        print(f"resumed after experience {saved['experience']} ({len(buffer)} exemplars)")
    else:
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        buffer = make_memory(args.policy, args.memory, args.seed)
    for k in range(start, len(split.train_experiences)):
        experience = split.train_experiences[k]
        replay = memstore.ReplayDataset(buffer, {SOURCE: split.train}) if len(buffer) else None
        train_der(
            model,
            optimizer,
            experience,
            replay,
            epochs=args.epochs,
            alpha=args.alpha,
            beta=args.beta,
            die_half_way=stop_after == k,
        )
        logits = logits_of(model, experience)
        buffer.update(
            memstore.Experience.from_dataset(
                experience, source=SOURCE, index=k, payload={"logits": logits}
            )
        )
        run_state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": memstore.rng_state(),
            "experience": k,
        }
        commit = store.save(
            BUFFER,
            buffer,
            message=f"after experience {k}",
            sources={SOURCE: split.train},
            run_state=run_state,
        )
        seen = sorted(c for cs in split.classes[: k + 1] for c in cs)
        print(
            f"experience {k}: accuracy on seen classes {evaluate(model, split.test, seen):.3f}, "
            f"memory {len(buffer)}, commit {commit.seq}"
        )
    ex = buffer.buffer
    return {
        "accuracy": evaluate(model, split.test, range(10)),
        "ids": ex.ids.tolist(),
        "logits": hashlib.blake2b(ex.payload["logits"].tobytes(), digest_size=16).hexdigest(),
        "logits_shape": list(ex.payload["logits"].shape),
        "commits": len(store.log(BUFFER)),
        "problems": len(store.verify()),
    }


def check(args: argparse.Namespace) -> int:
    """Uninterrupted here; killed (``--stop-after``) then resumed in two processes; compare."""
    stop = 2 if args.stop_after is None else args.stop_after
    common = [
        f"--{k}={v}"
        for k, v in (
            ("policy", args.policy),
            ("memory", args.memory),
            ("epochs", args.epochs),
            ("seed", args.seed),
            ("alpha", args.alpha),
            ("beta", args.beta),
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        print("-- uninterrupted run")
        reference = run(args, os.path.join(tmp, "uninterrupted.zarr"), None)
        store, result = os.path.join(tmp, "interrupted.zarr"), os.path.join(tmp, "result.json")
        script = [sys.executable, os.path.abspath(__file__), "--store", store, *common]
        print(f"-- run killed during experience {stop}")
        killed = subprocess.run([*script, "--stop-after", str(stop)], check=False)
        print(f"-- rerun (exit status of the killed run: {killed.returncode})")
        subprocess.run([*script, "--result", result], check=True)
        with open(result) as f:
            resumed = json.load(f)
    same = {key: reference[key] == resumed[key] for key in ("ids", "logits", "accuracy")}
    print(
        f"uninterrupted: accuracy {reference['accuracy']:.4f}, logits {reference['logits']}\n"
        f"resumed:       accuracy {resumed['accuracy']:.4f}, logits {resumed['logits']}\n"
        f"memory ids {'identical' if same['ids'] else 'DIFFERENT'}, logits payload "
        f"{'identical' if same['logits'] else 'DIFFERENT'}, accuracy "
        f"{'identical' if same['accuracy'] else 'DIFFERENT'}; verify: "
        f"{resumed['problems']} problems"
    )
    ok = killed.returncode == -signal.SIGKILL and all(same.values()) and not resumed["problems"]
    print("IDENTICAL" if ok else "MISMATCH")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/der/memory.zarr")
    parser.add_argument(
        "--policy", choices=("class-balanced", "reservoir"), default="class-balanced"
    )
    parser.add_argument("--memory", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.3, help="weight of the logits MSE")
    parser.add_argument("--beta", type=float, default=0.5, help="weight of the replay CE")
    parser.add_argument("--stop-after", type=int, default=None, help="die mid-experience K")
    parser.add_argument("--result", default=None, help="write the final result (JSON) here")
    parser.add_argument("--check", action="store_true", help="compare killed+resumed runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.check:
        return check(args)
    result = run(args, args.store, args.stop_after)
    print(
        f"final: accuracy {result['accuracy']:.4f} on all 10 classes, memory "
        f"{len(result['ids'])} exemplars, logits {result['logits_shape']} {result['logits']}, "
        f"{result['commits']} commits"
    )
    if args.result:
        with open(args.result, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

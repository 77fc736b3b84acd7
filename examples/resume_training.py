"""Split-Digits with its replay memory checkpointed in a memstore after every experience.

Kill it at any point and run the same command again: it resumes from the last commit and ends
with exactly the memory (same ids, same order, same groups) and accuracy of an uninterrupted
run. ``--stop-after K`` simulates the crash: after committing experience K it starts training
experience K+1 and dies with ``os._exit`` half-way through.

    python examples/resume_training.py --store runs/digits/memory.zarr --stop-after 1
    python examples/resume_training.py --store runs/digits/memory.zarr      # resumes, finishes
    python examples/resume_training.py --store runs/digits/memory.zarr --check
        # --check: also runs an uninterrupted copy in a temporary store and compares

Each commit carries the run state with the memory, in one atomic step: the model's and the
optimizer's ``state_dict`` (one SGD with momentum for the whole run), the global generators
(``memstore.rng_state()``) and the experience counter. A resumed run restores all of them
from ``store.run_state(...)`` (never unpickled), so memory and model can never be out of step.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile

import numpy as np
import torch

# examples/ is on sys.path when this file runs as a script: the shared digits set-up.
from split_digits import (  # noqa: E402
    HIDDEN_LAYER,
    SOURCE,
    evaluate,
    make_buffer,
    make_experiences,
    make_model,
    train_experience,
)

import memstore  # noqa: E402

BUFFER = "replay"


def run(
    store_path: str, policy: str, memory: int, epochs: int, seed: int, stop_after: int | None = None
) -> dict:
    """Train (or resume) over all experiences; returns the final memory and accuracy."""
    split = make_experiences(seed)
    store = memstore.open_store(store_path)
    model = make_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = store.next_experience(BUFFER)
    if start > 0:
        state = store.run_state(BUFFER)  # the same commit as the memory loaded below
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        memstore.set_rng_state(state["rng"])
        assert state["experience"] == start - 1
        strategy = (
            memstore.HerdingSelectionStrategy(model, HIDDEN_LAYER)
            if policy == "parametric-herding"
            else None
        )
        buffer = store.load(BUFFER, sources={SOURCE: split.train}, selection_strategy=strategy)
        print(
            f"resumed from commit {store.log(BUFFER)[-1].seq}: experiences 0..{start - 1} "
            f"done, memory of {len(buffer)} exemplars"
        )
    else:
        buffer = make_buffer(policy, memory, model, seed)
    for k in range(start, len(split.train_experiences)):
        replay = (
            memstore.ReplayDataset(buffer.buffer, {SOURCE: split.train}) if len(buffer) else None
        )
        if stop_after is not None and k == stop_after + 1:
            train_experience(
                model, split.train_experiences[k], replay, 1, seed + k, optimizer=optimizer
            )
            print(f"simulated crash while training experience {k}", flush=True)
            os._exit(3)
        train_experience(
            model, split.train_experiences[k], replay, epochs, seed + k, optimizer=optimizer
        )
        buffer.update(
            memstore.Experience.from_dataset(split.train_experiences[k], source=SOURCE, index=k)
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
        print(f"experience {k}: memory {len(buffer)} exemplars, commit {commit.seq}")
    accuracy = evaluate(model, split.test, range(10))
    ex = buffer.buffer
    digest = hashlib.blake2b(
        b"".join(np.ascontiguousarray(c).tobytes() for c in (ex.ids, ex.targets, ex.experience)),
        digest_size=8,
    ).hexdigest()
    return {
        "accuracy": accuracy,
        "memory": len(ex),
        "digest": digest,
        "per_class": np.bincount(ex.targets, minlength=10).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/digits/memory.zarr")
    parser.add_argument(
        "--policy", choices=("class-balanced", "parametric-herding"), default="class-balanced"
    )
    parser.add_argument("--memory", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="die abruptly while training the experience after this one",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with an uninterrupted run in a temporary store",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.store, args.policy, args.memory, args.epochs, args.seed, args.stop_after)
    print(
        f"final: accuracy {result['accuracy']:.4f} on all 10 classes, memory "
        f"{result['memory']} exemplars {result['per_class']}, digest {result['digest']}"
    )
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            ref = run(
                os.path.join(tmp, "memory.zarr"), args.policy, args.memory, args.epochs, args.seed
            )
        same = ref == result
        print(
            f"uninterrupted: accuracy {ref['accuracy']:.4f}, digest {ref['digest']} -> "
            f"{'IDENTICAL' if same else 'DIFFERENT'}"
        )
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A herding memory over webdataset shards (workflow B), end to end on scikit-learn's digits.

1. writes the 1 797 8×8 digits (flat float32 ``.npy`` inputs + ``.cls`` targets) into tar
   shards with ``memstore.write_shards`` (200 samples per shard);
2. opens a store and indexes the shards as a ``ShardSource(store=store)``: one streaming pass
   records each member's byte offset and size, the keys and the targets under
   ``sources/train`` in the store;
3. builds a ``ParametricBuffer(groupby="class")`` with ``HerdingSelectionStrategy`` over five
   class-incremental experiences; features are extracted by streaming the samples from the
   shards and cached in the store (``feature_cache=store``); the memory is committed with
   ``store.save``;
4. replays from it: ``ReplayDataset`` + ``DataLoader`` read the exemplars by byte offset;
5. prints ``memstore inspect`` of the store.

It then does it all a second time with fresh objects, as a restarted process would: the shard
index and the cached features are reused (nothing is re-read or recomputed) and the memory is
identical. Running the script again on the same ``--dir`` reuses them too.

    python examples/sharded_memory.py                       # in runs/sharded-digits
    python examples/sharded_memory.py --dir /tmp/x --fresh  # start from an empty directory

The feature extractor is a seeded, untrained MLP to keep the example short; in practice use
the model being trained (the feature cache is keyed by its weights, the layer and the source).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numpy as np
import torch

import memstore
from memstore.cli import main as memstore_cli

SOURCE = "train"  # the source name exemplars refer to
LAYER = "1"  # herding reads the post-ReLU hidden layer
SPLITS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def make_digit_shards(directory: str) -> str:
    """Write the digits into ``directory/digits-NNNN.tar`` (once); returns the brace spec."""
    from sklearn.datasets import load_digits

    pattern = os.path.join(directory, "digits-%04d.tar")
    spec_file = os.path.join(directory, "spec.txt")
    if os.path.exists(spec_file):
        with open(spec_file) as f:
            spec = f.read().strip()
        print(f"shards: reusing {spec}")
        return spec
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)  # [1797, 64] in [0, 1]
    out = memstore.write_shards(images, pattern, targets=digits.target, maxcount=200)
    with open(spec_file, "w") as f:
        f.write(out.spec)
    print(f"shards: wrote {out.count} samples in {len(out.paths)} shards: {out.spec}")
    return out.spec


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())


def build(store_path: str, spec: str, memory: int, seed: int) -> None:
    """Index (or reuse the index), build the herding memory, commit it, replay a batch."""
    t0 = time.perf_counter()
    store = memstore.open_store(store_path)
    source = memstore.ShardSource(spec, name=SOURCE, store=store, progress=False)
    reused = "reused from the store" if not source.indexed_shards else "built in one pass"
    print(
        f"index: {len(source)} samples in {len(source.urls)} shards, {reused} "
        f"({len(source.indexed_shards)} shards read); fingerprint {source.fingerprint()}"
    )

    model = make_model(seed)
    computed = [0]
    model.register_forward_hook(lambda m, i, out: computed.__setitem__(0, computed[0] + len(out)))
    strategy = memstore.HerdingSelectionStrategy(model, LAYER, feature_cache=store)
    buffer = memstore.ParametricBuffer(
        memory, groupby="class", selection_strategy=strategy, seed=seed
    )
    committed = "herding" in store and store.next_experience("herding") == len(SPLITS)
    for experience in source.experiences(by_classes=SPLITS):
        buffer.update(experience)
        if not committed:
            store.save(  # the first save of a rerun goes on top of an interrupted run's
                "herding",
                buffer,
                message=f"after experience {experience.index}",
                sources={SOURCE: source},
                overwrite=buffer.origin is None,
            )
    if committed:  # a finished memory is not committed twice: compare with it instead
        same = store.load("herding", sources={SOURCE: source}).buffer.equals(buffer.buffer)
        print(f"memory already committed; the rebuilt one is identical: {same}")
    print(
        f"features: the model ran on {computed[0]} samples"
        + (
            " (all features came from the store's cache)"
            if computed[0] == 0
            else f" (now cached in the store: features/{store.feature_caches()[0]})"
        )
    )
    sizes = {int(k): len(g.buffer) for k, g in buffer.buffer_groups.items()}
    print(
        f"memory: {len(buffer.buffer)} exemplars, per class {sizes}; "
        f"{len(store.log('herding'))} commits"
    )

    replay = memstore.ReplayDataset(store.load("herding").buffer, {SOURCE: source})
    loader = torch.utils.data.DataLoader(
        replay, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    x, y, task = next(iter(loader))
    print(
        f"replay batch (read by byte offset): x {tuple(x.shape)} {x.dtype}, "
        f"y {y.tolist()}, task {task.tolist()}"
    )
    print(f"done in {time.perf_counter() - t0:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        default=os.path.join("runs", "sharded-digits"),
        help="holds shards/ and memory.zarr (reused when present)",
    )
    parser.add_argument("--memory", type=int, default=100, help="exemplars in the memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete --dir first")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.fresh:
        shutil.rmtree(args.dir, ignore_errors=True)
    store_path = os.path.join(args.dir, "memory.zarr")
    spec = make_digit_shards(os.path.join(args.dir, "shards"))

    print("\n== run 1 ==")
    build(store_path, spec, args.memory, args.seed)
    print("\n== run 2: fresh objects on the same store, as a restarted process ==")
    build(store_path, spec, args.memory, args.seed)

    print(f"\n$ python -m memstore.cli inspect {store_path}")
    return memstore_cli(["inspect", store_path])


if __name__ == "__main__":
    raise SystemExit(main())

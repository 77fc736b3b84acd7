"""Class-incremental Split-Digits with replay from a memstore buffer.

scikit-learn's bundled 8×8 digits (no download) are cut into 5 experiences of 2 classes each.
A small MLP is trained on them in order, once without replay (it forgets earlier classes)
and once with replay from a memstore buffer — a ``ClassBalancedBuffer`` by default, or a
``ParametricBuffer`` grouped by class with herding on the hidden layer
(``--policy parametric-herding``). After each experience the accuracy on the test images of
every class seen so far is printed for both runs, then the final memory composition.

    python examples/split_digits.py [--seed 0] [--epochs 8] [--memory 100]
    python examples/split_digits.py --policy parametric-herding

The data, model and training helpers are plain functions so other examples can reuse them
(``make_experiences``, ``make_model``, ``train_experience``, ``evaluate``). Everything is
seeded: the same ``--seed`` prints the same numbers (on the same torch build and threads).
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

import memstore

NUM_CLASSES = 10
CLASSES_PER_EXPERIENCE = 2
HIDDEN_LAYER = "hidden"  # the layer herding reads features from (post-ReLU, 128 values)
SOURCE = "train"  # the source name the buffers' exemplars refer to


class DigitsDataset(Dataset):
    """8×8 digit images as flat float32 vectors in [0, 1], with a ``targets`` attribute.

    Items are ``(x, y)``: what ``memstore.Experience.from_dataset`` and the feature extractor
    expect (the input is the first element).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


@dataclass(frozen=True)
class SplitDigits:
    """The benchmark: root datasets and the per-experience views of them.

    ``train_experiences[k]`` / ``test_experiences[k]`` are ``Subset`` s of ``train`` /
    ``test`` holding the classes ``classes[k]``; sample ids are positions in ``train``, so
    every experience shares the one source ``"train"``.
    """

    train: DigitsDataset
    test: DigitsDataset
    classes: list[tuple[int, ...]]
    train_experiences: list[Subset]
    test_experiences: list[Subset]


def make_experiences(seed: int = 0, test_fraction: float = 0.25) -> SplitDigits:
    """Split the digits into train/test (stratified) and 5 experiences of 2 classes.

    The class order and the train/test split are drawn from ``seed``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    targets = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(targets), dtype=bool)
    for c in range(NUM_CLASSES):  # stratified: the same fraction of every class
        rows = np.flatnonzero(targets == c)
        test_mask[rng.choice(rows, size=round(test_fraction * len(rows)), replace=False)] = True
    train = DigitsDataset(images[~test_mask], targets[~test_mask])
    test = DigitsDataset(images[test_mask], targets[test_mask])
    order = rng.permutation(NUM_CLASSES)
    classes = [
        tuple(int(c) for c in sorted(order[i : i + CLASSES_PER_EXPERIENCE]))
        for i in range(0, NUM_CLASSES, CLASSES_PER_EXPERIENCE)
    ]

    def views(dataset: DigitsDataset) -> list[Subset]:
        labels = dataset.targets.numpy()
        return [Subset(dataset, np.flatnonzero(np.isin(labels, c)).tolist()) for c in classes]

    return SplitDigits(train, test, classes, views(train), views(test))


def make_model(seed: int = 0, hidden: int = 128) -> torch.nn.Sequential:
    """A 64-``hidden``-10 MLP; its post-ReLU layer is named ``HIDDEN_LAYER`` (for herding).

    The weights are drawn from ``seed`` without touching torch's global generator state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            OrderedDict(
                fc=torch.nn.Linear(64, hidden),
                hidden=torch.nn.ReLU(),
                head=torch.nn.Linear(hidden, NUM_CLASSES),
            )
        )


def train_experience(
    model: torch.nn.Module,
    dataset: Dataset,
    replay: Dataset | None = None,
    epochs: int = 8,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 0.05,
    optimizer: torch.optim.Optimizer | None = None,
) -> float:
    """Train on ``dataset``; with ``replay``, every mini-batch also gets ``batch_size``
    exemplars drawn class-balanced (``memstore.GroupBalancedSampler``) from it.

    ``replay`` is a ``memstore.ReplayDataset`` (items ``(x, y, task)``). Shuffling and replay
    draws come from generators seeded by ``seed`` and the epoch, so a run is reproducible.
    ``optimizer`` (default: a fresh SGD with momentum per call) may carry its state across
    experiences. Returns the mean loss of the last epoch.
    """
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    last = 0.0
    for epoch in range(epochs):
        shuffle = torch.Generator().manual_seed(seed * 10_007 + epoch)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=shuffle)
        replay_batches = None
        if replay is not None and len(replay):
            sampler = memstore.GroupBalancedSampler(
                replay.exemplars, "class", num_samples=len(loader) * batch_size, seed=seed
            )
            sampler.set_epoch(epoch)
            replay_batches = iter(DataLoader(replay, batch_size=batch_size, sampler=sampler))
        total, count = 0.0, 0
        for x, y in loader:
            if replay_batches is not None:
                rx, ry, _task = next(replay_batches)
                x, y = torch.cat([x, rx]), torch.cat([y, ry])
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(y), count + len(y)
        last = total / max(count, 1)
    return last


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: DigitsDataset, classes) -> float:
    """Accuracy on the samples of ``dataset`` whose label is in ``classes`` (10-way argmax).

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        keep = np.isin(dataset.targets.numpy(), np.asarray(list(classes)))
        x, y = dataset.images[keep], dataset.targets[keep]
        return float((model(x).argmax(dim=1) == y).float().mean()) if len(y) else float("nan")
    finally:
        model.train(was_training)


def make_buffer(policy: str, memory: int, model: torch.nn.Module, seed: int):
    """The replay memory: class-balanced reservoir, or per-class herding on the hidden layer."""
    if policy == "class-balanced":
        return memstore.ClassBalancedBuffer(max_size=memory, seed=seed)
    strategy = memstore.HerdingSelectionStrategy(model, HIDDEN_LAYER)
    return memstore.ParametricBuffer(
        max_size=memory, groupby="class", selection_strategy=strategy, seed=seed
    )


def run(split: SplitDigits, args: argparse.Namespace, replay: bool) -> tuple[list[float], object]:
    """Train over all experiences; the accuracy on seen classes after each, and the buffer."""
    model = make_model(args.seed)
    buffer = make_buffer(args.policy, args.memory, model, args.seed) if replay else None
    seen: list[int] = []
    accuracies = []
    for k, experience in enumerate(split.train_experiences):
        memory = None
        if buffer is not None and len(buffer.buffer):
            memory = memstore.ReplayDataset(buffer.buffer, {SOURCE: split.train})
        train_experience(model, experience, memory, epochs=args.epochs, seed=args.seed + k)
        if buffer is not None:  # after training: herding uses the current features
            buffer.update(memstore.Experience.from_dataset(experience, source=SOURCE, index=k))
        seen.extend(split.classes[k])
        accuracies.append(evaluate(model, split.test, seen))
    return accuracies, buffer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per experience")
    parser.add_argument("--memory", type=int, default=100, help="buffer max_size")
    parser.add_argument(
        "--policy", choices=("class-balanced", "parametric-herding"), default="class-balanced"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a tiny MLP: extra threads only add synchronisation
    start = time.perf_counter()
    split = make_experiences(args.seed)
    print(
        f"Split-Digits: {len(split.train)} train / {len(split.test)} test images, "
        f"experiences {split.classes}; policy {args.policy}, memory {args.memory}, "
        f"seed {args.seed}"
    )
    plain, _ = run(split, args, replay=False)
    replayed, buffer = run(split, args, replay=True)
    print(f"\n{'after exp':<10}{'classes seen':<32}{'no replay':>10}{'replay':>10}")
    for k, (a, b) in enumerate(zip(plain, replayed, strict=True)):
        seen = sorted(c for group in split.classes[: k + 1] for c in group)
        print(f"{k:<10}{str(seen):<32}{a:>10.3f}{b:>10.3f}")
    print(f"{'mean':<42}{np.mean(plain):>10.3f}{np.mean(replayed):>10.3f}")
    ex = buffer.buffer
    classes, counts = np.unique(ex.targets, return_counts=True)
    composition = ", ".join(f"{c}: {n}" for c, n in zip(classes, counts, strict=True))
    experiences, per_exp = np.unique(ex.experience, return_counts=True)
    by_exp = ", ".join(f"{e}: {n}" for e, n in zip(experiences, per_exp, strict=True))
    print(f"\nfinal memory ({type(buffer).__name__}): {len(ex)} exemplars")
    print(f"  per class      {{{composition}}}")
    print(f"  per experience {{{by_exp}}}")
    print(f"  first ids      {ex.ids[:10].tolist()}")
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

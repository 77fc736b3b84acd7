"""Small data, models and wrappers shared by the Avalanche tests."""

from __future__ import annotations

import numpy as np
import torch
from avalanche.training.plugins import SupervisedPlugin
from torch.utils.data import TensorDataset

from memstore.avalanche.chain import resolve_rows


def labelled_tensors(n: int = 300, classes: int = 10, dim: int = 8, seed: int = 0):
    """A TensorDataset with ``.targets`` (classes interleaved)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, dim, generator=gen) + y[:, None].float()
    data = TensorDataset(x, y)
    data.targets = y.tolist()
    return data


class MLP(torch.nn.Module):
    """No dropout, no batch norm: eval mode (which Avalanche's extraction leaves) is harmless."""

    def __init__(self, dim: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.features(x))


def isolated(policy, seed: int):
    """Avalanche's policy with its global-RNG draws on a stream of their own.

    Avalanche's storage policies draw from torch's global generator, which training also
    draws from; saving and restoring it around each update gives the policy the stream
    ``torch.manual_seed(seed)`` starts, whatever training does in between.
    """
    saved = torch.get_rng_state()
    torch.manual_seed(seed)
    state = [torch.get_rng_state()]
    torch.set_rng_state(saved)
    update = policy.post_adapt

    def post_adapt(agent, exp):
        outer = torch.get_rng_state()
        torch.set_rng_state(state[0])
        try:
            update(agent, exp)
        finally:
            state[0] = torch.get_rng_state()
            torch.set_rng_state(outer)

    policy.post_adapt = post_adapt
    return policy


def contents(dataset):
    """(root ids, items) of a dataset, in order."""
    rows = resolve_rows(dataset)
    return rows.ids, [dataset[i] for i in range(len(dataset))]


def same_items(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if not torch.equal(x[0], y[0]) or [int(v) for v in x[1:]] != [int(v) for v in y[1:]]:
            return False
    return True


class Compare(SupervisedPlugin):
    """After each experience: update Avalanche's policy and record both memories."""

    def __init__(self, reference, dropin) -> None:
        super().__init__()
        self.reference, self.dropin = reference, dropin
        self.history = []

    def after_training_exp(self, strategy, **kwargs):
        self.reference.post_adapt(strategy, strategy.experience)
        ref_ids, ref_items = contents(self.reference.buffer)
        ids, items = contents(self.dropin.buffer)
        self.history.append((np.array_equal(ref_ids, ids), same_items(ref_items, items), len(ids)))

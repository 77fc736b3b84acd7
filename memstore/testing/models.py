"""Small models and sources the feature tests share with the child processes they start."""

from __future__ import annotations

import numpy as np
import torch

from memstore.sources.arrays import ArraySource

__all__ = ["CountingModel", "make_source"]


class CountingModel(torch.nn.Module):
    """A linear layer ``feat`` that counts the rows it has seen (``rows``): tests assert that
    features are computed once per sample."""

    def __init__(self, d_in: int = 6, d_out: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.feat = torch.nn.Linear(d_in, d_out)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.feat(x)


def make_source(n: int) -> ArraySource:
    """``n`` seeded 6-d float32 inputs with targets ``i % 5``."""
    rng = np.random.default_rng(0)
    return ArraySource(rng.standard_normal((n, 6)).astype(np.float32), np.arange(n) % 5)

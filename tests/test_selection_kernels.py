"""Every first-pass kernel of exact herding, forced, gives the reference's picks exactly.

The kernel is an override of ``herding_order`` (``kernel=``, for tests and benchmarks); the
default is chosen by a probe. Data: Gaussian, relu-like (non-negative, sparse), adversarial
near-ties (duplicate rows, rows one float32 ulp apart), a large offset, a wide relu.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memstore.selection.herding import herding_order
from memstore.selection.kernels import KERNELS, fastest_kernel, make_scores
from memstore.selection.scores import Float32Scores
from memstore.testing.reference import herding_loop


def _sets():
    rng = np.random.default_rng(3)
    gauss = rng.standard_normal((600, 16)).astype(np.float32)
    relu = np.maximum(rng.standard_normal((600, 16)) - 0.5, 0).astype(np.float32)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    ulp = np.nextafter(base, np.float32(np.inf)) - base
    ties = np.concatenate([base, base, base + ulp, base - ulp, base[::-1]])
    grid = rng.integers(-2, 3, size=(400, 16)).astype(np.float32)  # many exact ties
    offset = (100 + 1e-2 * rng.standard_normal((300, 16))).astype(np.float32)
    wide = np.maximum(rng.standard_normal((300, 100)), 0).astype(np.float32)
    return [
        ("gauss", gauss),
        ("relu", relu),
        ("near-ties", ties),
        ("grid", grid),
        ("offset", offset),
        ("wide-relu", wide),
    ]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind,features", _sets(), ids=[k for k, _ in _sets()])
def test_forced_kernel_gives_the_reference_picks(kernel, kind, features):
    k = min(len(features), 80)
    expected = herding_loop(torch.from_numpy(features), k)
    assert herding_order(features, k, kernel=kernel).tolist() == expected


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="'kernel' parameter of herding_order"):
        herding_order(np.zeros((3, 2), np.float32), 1, kernel="gpu")


def test_small_inputs_use_the_float32_pass():
    x = np.ones((10, 4), np.float32)
    assert isinstance(make_scores(torch.from_numpy(x), x[0], 2.0, 5), Float32Scores)


def test_the_probe_picks_a_kernel_that_runs_here():
    assert fastest_kernel() in KERNELS

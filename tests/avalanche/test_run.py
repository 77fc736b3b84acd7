"""Naive + ReplayPlugin runs: the drop-in holds, after every experience and in order, what
Avalanche's own policy holds (random policies: Avalanche's draws isolated on
``torch.manual_seed(seed)``; herding / closest-to-center: no isolation at all)."""

import pytest
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.training import storage_policy as av
from avalanche.training.plugins import ReplayPlugin
from avalanche.training.supervised import Naive
from helpers import MLP, Compare, isolated, labelled_tensors

import memstore.avalanche as ms


def run(reference, dropin, *, task_labels=False, epochs=1):
    torch.manual_seed(123)
    data = labelled_tensors()
    bench = nc_benchmark(data, data, n_experiences=5, task_labels=task_labels, seed=3)
    model = MLP()
    compare = Compare(reference, dropin)
    strategy = Naive(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        train_mb_size=16,
        train_epochs=epochs,
        eval_mb_size=32,
        plugins=[ReplayPlugin(mem_size=dropin.max_size, storage_policy=dropin), compare],
        evaluator=None,
    )
    for exp in bench.train_stream:
        strategy.train(exp)
    return compare.history, model, bench


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.ClassBalancedBuffer(40),
        lambda m: m.ExperienceBalancedBuffer(40),
        lambda m: m.ReservoirSamplingBuffer(40),
        lambda m: m.ClassBalancedBuffer(40, adaptive_size=False, total_num_classes=10),
    ],
    ids=["class", "experience", "reservoir", "class-fixed"],
)
def test_random_policies_hold_avalanches_memory_with_isolated_draws(make):
    history, _, _ = run(isolated(make(av), seed=0), make(ms))
    assert [h[:2] for h in history] == [(True, True)] * 5
    assert history[-1][2] > 0


@pytest.mark.parametrize(
    "strategy", ["HerdingSelectionStrategy", "ClosestToCenterSelectionStrategy"]
)
@pytest.mark.parametrize("groupby", ["class", None, "experience"])
def test_feature_policies_hold_avalanches_memory_without_isolation(strategy, groupby):
    torch.manual_seed(0)
    model = MLP()
    ref = av.ParametricBuffer(
        30, groupby=groupby, selection_strategy=getattr(av, strategy)(model, "features")
    )
    mine = ms.ParametricBuffer(
        30, groupby=groupby, selection_strategy=getattr(ms, strategy)(model, "features")
    )
    data = labelled_tensors()
    bench = nc_benchmark(data, data, n_experiences=5, task_labels=False, seed=3)
    compare = Compare(ref, mine)
    strategy_ = Naive(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        train_mb_size=16,
        eval_mb_size=32,
        plugins=[ReplayPlugin(mem_size=30, storage_policy=mine), compare],
        evaluator=None,
    )
    for exp in bench.train_stream:
        strategy_.train(exp)
    assert [h[:2] for h in compare.history] == [(True, True)] * 5


def test_unisolated_avalanche_draws_depend_on_training():
    # Why the isolation: Avalanche's draws share torch's global generator with training.
    history, _, _ = run(av.ClassBalancedBuffer(40), ms.ClassBalancedBuffer(40))
    assert not all(h[0] for h in history)

"""The drop-in's run state: with run_state=True each commit carries the strategy's model,
optimizer and generators, and a run rebuilt from the store continues exactly."""

import pytest
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.training.plugins import ReplayPlugin
from avalanche.training.supervised import Naive
from helpers import MLP, labelled_tensors

import memstore.avalanche as ms
from memstore import open_store


def make_run(url: str):
    model = MLP()
    policy = ms.ClassBalancedBuffer(40, seed=1, store=url, name="run", run_state=True)
    strategy = Naive(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=16,
        train_epochs=1,
        eval_mb_size=32,
        plugins=[ReplayPlugin(mem_size=40, storage_policy=policy)],
        evaluator=None,
    )
    return policy, strategy


def stream():
    data = labelled_tensors()
    return list(nc_benchmark(data, data, n_experiences=5, task_labels=False, seed=3).train_stream)


def test_rebuilt_run_continues_exactly(tmp_path):
    torch.manual_seed(7)
    policy, strategy = make_run(str(tmp_path / "straight"))
    for exp in stream():
        strategy.train(exp)
    straight = [p.detach().clone() for p in strategy.model.parameters()]

    torch.manual_seed(7)
    url = str(tmp_path / "resumed")
    first, strategy = make_run(url)
    exps = stream()
    for exp in exps[:2]:
        strategy.train(exp)
    del first, strategy  # "the process dies": only the store is left
    torch.manual_seed(999)  # the new process starts from other generators
    policy2, strategy2 = make_run(url)
    policy2.attach(exps[2].dataset)  # the resumed memory reads its exemplars from it
    state = policy2.restore_run_state(strategy2)
    assert sorted(state) == ["model", "optimizer", "rng"]
    for exp in exps[2:]:
        strategy2.train(exp)
    for a, b in zip(straight, strategy2.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert policy2.memory.buffer.equals(policy.memory.buffer)
    store = open_store(url)
    assert [c.seq for c in store.log("run")] == [0, 1, 2, 3, 4]
    assert store.verify() == []


def test_callable_run_state_and_bad_arguments(tmp_path):
    url = str(tmp_path / "m")
    policy = ms.ReservoirSamplingBuffer(
        10, store=url, name="r", run_state=lambda s: {"epoch": s.clock.train_exp_counter}
    )
    _, strategy = make_run(str(tmp_path / "other"))
    policy.post_adapt(strategy, stream()[0])
    assert open_store(url).run_state("r") == {"epoch": 0}
    policy.post_adapt(None, stream()[1])  # no strategy (a bare call): memory only
    assert open_store(url).run_state("r") == {}
    with pytest.raises(ValueError, match="needs store= and name="):
        ms.ClassBalancedBuffer(10, run_state=True)
    with pytest.raises(TypeError, match="must be a bool or a callable"):
        ms.ClassBalancedBuffer(10, store=url, name="x", run_state="yes")

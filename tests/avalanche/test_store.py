"""Persistence inside Avalanche: commits per update, restart continues, pickles as a
reference, Avalanche's own checkpoints."""

import pickle

import numpy as np
import pytest
import torch
from avalanche.benchmarks import nc_benchmark
from helpers import MLP, labelled_tensors

import memstore.avalanche as ms
from memstore import open_store


def stream():
    data = labelled_tensors(100)
    return nc_benchmark(data, data, n_experiences=5, task_labels=False, seed=1).train_stream


def test_commits_after_every_update_and_restart_continues(tmp_path):
    url = str(tmp_path / "mem")
    exps = list(stream())
    straight = ms.ClassBalancedBuffer(20, seed=3)
    for exp in exps:
        straight.post_adapt(None, exp)
    first = ms.ClassBalancedBuffer(20, seed=3, store=url, name="run")
    for exp in exps[:2]:
        first.post_adapt(None, exp)
    assert [c.seq for c in open_store(url).log("run")] == [first.commit - 1, first.commit]
    again = ms.ClassBalancedBuffer(20, seed=3, store=url, name="run")  # a new process
    assert again.memory.buffer.equals(first.memory.buffer)
    for exp in exps[2:]:
        again.post_adapt(None, exp)
    assert again.memory.buffer.equals(straight.memory.buffer)
    assert len(open_store(url).log("run")) == 5


def test_rebuilt_with_other_parameters_is_refused(tmp_path):
    url = str(tmp_path / "mem")
    policy = ms.ClassBalancedBuffer(20, store=url, name="run")
    policy.post_adapt(None, stream()[0])
    with pytest.raises(ValueError, match="already holds 'run'"):
        ms.ClassBalancedBuffer(30, store=url, name="run")
    with pytest.raises(ValueError, match="already holds 'run'"):
        ms.ExperienceBalancedBuffer(20, store=url, name="run")


def test_store_and_name_go_together(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        ms.ClassBalancedBuffer(20, store=str(tmp_path / "m"))


def test_pickles_as_a_reference(tmp_path):
    url = str(tmp_path / "mem")
    policy = ms.ClassBalancedBuffer(60, store=url, name="run")
    plain = ms.ClassBalancedBuffer(60)
    for exp in stream():
        policy.post_adapt(None, exp)
        plain.post_adapt(None, exp)
    blob = pickle.dumps(policy)
    assert b"ExemplarSet" not in blob and "memory" in pickle.loads(blob).__dict__
    back = pickle.loads(blob)
    assert back.memory.buffer.equals(policy.memory.buffer) and back.commit == policy.commit
    items = [back.buffer[i] for i in range(len(back.buffer))]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(items, policy.buffer, strict=True))
    # Without a store the memory is pickled whole (nothing else holds it).
    assert pickle.loads(pickle.dumps(plain)).memory.buffer.equals(plain.memory.buffer)


def test_herding_policy_pickles_with_its_model(tmp_path):
    model = MLP()
    strategy = ms.HerdingSelectionStrategy(model, "features")
    policy = ms.ParametricBuffer(
        20, groupby="class", selection_strategy=strategy, store=str(tmp_path / "m"), name="h"
    )
    plain = ms.ParametricBuffer(20, groupby="class", selection_strategy=strategy)
    exps = list(stream())
    policy.post_adapt(None, exps[0])
    plain.post_adapt(None, exps[0])
    model2, back = pickle.loads(pickle.dumps((model, policy)))
    assert back.selection_strategy.model is model2
    back.post_adapt(None, exps[1])
    plain.post_adapt(None, exps[1])
    assert np.array_equal(back.memory.buffer.ids, plain.memory.buffer.ids)


def test_a_checkpoint_older_than_the_store_resumes_at_its_commit(tmp_path):
    # Killed after the memory's commit for experience 2 but before Avalanche's own checkpoint:
    # the checkpoint (taken after experience 1) names commit 1; the run repeats experience 2
    # from there; its next commit supersedes the orphaned commit 2 (the checkpoint is the truth).
    url = str(tmp_path / "mem")
    exps = list(stream())
    straight = ms.ClassBalancedBuffer(20, seed=3)
    for exp in exps:
        straight.post_adapt(None, exp)
    policy = ms.ClassBalancedBuffer(20, seed=3, store=url, name="run")
    for exp in exps[:2]:
        policy.post_adapt(None, exp)
    checkpoint = pickle.dumps(policy)
    policy.post_adapt(None, exps[2])  # committed, then the process dies
    back = pickle.loads(checkpoint)
    assert back.commit == 1 and len(back.memory.buffer) == 20
    for exp in exps[2:]:
        back.post_adapt(None, exp)
    assert back.memory.buffer.equals(straight.memory.buffer)
    log = open_store(url).log("run")
    assert [c.seq for c in log] == [0, 1, 2, 3, 4, 5]
    assert "resumed from commit 1; supersedes up to 2" in log[3].message
    assert open_store(url).load("run").buffer.equals(straight.memory.buffer)

"""Bad input, one case at a time: a TypeError/ValueError naming the argument and the value;
a failed update or load leaves the buffer exactly as it was (generator state included)."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

import memstore
from memstore import (
    ClassBalancedBuffer,
    ClosestToCenterSelectionStrategy,
    Experience,
    ExperienceBalancedBuffer,
    HerdingSelectionStrategy,
    ParametricBuffer,
    RandomExemplarsSelectionStrategy,
    ReservoirSamplingBuffer,
)
from memstore.testing.reference import assert_state_equal

BUFFERS = [ReservoirSamplingBuffer, ExperienceBalancedBuffer, ClassBalancedBuffer, ParametricBuffer]
MODEL = torch.nn.Sequential(OrderedDict(feat=torch.nn.Identity(), head=torch.nn.Linear(2, 2)))


# -- constructor arguments ----------------------------------------------------------------------
@pytest.mark.parametrize("cls", BUFFERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_max_size(cls, value):
    expected = (
        f"The 'max_size' parameter of {cls.__name__} must be a positive int. Got {value} instead."
    )
    with pytest.raises(ValueError) as info:
        cls(value)
    assert str(info.value) == expected


@pytest.mark.parametrize("cls", BUFFERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [2.5, 3.0, "3", None, True, False, np.float32(4)])
def test_non_int_max_size(cls, value):
    pattern = rf"'max_size' parameter of {cls.__name__}.*{re.escape(repr(value))}"
    with pytest.raises(TypeError, match=pattern):
        cls(value)


@pytest.mark.parametrize("cls", BUFFERS, ids=lambda c: c.__name__)
def test_numpy_int_max_size_is_accepted(cls):
    assert cls(np.int64(4)).max_size == 4


@pytest.mark.parametrize("cls", BUFFERS, ids=lambda c: c.__name__)
def test_bad_seed_and_resize(cls):
    with pytest.raises(ValueError, match="'seed'.*-1"):
        cls(5, seed=-1)
    with pytest.raises(TypeError, match="'seed'.*1.5"):
        cls(5, seed=1.5)
    buf = cls(5)
    with pytest.raises(ValueError, match="'new_size'.*0"):
        buf.resize(0)
    with pytest.raises(TypeError, match="'new_size'.*True"):
        buf.resize(True)
    with pytest.raises(TypeError, match="'experience'.*list"):
        buf.update([0, 1, 2])
    assert buf.max_size == 5


@pytest.mark.parametrize("cls", [ExperienceBalancedBuffer, ClassBalancedBuffer])
def test_balanced_arguments(cls):
    total = "num_experiences" if cls is ExperienceBalancedBuffer else "total_num_classes"
    with pytest.raises(TypeError, match="'adaptive_size'.*'yes'"):
        cls(5, adaptive_size="yes")
    with pytest.raises(ValueError, match=f"'{total}'.*None"):
        cls(5, adaptive_size=False)
    with pytest.raises(ValueError, match=f"'{total}'.*0"):
        cls(5, False, 0)
    with pytest.raises(TypeError, match=f"'{total}'.*2.0"):
        cls(5, False, 2.0)


@pytest.mark.parametrize("groupby", ["classes", "Class", "", 1])
def test_unknown_groupby(groupby):
    with pytest.raises(ValueError, match=rf"'groupby' parameter of ParametricBuffer.*{groupby!r}"):
        ParametricBuffer(5, groupby=groupby)


def test_bad_selection_strategy():
    with pytest.raises(TypeError, match="'selection_strategy'.*str"):
        ParametricBuffer(5, selection_strategy="herding")
    with pytest.raises(TypeError, match="'model'.*str"):
        HerdingSelectionStrategy("resnet", "feat")
    with pytest.raises(TypeError, match="'layer_name'.*3"):
        HerdingSelectionStrategy(MODEL, 3)


# -- experiences --------------------------------------------------------------------------------
def test_lengths_differ():
    with pytest.raises(ValueError, match="'ids'.*length 3.*Got length 2"):
        Experience(targets=[0, 1, 2], ids=[5, 6])
    with pytest.raises(ValueError, match="'task_labels'.*length 3.*Got length 4"):
        Experience(targets=[0, 1, 2], task_labels=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="'data'.*3.*len 2"):
        Experience(targets=[0, 1, 2], data=[1, 2])


def test_duplicate_ids():
    with pytest.raises(ValueError, match=r"'ids'.*unique.*\[4, 7\]"):
        Experience(targets=[0, 1, 2, 3, 4], ids=[7, 4, 7, 4, 1])


@pytest.mark.parametrize(
    "targets,shown",
    [([0, 1.5, 2], "1.5"), (["a", "b"], "'a'"), ([0, float("nan")], "nan"), ([True], "bool")],
)
def test_non_integer_targets(targets, shown):
    with pytest.raises(TypeError, match=rf"'targets' parameter of Experience.*{shown}"):
        Experience(targets=targets)


def test_other_bad_columns():
    with pytest.raises(TypeError, match="'ids'.*float"):
        Experience(targets=[0, 1], ids=[0.5, 1])
    with pytest.raises(TypeError, match="'task_labels'"):
        Experience(targets=[0, 1], task_labels=[0, "x"])
    with pytest.raises(ValueError, match=r"'targets'.*1-D.*\(2, 2\)"):
        Experience(targets=[[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="'source'.*3"):
        Experience(targets=[0], source=3)
    with pytest.raises(ValueError, match="'index'.*-1"):
        Experience(targets=[0], index=-1)
    # Integral floats and tensors are accepted, as Avalanche's int(target) does.
    exp = Experience(targets=torch.tensor([1.0, 2.0]), ids=np.array([3, 4], dtype=np.uint8))
    assert exp.targets.tolist() == [1, 2] and exp.targets.dtype == np.int64
    assert exp.ids.dtype == np.int64


# -- features and k -----------------------------------------------------------------------------
STRATEGIES = [
    HerdingSelectionStrategy(MODEL, "feat"),
    ClosestToCenterSelectionStrategy(MODEL, "feat"),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: type(s).__name__)
def test_bad_features(strategy):
    make = strategy.make_sorted_indices_from_features
    with pytest.raises(ValueError, match=r"'features'.*2-D.*\(3,\)"):
        make(np.zeros(3))
    with pytest.raises(ValueError, match=r"'features'.*2-D.*\(2, 2, 2\)"):
        make(np.zeros((2, 2, 2)))
    for bad in (np.nan, np.inf, -np.inf):
        feats = np.zeros((4, 2), dtype=np.float32)
        feats[2, 1] = bad
        with pytest.raises(ValueError, match=r"'features'.*finite.*\[2\]"):
            make(feats)
    with pytest.raises(ValueError, match=r"'features'.*finite.*\[0\]"):
        make(np.array([[1e39, 0.0]]))  # overflows float32
    with pytest.raises(TypeError, match="'features'.*numeric"):
        make(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="'k'.*at most.*3.*Got 4"):
        make(np.zeros((3, 2)), k=4)
    with pytest.raises(ValueError, match="'k'.*-1"):
        make(np.zeros((3, 2)), k=-1)
    with pytest.raises(TypeError, match="'k'.*1.0"):
        make(np.zeros((3, 2)), k=1.0)


def test_finite_features_whose_sum_overflows_are_accepted():
    from memstore._validation import check_features

    big = np.full((4, 2), 3e38, dtype=np.float32)  # each finite; their float32 sum is inf
    assert np.array_equal(check_features(big, "X"), big)


class NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.feat = torch.nn.Identity()

    def forward(self, x):
        return self.feat(x * float("nan"))


def test_model_giving_nan_features_fails_cleanly():
    src = memstore.ArraySource(np.ones((6, 2), dtype=np.float32), np.zeros(6, dtype=np.int64))
    buf = ParametricBuffer(3, None, HerdingSelectionStrategy(NaNModel(), "feat"))
    before = buf.state_dict()
    with pytest.raises(ValueError, match="'features'.*finite"):
        buf.update(Experience.from_dataset(src))
    assert_state_equal(buf.state_dict(), before)


# -- failures leave the buffer as it was ----------------------------------------------------------
def filled(buf):
    buf.update(Experience(targets=[0, 1, 1, 0, 2, 2, 1], ids=np.arange(7), index=0))
    buf.update(Experience(targets=[3, 1, 0], ids=np.arange(7, 10), index=1))
    return buf


def test_fixed_mode_overflow_class_balanced():
    buf = filled(ClassBalancedBuffer(8, adaptive_size=False, total_num_classes=4, seed=2))
    before = buf.state_dict()
    with pytest.raises(ValueError, match="total_num_classes=4.*5 groups"):
        buf.update(Experience(targets=[1, 4, 3], ids=[20, 21, 22]))
    assert_state_equal(buf.state_dict(), before)


def test_fixed_mode_overflow_experience_balanced():
    buf = filled(ExperienceBalancedBuffer(8, adaptive_size=False, num_experiences=2, seed=2))
    before = buf.state_dict()
    with pytest.raises(ValueError, match="num_experiences=2.*3 groups"):
        buf.update(Experience(targets=[1, 4, 3], ids=[20, 21, 22], index=2))
    assert_state_equal(buf.state_dict(), before)


def test_experience_balanced_repeated_index():
    buf = filled(ExperienceBalancedBuffer(8, seed=2))
    before = buf.state_dict()
    with pytest.raises(ValueError, match="already holds experience 1"):
        buf.update(Experience(targets=[1, 2], ids=[30, 31], index=1))
    assert_state_equal(buf.state_dict(), before)


class FailingRandom(RandomExemplarsSelectionStrategy):
    """Random selection that fails at its n-th call, after earlier calls changed the groups
    and advanced the generator."""

    def __init__(self) -> None:
        self.calls, self.fail_at = 0, None

    def select(self, n, *, features=None, generator, k):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("selection failed")
        return super().select(n, features=features, generator=generator, k=k)


@pytest.mark.parametrize("groupby", [None, "class", "experience"])
def test_update_failing_mid_way_is_rolled_back(groupby):
    strategy = FailingRandom()
    buf = filled(ParametricBuffer(6, groupby, strategy, seed=4))
    before = buf.state_dict()
    exp = Experience(targets=[2, 3, 4, 2, 0], ids=np.arange(40, 45), index=3)
    strategy.calls, strategy.fail_at = 0, 3
    with pytest.raises(RuntimeError, match="selection failed"):
        buf.update(exp)
    assert strategy.calls == 3
    assert_state_equal(buf.state_dict(), before)
    # and it continues exactly like a buffer that never saw the failure
    twin = filled(ParametricBuffer(6, groupby, FailingRandom(), seed=4))
    strategy.fail_at = None
    buf.update(exp)
    twin.update(exp)
    assert_state_equal(buf.state_dict(), twin.state_dict())


def test_reservoir_update_failing_mid_way_is_rolled_back(monkeypatch):
    buf = filled(ClassBalancedBuffer(8, seed=5))
    before = buf.state_dict()
    add = memstore.policies.reservoir.ReservoirSamplingBuffer.add
    calls = []

    def failing_add(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise MemoryError("simulated")
        add(self, rows)

    monkeypatch.setattr(memstore.policies.reservoir.ReservoirSamplingBuffer, "add", failing_add)
    with pytest.raises(MemoryError):
        buf.update(Experience(targets=[2, 3, 4, 2, 0], ids=np.arange(40, 45)))
    assert calls == [2, 1]  # the first class was drawn and added before the failure
    assert_state_equal(buf.state_dict(), before)


def test_resize_failing_mid_way_is_rolled_back():
    strategy = FailingRandom()
    buf = filled(ParametricBuffer(9, "class", strategy, seed=4))
    before = buf.state_dict()
    strategy.calls, strategy.fail_at = 0, 2
    with pytest.raises(RuntimeError):
        buf.resize(4)
    assert_state_equal(buf.state_dict(), before)
    assert buf.max_size == 9


# -- load_state_dict ------------------------------------------------------------------------------
def states():
    return {
        "reservoir": filled(ReservoirSamplingBuffer(6, seed=1)),
        "class": filled(ClassBalancedBuffer(6, seed=1)),
        "experience": filled(ExperienceBalancedBuffer(6, seed=1)),
        "parametric": filled(ParametricBuffer(6, "class", seed=1)),
    }


def test_load_state_from_a_different_policy():
    bufs = states()
    for name, buf in bufs.items():
        for other_name, other in bufs.items():
            if name == other_name:
                continue
            before = other.state_dict()
            with pytest.raises(ValueError, match=type(buf).__name__) as info:
                other.load_state_dict(buf.state_dict())
            assert type(other).__name__ in str(info.value)
            assert_state_equal(other.state_dict(), before)


def test_load_state_with_a_different_selection_strategy():
    herding = ParametricBuffer(4, "class", HerdingSelectionStrategy(MODEL, "feat"))
    random = states()["parametric"]
    with pytest.raises(ValueError, match="RandomExemplarsSelectionStrategy.*HerdingSelection"):
        herding.load_state_dict(random.state_dict())


def corruptions():
    def drop(key):
        return lambda s: {k: v for k, v in s.items() if k != key}

    def col(name, fn):
        def apply(s):
            return {**s, "columns": {**s["columns"], name: fn(s["columns"][name])}}

        return apply

    def params(**changes):
        return lambda s: {**s, "params": {**s["params"], **changes}}

    return {
        "missing key": (drop("columns"), r"missing keys \['columns'\]"),
        "unexpected key": (lambda s: {**s, "extra": 1}, r"unexpected keys \['extra'\]"),
        "not a dict": (lambda s: [1, 2], "must be a dict"),
        "format": (lambda s: {**s, "format": 99}, "format 99"),
        "short column": (col("targets", lambda c: c[:-1]), "'targets'"),
        "2-D column": (col("ids", lambda c: c.reshape(1, -1)), "'ids'"),
        "missing column": (
            lambda s: {**s, "columns": {k: v for k, v in s["columns"].items() if k != "ids"}},
            "ids",
        ),
        "source code": (col("source", lambda c: c + 5), "source codes"),
        "string ids": (col("ids", lambda c: c.astype(str).astype(object) + "x"), "corrupted"),
        "scrambled groups": (col("group", lambda c: c[::-1].copy()), "group"),
        "unknown group": (col("group", lambda c: c + 100), "group"),
        "oversized group": (
            lambda s: {**s, "groups": {**s["groups"], "max_sizes": s["groups"]["max_sizes"] * 0}},
            "group",
        ),
        "generator state short": (
            lambda s: {**s, "generator_state": s["generator_state"][:10]},
            "generator_state",
        ),
        "generator state junk": (
            lambda s: {**s, "generator_state": np.zeros_like(s["generator_state"])},
            "generator_state",
        ),
        "num_updates": (lambda s: {**s, "num_updates": "x"}, "corrupted"),
        "max_size": (params(max_size=0), "max_size"),
        "max_size below content": (params(max_size=1), "max_size|size"),
        "params unexpected": (params(colour="red"), "colour"),
        "adaptive_size": (params(adaptive_size="no"), "adaptive_size"),
    }


@pytest.mark.parametrize("kind", ["reservoir", "class", "experience", "parametric"])
@pytest.mark.parametrize("case", list(corruptions()))
def test_load_corrupted_state(kind, case):
    corrupt, pattern = corruptions()[case]
    source = states()[kind]
    state = source.state_dict()
    if case == "scrambled groups" and kind == "reservoir":
        pytest.skip("a single group: nothing to scramble")
    bad = corrupt(state)
    target = states()[kind]
    target.resize(3)  # differs from the state's content
    before = target.state_dict()
    with pytest.raises((ValueError, TypeError), match=pattern) as info:
        target.load_state_dict(bad)
    if case != "not a dict":
        assert isinstance(info.value, ValueError)
    assert_state_equal(target.state_dict(), before)
    # the intact state still loads
    target.load_state_dict(state)
    assert_state_equal(target.state_dict(), state)


def test_buffer_from_state_unknown_policy():
    state = states()["class"].state_dict()
    with pytest.raises(ValueError, match="'Nonsense'.*ClassBalancedBuffer"):
        memstore.buffer_from_state({**state, "policy": "Nonsense"})
    with pytest.raises(ValueError, match="None"):
        memstore.buffer_from_state([1, 2])


@pytest.mark.parametrize("source", ["-x", "", "zarr.json", "a/b"])
def test_experience_source_follows_the_one_name_rule(source):
    with pytest.raises(ValueError, match="'source' parameter of Experience"):
        Experience(targets=[0], source=source)


@pytest.mark.parametrize("sources", [3, ["train"], "train"])
def test_update_and_resize_refuse_sources_that_are_not_a_mapping(sources):
    buf = memstore.ReservoirSamplingBuffer(5)
    buf.update(Experience(targets=[0, 1], ids=[0, 1]))
    before = buf.state_dict()
    with pytest.raises(TypeError, match="'sources' parameter of ReservoirSamplingBuffer.update"):
        buf.update(Experience(targets=[0], ids=[2]), sources=sources)
    with pytest.raises(TypeError, match="'sources' parameter of ReservoirSamplingBuffer.resize"):
        buf.resize(3, sources=sources)
    assert_state_equal(buf.state_dict(), before)


def test_a_missing_shard_is_a_named_error(tmp_path):
    with pytest.raises(memstore.SourceNotFoundError, match="does not exist"):
        memstore.ShardSource(str(tmp_path / "no-{0..1}.tar"), progress=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: memstore.ReservoirSamplingBuffer(10),
        lambda: memstore.ClassBalancedBuffer(10),
        lambda: memstore.ExperienceBalancedBuffer(10),
        lambda: memstore.ParametricBuffer(10, groupby="class"),
    ],
)
def test_a_known_id_with_another_target_or_task_is_refused_and_changes_nothing(make):
    buf = make()
    buf.update(Experience(targets=[0, 1, 2], ids=[5, 6, 7], source="s"))
    before = buf.state_dict()
    with pytest.raises(memstore.IdConflictError, match=r"\('s', 6\)") as info:
        buf.update(Experience(targets=[3, 4], ids=[8, 6], source="s"))
    assert isinstance(info.value, ValueError)
    with pytest.raises(memstore.IdConflictError, match="task"):
        buf.update(Experience(targets=[0], ids=[5], task_labels=1, source="s"))
    assert_state_equal(buf.state_dict(), before)
    # The same id with the same target and task, or another source, is accepted.
    buf.update(Experience(targets=[1], ids=[6], source="s"))
    buf.update(Experience(targets=[9], ids=[6], source="other"))


def test_from_dataset_refuses_a_concatenation_without_ids():
    a = memstore.ArraySource(np.zeros((4, 2), dtype=np.float32), np.arange(4) % 2)
    both = torch.utils.data.ConcatDataset([a, a])
    both.targets = np.r_[a.targets, a.targets]
    with pytest.raises(ValueError, match="ConcatDataset"):
        Experience.from_dataset(both)
    with pytest.raises(ValueError, match="ConcatDataset"):
        Experience.from_dataset(torch.utils.data.Subset(both, [0, 5]))
    exp = Experience.from_dataset(both, ids=np.arange(8) + 100)
    assert exp.ids.tolist() == list(range(100, 108))

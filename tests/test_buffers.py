"""Buffer policies against the plain reference (tests/reference.py), invariants, and state.

Equality: on seeded random streams (updates with resizes interleaved) every policy and every
groupby must hold exactly the reference's rows, in the reference's order, with the same group
lengths (and, for the reservoir family, the same weights).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memstore
from memstore import (
    ClassBalancedBuffer,
    ClosestToCenterSelectionStrategy,
    ExperienceBalancedBuffer,
    HerdingSelectionStrategy,
    ParametricBuffer,
    RandomExemplarsSelectionStrategy,
    ReservoirSamplingBuffer,
)
from memstore.testing.reference import (
    Exp,
    RefClassBalanced,
    RefExperienceBalanced,
    RefParametric,
    RefReservoir,
    RefReservoirBuffer,
    assert_state_equal,
    group_lengths,
    make_rows,
    random_stream,
)

SOURCE_LEN = {"a": 120, "b": 80}
NUM_STREAMS = 25
NUM_OPS = 8


def make_sources(kind: str, rng: np.random.Generator) -> dict[str, memstore.ArraySource]:
    """Inputs per source: small integers (many exact ties) or random float32."""
    out = {}
    for name, n in SOURCE_LEN.items():
        if kind == "ties":
            x = rng.integers(0, 3, size=(n, 2)).astype(np.float32)
        else:
            x = rng.standard_normal((n, 3)).astype(np.float32)
        out[name] = memstore.ArraySource(x, np.zeros(n, dtype=np.int64))
    return out


def feature_table(sources) -> dict[tuple[str, int], list[float]]:
    return {
        (name, i): src.inputs[i].tolist() for name, src in sources.items() for i in range(len(src))
    }


def identity_model(d: int) -> torch.nn.Module:
    """Features at layer 'feat' are the inputs themselves, so the reference knows them."""
    return torch.nn.Sequential(OrderedDict(feat=torch.nn.Identity(), head=torch.nn.Linear(d, 2)))


def to_experience(exp: Exp) -> memstore.Experience:
    return memstore.Experience(
        targets=exp.targets, ids=exp.ids, task_labels=exp.tasks, source=exp.source, index=exp.index
    )


def assert_same(buf, ref, context: str) -> None:
    ex = buf.buffer
    rows = ref.rows
    assert len(buf) == len(rows), context
    assert ex.source.tolist() == [r.source for r in rows], context
    assert ex.ids.tolist() == [r.id for r in rows], context
    assert ex.targets.tolist() == [r.target for r in rows], context
    assert ex.task_labels.tolist() == [r.task for r in rows], context
    assert ex.experience.tolist() == [r.experience for r in rows], context
    for column in (ex.ids, ex.targets, ex.task_labels, ex.experience):
        assert column.dtype == np.int64, context
    if isinstance(ref, RefReservoirBuffer):
        assert buf.max_size == ref.group.max_size, context
        weights = buf.state_dict()["columns"]["weight"].tolist()
        assert weights == ref.group.weights, context
        return
    assert buf.max_size == ref.max_size, context
    assert list(buf.buffer_groups) == list(ref.groups), context
    assert {k: g.max_size for k, g in buf.buffer_groups.items()} == ref.group_lengths(), context
    if isinstance(ref, RefParametric):
        assert [len(g) for g in buf.buffer_groups.values()] == [
            len(r) for r in ref.groups.values()
        ], context
    else:
        assert [len(g) for g in buf.buffer_groups.values()] == [
            len(g.rows) for g in ref.groups.values()
        ], context
        weights = buf.state_dict()["columns"].get("weight", np.empty(0)).tolist()
        assert weights == [w for g in ref.groups.values() for w in g.weights], context


def run_both(buf, ref, ops, context, sources=None) -> None:
    for step, (kind, arg) in enumerate(ops):
        if kind == "update":
            buf.update(to_experience(arg), sources=sources)
            ref.update(arg)
        else:
            buf.resize(arg, sources=sources) if sources else buf.resize(arg)
            ref.resize(arg)
        assert_same(buf, ref, f"{context} after op {step} {kind} {arg!r}")


# -- equality with the reference ----------------------------------------------------------------
@pytest.mark.parametrize("indices", ["none", "sequential", "shuffled"])
def test_reservoir_equals_reference(indices):
    for s in range(NUM_STREAMS):
        rng = np.random.default_rng(s)
        ops = random_stream(rng, NUM_OPS, sources=SOURCE_LEN, indices=indices)
        max_size = int(rng.integers(1, 25))
        run_both(
            ReservoirSamplingBuffer(max_size, seed=s),
            RefReservoirBuffer(max_size, seed=s),
            ops,
            f"stream {s} max_size {max_size}",
        )


@pytest.mark.parametrize("indices", ["none", "sequential", "shuffled"])
@pytest.mark.parametrize("adaptive", [True, False])
def test_experience_balanced_equals_reference(adaptive, indices):
    for s in range(NUM_STREAMS):
        rng = np.random.default_rng(100 + s)
        ops = random_stream(rng, NUM_OPS, sources=SOURCE_LEN, indices=indices)
        max_size = int(rng.integers(1, 25))
        total = None if adaptive else sum(op == "update" for op, _ in ops) + int(rng.integers(3))
        run_both(
            ExperienceBalancedBuffer(max_size, adaptive, total, seed=s),
            RefExperienceBalanced(max_size, adaptive, total, seed=s),
            ops,
            f"stream {s} max_size {max_size} total {total}",
        )


@pytest.mark.parametrize("adaptive", [True, False])
def test_class_balanced_equals_reference(adaptive):
    for s in range(2 * NUM_STREAMS):
        rng = np.random.default_rng(200 + s)
        ops = random_stream(rng, NUM_OPS, sources=SOURCE_LEN, indices="none")
        max_size = int(rng.integers(1, 25))
        total = None if adaptive else 5 + int(rng.integers(3))
        run_both(
            ClassBalancedBuffer(max_size, adaptive, total, seed=s),
            RefClassBalanced(max_size, adaptive, total, seed=s),
            ops,
            f"stream {s} max_size {max_size} total {total}",
        )


STRATEGIES = {
    "random": lambda model: RandomExemplarsSelectionStrategy(),
    "herding": lambda model: HerdingSelectionStrategy(model, "feat", batch_size=16),
    "closest": lambda model: ClosestToCenterSelectionStrategy(model, "feat", batch_size=16),
}


@pytest.mark.parametrize("groupby", [None, "class", "task", "experience"])
@pytest.mark.parametrize("strategy", ["random", "herding", "closest"])
def test_parametric_equals_reference(groupby, strategy):
    # Empty experiences included: for groupby None/'experience' they create (or touch) their
    # group, as in Avalanche, which shifts later group lengths and random draws.
    allow_empty = True
    for s in range(NUM_STREAMS):
        rng = np.random.default_rng(300 + s)
        kind = "ties" if s % 2 else "floats"
        sources = make_sources(kind, rng)
        model = identity_model(sources["a"].inputs.shape[1])
        indices = ["none", "sequential", "shuffled"][s % 3]
        ops = random_stream(
            rng, NUM_OPS, sources=SOURCE_LEN, indices=indices, allow_empty=allow_empty
        )
        max_size = int(rng.integers(1, 25))
        buf = ParametricBuffer(max_size, groupby, STRATEGIES[strategy](model), seed=s)
        ref = RefParametric(max_size, groupby, strategy, seed=s, features=feature_table(sources))
        run_both(
            buf,
            ref,
            ops,
            f"stream {s} ({kind}) max_size {max_size}",
            sources=sources if strategy != "random" else None,
        )


def test_seeded_reservoir_holds_what_the_global_rng_gives():
    """Avalanche draws from the global generator: torch.manual_seed(s) then torch.rand."""
    rng = np.random.default_rng(7)
    ops = random_stream(rng, 6, sources=SOURCE_LEN, resize_prob=0)
    for seed in (0, 1, 1234):
        buf = ReservoirSamplingBuffer(10, seed=seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            ref = RefReservoir(10, torch.default_generator)
            for i, (_, exp) in enumerate(ops):
                buf.update(to_experience(exp))
                ref.add(make_rows(exp, i))
        assert buf.buffer.ids.tolist() == [r.id for r in ref.rows]
        assert buf.state_dict()["columns"]["weight"].tolist() == ref.weights


@pytest.mark.parametrize("seed", [0, 3, 2**31 + 5])
def test_generator_stream_equals_global_stream(seed):
    """The fact the reservoir family relies on: a seeded Generator replays the global stream,
    and consecutive draws equal one draw of the total size."""
    g = torch.Generator().manual_seed(seed)
    pieces = torch.cat([torch.rand(n, generator=g) for n in (3, 17, 0, 40, 1)])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        global_draw = torch.rand(61)
    assert torch.equal(pieces, global_draw)


def test_reservoir_weight_ties_keep_lower_position_and_new_before_old():
    """With seed 21, draws 1205 and 2155 of the stream are equal (the 36th and 37th largest of
    the first 3000), so a buffer of 36 keeps exactly one of them."""
    g = torch.Generator().manual_seed(21)
    w = torch.rand(3000, generator=g)
    assert w[1205] == w[2155] and int((w > w[1205]).sum()) == 35
    one = ReservoirSamplingBuffer(36, seed=21)
    one.update(memstore.Experience(targets=np.zeros(3000, dtype=int)))
    assert one.buffer.ids[-1] == 1205 and 2155 not in one.buffer.ids
    # Across updates the tie is between an old row (id 1205) and a new one (id 2155).
    two = ReservoirSamplingBuffer(36, seed=21)
    two.update(memstore.Experience(targets=np.zeros(2000, dtype=int)))
    assert 1205 in two.buffer.ids
    two.update(memstore.Experience(targets=np.zeros(1000, dtype=int), ids=np.arange(2000, 3000)))
    assert two.buffer.ids[-1] == 2155 and 1205 not in two.buffer.ids


def test_group_lengths_rules():
    assert ClassBalancedBuffer(10).get_group_lengths(3) == [4, 3, 3]
    assert ClassBalancedBuffer(10).get_group_lengths(0) == []
    assert ClassBalancedBuffer(2).get_group_lengths(3) == [1, 1, 0]
    assert ClassBalancedBuffer(10, False, 4).get_group_lengths(3) == [2, 2, 2]
    assert group_lengths(10, [5, 1, 3]) == {1: 4, 3: 3, 5: 3}


def test_class_balanced_remainder_goes_to_smallest_keys_in_update_and_resize():
    buf = ClassBalancedBuffer(7, seed=0)
    buf.update(memstore.Experience(targets=[9] * 5 + [2] * 5 + [4] * 5))
    assert {k: g.max_size for k, g in buf.buffer_groups.items()} == {9: 2, 2: 3, 4: 2}
    assert list(buf.buffer_groups) == [9, 2, 4]  # creation order
    buf.resize(5)
    assert {k: g.max_size for k, g in buf.buffer_groups.items()} == {9: 1, 2: 2, 4: 2}
    assert [len(g) for g in buf.buffer_groups.values()] == [1, 2, 2]


def test_resize_before_update_is_noop():
    for buf in (
        ClassBalancedBuffer(5),
        ExperienceBalancedBuffer(5),
        ParametricBuffer(5),
        ReservoirSamplingBuffer(5),
    ):
        buf.resize(3)
        assert buf.max_size == 3 and len(buf) == 0


def test_reservoir_growth_does_not_bring_back_discarded():
    buf = ReservoirSamplingBuffer(3, seed=1)
    buf.update(memstore.Experience(targets=np.zeros(10, dtype=int)))
    kept = buf.buffer.ids.tolist()
    buf.resize(2)
    buf.resize(8)
    assert buf.buffer.ids.tolist() == kept[:2] and buf.max_size == 8


# -- properties ---------------------------------------------------------------------------------
@st.composite
def streams(draw):
    ops = []
    next_id = 0
    for _ in range(draw(st.integers(1, 6))):
        if ops and draw(st.booleans()) and draw(st.booleans()):
            ops.append(("resize", draw(st.integers(1, 25))))
            continue
        n = draw(st.integers(0, 12))
        targets = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
        tasks = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        source = draw(st.sampled_from(["a", "b"]))
        ops.append(("update", Exp(source, list(range(next_id, next_id + n)), targets, tasks)))
        next_id += n
    return ops


POLICIES = [
    lambda m, total: ReservoirSamplingBuffer(m, seed=1),
    lambda m, total: ExperienceBalancedBuffer(m, seed=2),
    lambda m, total: ExperienceBalancedBuffer(m, False, total, seed=3),
    lambda m, total: ClassBalancedBuffer(m, seed=4),
    lambda m, total: ClassBalancedBuffer(m, False, total, seed=5),
    lambda m, total: ParametricBuffer(m, None, seed=6),
    lambda m, total: ParametricBuffer(m, "class", seed=7),
    lambda m, total: ParametricBuffer(m, "task", seed=8),
    lambda m, total: ParametricBuffer(m, "experience", seed=9),
]


def check_invariants(buf) -> None:
    ex = buf.buffer
    assert len(buf) == len(ex) <= buf.max_size
    pairs = list(zip(ex.source.tolist(), ex.ids.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs), "duplicate (source, id) in the buffer"
    if not hasattr(buf, "buffer_groups"):
        return
    lengths = [g.max_size for g in buf.buffer_groups.values()]
    assert sum(lengths) <= buf.max_size
    for g in buf.buffer_groups.values():
        assert len(g) <= g.max_size
    n = len(lengths)
    if n and buf.adaptive_size:
        assert sum(lengths) == buf.max_size
        assert max(lengths) - min(lengths) <= 1
        by_key = [buf.buffer_groups[k].max_size for k in sorted(buf.buffer_groups)]
        assert by_key == sorted(by_key, reverse=True), "remainder not on the smallest keys"
    elif n:
        assert lengths == [buf.max_size // buf.total_num_groups] * n


@pytest.mark.parametrize("policy", range(len(POLICIES)))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=streams(), max_size=st.integers(1, 25), total=st.integers(1, 6))
def test_invariants_hold_on_any_stream(policy, ops, max_size, total):
    buf = POLICIES[policy](max_size, total)
    for kind, arg in ops:
        before = buf.state_dict()
        try:
            if kind == "update":
                buf.update(to_experience(arg))
            else:
                buf.resize(arg)
        except ValueError as err:
            # Only fixed mode may refuse, when it would see more groups than declared.
            assert not getattr(buf, "adaptive_size", True), err
            assert "adaptive_size=False" in str(err)
            assert_state_equal(buf.state_dict(), before)
            keys = set(buf.buffer_groups)
            keys |= set(arg.targets) if isinstance(buf, ClassBalancedBuffer) else {len(keys)}
            assert len(keys) > buf.total_num_groups
            continue
        check_invariants(buf)


EQUAL_PAIRS = {
    "reservoir": lambda m, t: (ReservoirSamplingBuffer(m, seed=t), RefReservoirBuffer(m, seed=t)),
    "eb-adaptive": lambda m, t: (
        ExperienceBalancedBuffer(m, seed=t),
        RefExperienceBalanced(m, True, None, seed=t),
    ),
    "eb-fixed": lambda m, t: (
        ExperienceBalancedBuffer(m, False, t, seed=t),
        RefExperienceBalanced(m, False, t, seed=t),
    ),
    "cb-adaptive": lambda m, t: (
        ClassBalancedBuffer(m, seed=t),
        RefClassBalanced(m, True, None, t),
    ),
    "cb-fixed": lambda m, t: (
        ClassBalancedBuffer(m, False, t, t),
        RefClassBalanced(m, False, t, t),
    ),
    "param-None": lambda m, t: (ParametricBuffer(m, None, seed=t), RefParametric(m, None, seed=t)),
    "param-class": lambda m, t: (
        ParametricBuffer(m, "class", seed=t),
        RefParametric(m, "class", seed=t),
    ),
    "param-task": lambda m, t: (
        ParametricBuffer(m, "task", seed=t),
        RefParametric(m, "task", seed=t),
    ),
}


@pytest.mark.parametrize("policy", list(EQUAL_PAIRS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=streams(), max_size=st.integers(1, 25), total=st.integers(1, 6))
def test_equals_reference_on_any_stream(policy, ops, max_size, total):
    """Hypothesis streams (it shrinks a failure to a minimal one); fixed mode must refuse
    exactly when the reference's group count exceeds the declared total."""
    buf, ref = EQUAL_PAIRS[policy](max_size, total)
    for step, (kind, arg) in enumerate(ops):
        refused = []
        for target in (ref, buf):
            try:
                if kind == "update":
                    target.update(to_experience(arg) if target is buf else arg)
                else:
                    target.resize(arg)
            except ValueError:
                refused.append(target)
        if refused:
            assert refused == [ref, buf], f"op {step}: only {type(refused[0]).__name__} refused"
            return
        assert_same(buf, ref, f"op {step} {kind} {arg!r}")


# -- state round trip ---------------------------------------------------------------------------
def _roundtrip_cases():
    cases = [
        ("reservoir", lambda m: ReservoirSamplingBuffer(m, seed=3), None),
        ("eb-adaptive", lambda m: ExperienceBalancedBuffer(m, seed=3), None),
        ("eb-fixed", lambda m: ExperienceBalancedBuffer(m, False, 12, seed=3), None),
        ("cb-adaptive", lambda m: ClassBalancedBuffer(m, seed=3), None),
        ("cb-fixed", lambda m: ClassBalancedBuffer(m, False, 6, seed=3), None),
    ]
    for groupby in (None, "class", "task", "experience"):
        for strategy in ("random", "herding", "closest"):
            cases.append((f"param-{groupby}-{strategy}", groupby, strategy))
    return cases


@pytest.mark.parametrize(
    "name,factory,strategy", _roundtrip_cases(), ids=[c[0] for c in _roundtrip_cases()]
)
def test_state_round_trip_mid_stream_continues_identically(name, factory, strategy):
    rng = np.random.default_rng(42)
    sources = make_sources("floats", rng)
    model = identity_model(3)
    ops = random_stream(rng, 8, sources=SOURCE_LEN, allow_empty=False, indices="sequential")
    use_sources = sources if strategy in ("herding", "closest") else None

    def build(max_size):
        if strategy is None:
            return factory(max_size)
        return ParametricBuffer(max_size, factory, STRATEGIES[strategy](model), seed=3)

    def apply(buf, op):
        kind, arg = op
        if kind == "update":
            buf.update(to_experience(arg), sources=use_sources)
        else:
            buf.resize(arg, sources=use_sources)

    for k in (1, 3, 5):
        buf = build(15)
        for op in ops[:k]:
            apply(buf, op)
        state = buf.state_dict()
        _assert_json_leaves(state)
        restored = memstore.buffer_from_state(
            state, selection_strategy=STRATEGIES[strategy](model) if strategy else None
        )
        other = build(4)  # different size: everything must come from the state
        other.load_state_dict(state)
        for b in (restored, other):
            assert type(b) is type(buf)
            assert_state_equal(b.state_dict(), state)
        for op in ops[k:]:
            for b in (buf, restored, other):
                apply(b, op)
            assert_state_equal(restored.state_dict(), buf.state_dict(), f"{name} k={k}")
            assert_state_equal(other.state_dict(), buf.state_dict(), f"{name} k={k}")
        assert buf.buffer.equals(restored.buffer)


def _assert_json_leaves(state, path="state"):
    if isinstance(state, dict):
        for key, value in state.items():
            assert isinstance(key, str), f"{path}: key {key!r}"
            _assert_json_leaves(value, f"{path}[{key!r}]")
    elif isinstance(state, list):
        for i, value in enumerate(state):
            _assert_json_leaves(value, f"{path}[{i}]")
    else:
        assert state is None or isinstance(state, (str, int, float, bool, np.ndarray)), (
            f"{path}: {type(state).__name__} is neither a JSON scalar nor a numpy array"
        )


def test_state_dict_is_a_snapshot_not_a_view():
    buf = ClassBalancedBuffer(6, seed=0)
    buf.update(memstore.Experience(targets=[0, 1, 0, 1, 2, 2, 2]))
    state = buf.state_dict()
    copy = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    buf.update(memstore.Experience(targets=[3, 3, 4], ids=[10, 11, 12]))
    assert_state_equal(state["columns"], copy["columns"])
    assert_state_equal(state["generator_state"], copy["generator_state"])


def test_parametric_empty_experience_creates_its_group_as_avalanche():
    """groupby='experience': an empty experience still gets a group and its share."""
    buf = ParametricBuffer(4, groupby="experience", seed=0)
    buf.update(memstore.Experience(targets=np.arange(10) % 3, index=0))
    buf.update(memstore.Experience(targets=np.empty(0, dtype=np.int64), index=1))
    assert list(buf.buffer_groups) == [0, 1]
    assert [g.max_size for g in buf.buffer_groups.values()] == [2, 2]
    assert len(buf.buffer_groups[0].buffer) == 2 and len(buf.buffer_groups[1].buffer) == 0
    none = ParametricBuffer(3, groupby=None, seed=0)
    none.update(memstore.Experience(targets=np.empty(0, dtype=np.int64)))
    assert list(none.buffer_groups) == [0] and len(none.buffer) == 0

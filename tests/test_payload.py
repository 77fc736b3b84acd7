"""Per-exemplar payloads (``Experience(payload=...)``): every policy keeps each payload row
with its exemplar through updates, resizes and re-selection — checked against the reference
loops carrying the payload as an extra column, and against the payload's own definition (a
function of (source, id)); bad payloads are named errors that change nothing; ReplayDataset
returns the payload and never adds a second task label."""

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
    ExemplarSet,
    Experience,
    ExperienceBalancedBuffer,
    HerdingSelectionStrategy,
    ParametricBuffer,
    PayloadMismatchError,
    ReplayDataset,
    ReservoirSamplingBuffer,
)
from memstore.testing.reference import (
    Exp,
    RefClassBalanced,
    RefExperienceBalanced,
    RefParametric,
    RefReservoirBuffer,
    assert_state_equal,
    random_stream,
    with_payloads,
)

SOURCE_LEN = {"a": 90, "b": 60}
SOURCE_CODE = {"a": 0, "b": 1}
WIDTH = 3


def logits_of(source: str, sid: int) -> tuple:
    """The payload row of (source, id): exact in float32, distinct for every sample."""
    return (float(sid), 1000.0 * SOURCE_CODE[source] + sid, -0.5 * sid)


def expected_logits(ex: ExemplarSet) -> np.ndarray:
    rows = [logits_of(s, i) for s, i in zip(ex.source.tolist(), ex.ids.tolist(), strict=True)]
    return np.array(rows, dtype=np.float32).reshape(-1, WIDTH)


def to_experience(exp: Exp) -> Experience:
    payload = np.array(exp.payloads, dtype=np.float32).reshape(-1, WIDTH)
    return Experience(
        targets=exp.targets,
        ids=exp.ids,
        task_labels=exp.tasks,
        source=exp.source,
        index=exp.index,
        payload={"logits": payload},
    )


def assert_aligned(buf, ref, context: str) -> None:
    ex = buf.buffer
    rows = ref.rows
    assert list(zip(ex.source.tolist(), ex.ids.tolist(), strict=True)) == [
        (r.source, r.id) for r in rows
    ], context
    if len(ex):
        got = ex.payload["logits"]
        assert got.dtype == np.float32 and got.shape == (len(ex), WIDTH), context
        assert got.tolist() == [list(r.payload) for r in rows], context
        np.testing.assert_array_equal(got, expected_logits(ex), err_msg=context)


def identity_model(d: int) -> torch.nn.Module:
    return torch.nn.Sequential(OrderedDict(feat=torch.nn.Identity(), head=torch.nn.Linear(d, 2)))


def make_sources(rng: np.random.Generator) -> dict[str, memstore.ArraySource]:
    return {
        name: memstore.ArraySource(
            rng.standard_normal((n, 3)).astype(np.float32), np.zeros(n, dtype=np.int64)
        )
        for name, n in SOURCE_LEN.items()
    }


def feature_table(sources) -> dict[tuple[str, int], list[float]]:
    return {
        (name, i): src.inputs[i].tolist() for name, src in sources.items() for i in range(len(src))
    }


def pair(policy: str, max_size: int, seed: int, rng, total: int):
    """(memstore buffer, reference, sources or None) for a policy name."""
    if policy == "reservoir":
        return ReservoirSamplingBuffer(max_size, seed), RefReservoirBuffer(max_size, seed), None
    if policy == "eb-adaptive":
        return (
            ExperienceBalancedBuffer(max_size, seed=seed),
            RefExperienceBalanced(max_size, True, None, seed),
            None,
        )
    if policy == "eb-fixed":
        return (
            ExperienceBalancedBuffer(max_size, False, total, seed),
            RefExperienceBalanced(max_size, False, total, seed),
            None,
        )
    if policy == "cb-adaptive":
        return (
            ClassBalancedBuffer(max_size, seed=seed),
            RefClassBalanced(max_size, True, None, seed),
            None,
        )
    if policy == "cb-fixed":
        return (
            ClassBalancedBuffer(max_size, False, total, seed),
            RefClassBalanced(max_size, False, total, seed),
            None,
        )
    _, groupby, strategy = policy.split("-")
    groupby = None if groupby == "none" else groupby
    sources = make_sources(rng)
    model = identity_model(3)
    chosen = {
        "random": memstore.RandomExemplarsSelectionStrategy(),
        "herding": HerdingSelectionStrategy(model, "feat", batch_size=16),
        "closest": ClosestToCenterSelectionStrategy(model, "feat", batch_size=16),
    }[strategy]
    ref = RefParametric(max_size, groupby, strategy, seed, features=feature_table(sources))
    return (
        ParametricBuffer(max_size, groupby, chosen, seed=seed),
        ref,
        None if strategy == "random" else sources,
    )


POLICIES = [
    "reservoir",
    "eb-adaptive",
    "eb-fixed",
    "cb-adaptive",
    "cb-fixed",
    *(
        f"param-{g}-{s}"
        for g in ("none", "class", "task", "experience")
        for s in ("random", "herding", "closest")
    ),
]


def run(policy: str, ops, max_size: int, seed: int, rng, total: int) -> None:
    buf, ref, sources = pair(policy, max_size, seed, rng, total)
    for step, (kind, arg) in enumerate(ops):
        refused = []
        for target in (ref, buf):
            try:
                if kind == "update":
                    if target is buf:
                        buf.update(to_experience(arg), sources=sources)
                    else:
                        ref.update(arg)
                elif target is buf:
                    buf.resize(arg, sources=sources)
                else:
                    ref.resize(arg)
            except ValueError:  # fixed mode with more groups than declared: both refuse
                refused.append(target)
        assert refused in ([], [ref, buf]), f"{policy} op {step}: only one refused"
        if refused:
            return
        assert_aligned(buf, ref, f"{policy} seed {seed} op {step} {kind}")
    restored = memstore.buffer_from_state(buf.state_dict(), buf.selection_strategy)
    assert restored.buffer.equals(buf.buffer)


@pytest.mark.parametrize("policy", POLICIES)
def test_payload_follows_its_exemplar_through_every_policy(policy):
    for s in range(6):
        rng = np.random.default_rng(1000 + s)
        indices = ["none", "sequential", "shuffled"][s % 3]
        ops = with_payloads(random_stream(rng, 7, sources=SOURCE_LEN, indices=indices), logits_of)
        run(policy, ops, int(rng.integers(1, 20)), s, rng, 5 + s % 3)


@st.composite
def streams(draw):
    ops, next_id = [], 0
    for _ in range(draw(st.integers(1, 6))):
        if ops and draw(st.booleans()) and draw(st.booleans()):
            ops.append(("resize", draw(st.integers(1, 20))))
            continue
        n = draw(st.integers(0, 10))
        targets = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        tasks = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        source = draw(st.sampled_from(["a", "b"]))
        ids = list(range(next_id, next_id + n))
        next_id += n
        ops.append(("update", Exp(source, ids, targets, tasks)))
    return with_payloads(ops, logits_of)


@pytest.mark.parametrize(
    "policy", ["reservoir", "eb-fixed", "cb-adaptive", "param-class-random", "param-none-herding"]
)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=streams(), max_size=st.integers(1, 20), total=st.integers(1, 5), seed=st.integers(0, 9))
def test_payload_alignment_on_any_stream(policy, ops, max_size, total, seed):
    run(policy, ops, max_size, seed, np.random.default_rng(seed), total)


# -- the payload's own rules --------------------------------------------------------------------
def test_experience_payload_is_checked_copied_and_read_only():
    logits = torch.arange(12.0).reshape(4, 3)
    exp = Experience(targets=[0, 1, 0, 1], payload={"logits": logits, "seen": np.ones(4, bool)})
    logits[0, 0] = 99.0  # later in-place changes of the caller's tensor do not reach it
    assert exp.payload["logits"].dtype == np.float32 and exp.payload["logits"][0, 0] == 0.0
    assert not exp.payload["logits"].flags.writeable
    assert exp.payload["seen"].dtype == np.bool_
    no_payload = Experience(targets=[0, 1])
    assert no_payload.payload == {}


@pytest.mark.parametrize(
    "payload,error,match",
    [
        ([np.zeros(3)], TypeError, "'payload' parameter of Experience must be a mapping"),
        ({"logits": [[0.0]] * 3}, TypeError, "numpy array or a torch tensor. Got list"),
        (
            {"logits": np.zeros((2, 4))},
            PayloadMismatchError,
            r"shape \[3, \.\.\.\]. Got shape \[2, 4\]",
        ),
        ({"logits": np.float32(1.0)}, TypeError, "numpy array or a torch tensor"),
        ({"logits": np.zeros(())}, PayloadMismatchError, r"Got shape \[\]"),
        ({"a/b": np.zeros(3)}, ValueError, "payload names follow"),
        ({"": np.zeros(3)}, ValueError, "payload names follow"),
        ({3: np.zeros(3)}, TypeError, "payload names follow"),
        ({"s": np.array(["x", "y", "z"])}, TypeError, "bool, int, uint or float"),
        ({"o": np.array([1, None, 2], dtype=object)}, TypeError, "bool, int, uint or float"),
        ({"b": torch.zeros(3, dtype=torch.bfloat16)}, TypeError, "bfloat16"),
    ],
)
def test_bad_payloads_are_named_errors(payload, error, match):
    with pytest.raises(error, match=match):
        Experience(targets=[0, 1, 2], payload=payload)


def test_payload_mismatch_error_is_a_memstore_value_error():
    assert issubclass(PayloadMismatchError, memstore.MemstoreError)
    assert issubclass(PayloadMismatchError, ValueError)


def _filled(buf):
    buf.update(
        Experience(
            targets=[0, 1, 2, 0, 1, 2],
            ids=np.arange(6),
            payload={"logits": np.zeros((6, 3), np.float32)},
        )
    )
    return buf


@pytest.mark.parametrize(
    "make",
    [
        lambda: ReservoirSamplingBuffer(4, seed=0),
        lambda: ClassBalancedBuffer(4, seed=0),
        lambda: ExperienceBalancedBuffer(4, seed=0),
        lambda: ParametricBuffer(4, "class", seed=0),
    ],
)
@pytest.mark.parametrize(
    "payload,what",
    [
        (None, "no payload"),
        ({"logits": np.zeros((3, 3), np.float64)}, "float64"),
        ({"logits": np.zeros((3, 4), np.float32)}, r"logits: float32\[n, 4\]"),
        ({"logits": np.zeros(3, np.float32)}, r"logits: float32\[n\]"),
        ({"other": np.zeros((3, 3), np.float32)}, "other"),
        (
            {"logits": np.zeros((3, 3), np.float32), "extra": np.zeros(3, np.int64)},
            "extra",
        ),
    ],
)
def test_update_with_another_payload_schema_is_refused_and_changes_nothing(make, payload, what):
    buf = _filled(make())
    before = buf.state_dict()
    new = Experience(targets=[0, 1, 2], ids=[10, 11, 12], index=5, payload=payload)
    with pytest.raises(PayloadMismatchError, match=what):
        buf.update(new)
    assert_state_equal(buf.state_dict(), before)


def test_payload_to_a_buffer_without_one_is_refused_and_empty_updates_pass():
    buf = ClassBalancedBuffer(4, seed=0)
    buf.update(Experience(targets=[0, 1], ids=[0, 1]))
    with pytest.raises(PayloadMismatchError, match="buffer's exemplars hold \\(no payload\\)"):
        buf.update(Experience(targets=[0], ids=[5], payload={"logits": np.zeros((1, 2))}))
    payload_buf = _filled(ReservoirSamplingBuffer(4, seed=0))
    payload_buf.update(Experience(targets=np.zeros(0, np.int64)))  # no rows: nothing to carry
    assert payload_buf.buffer.payload["logits"].shape == (4, 3)
    # An empty buffer takes any payload.
    fresh = ReservoirSamplingBuffer(4, seed=0)
    fresh.update(Experience(targets=[0], payload={"z": np.arange(1, dtype=np.uint8)}))
    assert fresh.buffer.payload["z"].dtype == np.uint8


def test_state_with_a_payload_column_of_another_length_is_corrupted():
    state = _filled(ClassBalancedBuffer(4, seed=0)).state_dict()
    state["columns"]["payload.logits"] = state["columns"]["payload.logits"][:2]
    with pytest.raises(ValueError, match="corrupted state dict.*payload"):
        ClassBalancedBuffer(4).load_state_dict(state)


# -- replay -------------------------------------------------------------------------------------
def payload_buffer():
    rng = np.random.default_rng(0)
    src = memstore.ArraySource(rng.standard_normal((20, 2)).astype(np.float32), np.arange(20) % 4)
    buf = ClassBalancedBuffer(8, seed=1)
    logits = torch.from_numpy(np.arange(40, dtype=np.float32).reshape(20, 2))
    buf.update(Experience.from_dataset(src, index=0, payload={"logits": logits}))
    return buf, src


def test_replay_items_end_with_the_payload_dict_and_collate_by_default():
    buf, src = payload_buffer()
    ds = ReplayDataset(buf, src)
    ex = buf.buffer
    for i in range(len(ds)):
        x, y, t, payload = ds[i]
        sid = int(ex.ids[i])
        assert torch.equal(x, src.inputs[sid]) and y == src.targets[sid] and t == 0
        assert payload["logits"].tolist() == [2.0 * sid, 2.0 * sid + 1]
    got = ds.__getitems__([3, 0, 3])
    for item, i in zip(got, [3, 0, 3], strict=True):
        assert torch.equal(item[3]["logits"], ds[i][3]["logits"]) and item[:3][1:] == ds[i][1:3]
    loader = torch.utils.data.DataLoader(ds, batch_size=5)
    x, y, t, payload = next(iter(loader))
    assert payload["logits"].shape == (5, 2) and payload["logits"].dtype == torch.float32
    assert payload["logits"][:, 0].tolist() == (2.0 * ex.ids[:5]).tolist()
    assert y.tolist() == ex.targets[:5].tolist() and t.tolist() == [0] * 5


class TaskItems(torch.utils.data.Dataset):
    """Items ``(x, y, t)``: the layout of an Avalanche dataset."""

    def __init__(self, n: int, declare: bool) -> None:
        self.n = n
        if declare:
            self.items_carry_task_labels = True

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([float(i)]), i % 4, 7


def test_items_that_carry_a_task_label_get_no_second_one():
    buf, _ = payload_buffer()
    declared = TaskItems(20, declare=True)
    assert isinstance(declared, memstore.TaskLabelledItems)
    for ds in (
        ReplayDataset(buf, declared),
        ReplayDataset(buf, {"default": TaskItems(20, False)}, items_with_task_labels=["default"]),
    ):
        item = ds[0]
        assert len(item) == 4 and item[2] == 7 and "logits" in item[3]
        assert [len(i) for i in ds.__getitems__([0, 1])] == [4, 4]
    plain = ReplayDataset(buf, TaskItems(20, declare=False))
    assert len(plain[0]) == 5  # not declared: the task label is appended, as before
    no_payload = ClassBalancedBuffer(4, seed=0)
    no_payload.update(Experience(targets=np.arange(20) % 4))
    assert (
        ReplayDataset(no_payload, declared)[0][2] == 7
        and len(ReplayDataset(no_payload, declared)[0]) == 3
    )


def test_items_with_task_labels_must_name_given_sources():
    buf, src = payload_buffer()
    with pytest.raises(ValueError, match="'items_with_task_labels' parameter.*'train'"):
        ReplayDataset(buf, src, items_with_task_labels=["train"])
    with pytest.raises(TypeError, match="'items_with_task_labels' parameter"):
        ReplayDataset(buf, src, items_with_task_labels="default")


def test_feature_based_group_takes_two_empty_experiences():
    """Found by the payload streams: a second empty experience into an existing group of a
    feature-based ParametricBuffer used to fail reshaping the group's empty (0, 0) features."""
    sources = make_sources(np.random.default_rng(0))
    strategy = HerdingSelectionStrategy(identity_model(3), "feat")
    buf = ParametricBuffer(5, None, strategy, seed=2)
    for index in (9, 3):
        buf.update(Experience(targets=np.zeros(0, np.int64), source="b", index=index), sources)
    buf.update(Experience(targets=np.zeros(8, np.int64), ids=np.arange(8), source="b"), sources)
    assert len(buf) == 5 and list(buf.buffer_groups) == [0]

"""Issue 8, item 10 (outside the store): ids and targets beyond int64, negative ids, policy
sizes and seeds beyond int64, a herding update over a too-short source, and replay sources
of the wrong type get named errors and change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memstore
from memstore.testing.models import CountingModel, make_source
from memstore.testing.reference import assert_state_equal

BUFFERS = [
    memstore.ReservoirSamplingBuffer,
    memstore.ExperienceBalancedBuffer,
    memstore.ClassBalancedBuffer,
    memstore.ParametricBuffer,
]


@pytest.mark.parametrize(
    "column, values",
    [
        ("ids", np.array([0, 2**63], dtype=np.uint64)),
        ("ids", [1, 2**63 + 5]),
        ("ids", [1, 2**64]),
        ("ids", np.array([1.0, 2.0**64])),
        ("targets", np.array([1, 2**63], dtype=np.uint64)),
        ("targets", [0, 2**70]),
    ],
)
def test_ids_and_targets_beyond_int64_are_refused(column, values):
    cols = {"targets": [0, 1], "ids": [0, 1]}
    cols[column] = values
    with pytest.raises(ValueError, match=rf"'{column}' parameter of Experience.*2\*\*63"):
        memstore.Experience(targets=cols["targets"], ids=cols["ids"])


def test_negative_ids_are_refused():
    with pytest.raises(ValueError, match=r"'ids' parameter of Experience.*>= 0.*\[-1\]"):
        memstore.Experience(targets=[0, 1, 2], ids=[0, -1, 2])


@pytest.mark.parametrize("cls", BUFFERS, ids=lambda c: c.__name__)
def test_sizes_and_seeds_beyond_range_are_refused(cls):
    with pytest.raises(ValueError, match=r"'max_size' parameter.*2\*\*63"):
        cls(2**63)
    with pytest.raises(ValueError, match=r"'seed' parameter.*2\*\*63"):
        cls(5, seed=2**64)
    with pytest.raises(ValueError, match=r"'seed' parameter.*2\*\*63"):
        cls(5, seed=2**63)
    assert cls(2**40, seed=2**63 - 1).max_size == 2**40
    buf = cls(5)
    with pytest.raises(ValueError, match=r"'new_size'.*2\*\*63"):
        buf.resize(2**63)


def test_herding_over_a_too_short_source_is_a_named_error():
    src = make_source(50)
    buf = memstore.ParametricBuffer(
        6, "class", memstore.HerdingSelectionStrategy(CountingModel(), "feat")
    )
    exp = memstore.Experience(targets=np.arange(80) % 5, ids=np.arange(80), source="train")
    before = buf.state_dict()
    with pytest.raises(ValueError, match=r"source 'train'.*id 50.*50 samples"):
        buf.update(exp, sources={"train": src})
    assert_state_equal(buf.state_dict(), before)


def _replay_buffer():
    buf = memstore.ReservoirSamplingBuffer(10, seed=0)
    buf.update(memstore.Experience(targets=np.arange(20) % 3, ids=np.arange(20), source="a"))
    return buf


def test_replay_sources_of_the_wrong_type_are_refused():
    buf = _replay_buffer()
    src = make_source(20)
    for bad in ([src], (src,)):
        with pytest.raises(TypeError, match="'sources' parameter of ReplayDataset.*dict"):
            memstore.ReplayDataset(buf.buffer, bad)
    with pytest.raises(TypeError, match="'sources' parameter of ReplayDataset.*str"):
        memstore.ReplayDataset(buf.buffer, {0: src})
    assert len(memstore.ReplayDataset(buf.buffer, {"a": src})) == 10


def test_replay_refuses_ids_outside_the_source_of_a_tampered_state():
    buf = _replay_buffer()
    state = buf.state_dict()
    for bad in (-1, 20):
        columns = {k: v.copy() for k, v in state["columns"].items()}
        columns["ids"][3] = bad
        tampered = {**state, "columns": columns}
        other = memstore.ReservoirSamplingBuffer(10, seed=0)
        other.load_state_dict(tampered)
        with pytest.raises(ValueError, match=rf"source 'a'.*{bad}.*20 samples"):
            memstore.ReplayDataset(other.buffer, {"a": make_source(20)})


def test_replay_of_an_in_range_buffer_still_reads_every_row():
    buf = _replay_buffer()
    ds = memstore.ReplayDataset(buf.buffer, {"a": make_source(20)})
    assert all(isinstance(ds[i][0], torch.Tensor) for i in range(len(ds)))
    assert len(ds.__getitems__(list(range(len(ds))))) == 10

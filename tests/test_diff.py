"""Store.diff: exemplars added and removed between two commits, per group, plus parameter and
source changes; exact pairs on buffers built here, and against a set reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

import memstore
from memstore import (
    BufferNotFoundError,
    ClassBalancedBuffer,
    Experience,
    InvalidParameterTypeError,
    ParametricBuffer,
    RandomExemplarsSelectionStrategy,
    open_store,
)
from memstore.testing.store_child import POLICIES, apply_step, make_sources


def _pairs(buf: memstore.ExemplarsBuffer) -> set[tuple[str, int]]:
    ex = buf.buffer
    return set(zip(ex.source.tolist(), ex.ids.tolist(), strict=True))


def _sorted(pairs) -> list[list]:
    return [[s, i] for s, i in sorted(pairs)]


@pytest.fixture
def hand(tmp_path):
    """Commits of 'm' whose changes are known by hand.

    0: source a, ids 0..5 (classes 0, 1), all kept (max_size 100), fingerprint of a recorded.
    1: + source b, ids 10..13 (class 2): added exactly those.
    2: a fresh buffer over the name (overwrite=True): only b ids 10..13 and a new source c
       (id 7, class 1), max_size 50: a and its classes-0 group removed.
    """
    sources = {"a": memstore.ArraySource(np.zeros((6, 2)), np.array([0, 0, 0, 1, 1, 1]))}
    store = open_store(str(tmp_path / "m.zarr"))
    buf = ClassBalancedBuffer(100, seed=1)
    buf.update(Experience(targets=[0, 0, 0, 1, 1, 1], source="a", index=0))
    store.save("m", buf, message="a only", sources=sources)
    buf.update(Experience(targets=[2, 2, 2, 2], ids=[10, 11, 12, 13], source="b", index=1))
    store.save("m", buf, message="with b")
    fresh = ClassBalancedBuffer(50, seed=1)
    fresh.update(Experience(targets=[2, 2, 2, 2], ids=[10, 11, 12, 13], source="b", index=0))
    fresh.update(Experience(targets=[1], ids=[7], source="c", index=1))
    store.save("m", fresh, message="fresh", overwrite=True)
    return store


def test_added_pairs_exact(hand):
    d = hand.diff("m", 0, 1)
    assert d["added"] == [["b", 10], ["b", 11], ["b", 12], ["b", 13]]
    assert d["removed"] == []
    assert d["a"]["seq"] == 0 and d["b"]["seq"] == 1 and d["b"]["message"] == "with b"
    assert d["params"] == {"policy": None, "strategy": None, "changed": {}}
    # a's fingerprint was recorded at 0 and not at 1: a change of the record
    fp = hand.describe("m", 0)["sources"]["a"]["fingerprint"]
    assert d["sources"] == {"added": ["b"], "removed": [], "fingerprints": {"a": [fp, None]}}
    g = d["groups"]
    assert list(g) == [0, 1, 2]
    assert g[2] == {
        "size": [0, 4],
        "max_size": [None, 33],
        "added": [["b", 10], ["b", 11], ["b", 12], ["b", 13]],
        "removed": [],
    }
    assert g[0] == {"size": [3, 3], "max_size": [50, 34], "added": [], "removed": []}


def test_removed_pairs_and_params_exact(hand):
    d = hand.diff("m", 1, 2)
    assert d["added"] == [["c", 7]]
    assert d["removed"] == [["a", 0], ["a", 1], ["a", 2], ["a", 3], ["a", 4], ["a", 5]]
    assert d["params"]["changed"] == {"max_size": [100, 50]}
    assert d["sources"]["added"] == ["c"] and d["sources"]["removed"] == ["a"]
    g = d["groups"]
    assert list(g) == [2, 1, 0]  # b's order, then the groups only a had
    assert g[1]["added"] == [["c", 7]]
    assert g[1]["removed"] == [["a", 3], ["a", 4], ["a", 5]]
    assert g[0] == {
        "size": [3, 0],
        "max_size": [34, None],
        "added": [],
        "removed": [["a", 0], ["a", 1], ["a", 2]],
    }
    # reversed: added and removed swap
    back = hand.diff("m", 2, 1)
    assert back["added"] == d["removed"] and back["removed"] == d["added"]
    assert hand.diff("m", 1, 1)["added"] == [] and hand.diff("m", 1, 1)["removed"] == []


def test_json_able(hand):
    d = json.loads(json.dumps(hand.diff("m", 0, 2)))
    assert set(d) == {"buffer", "a", "b", "added", "removed", "groups", "params", "sources"}
    assert d["groups"]["1"]["added"] == [["c", 7]]


@pytest.mark.parametrize("policy", ["class", "reservoir", "random-experience"])
def test_matches_set_reference(tmp_path, policy):
    """Over the test stream (sources a/b alternate, a resize after step 2), the diff of every
    pair of commits is the set difference of the saved buffers' (source, id) pairs, and per
    group the difference of (group, source, id)."""
    sources = make_sources()
    store = open_store(str(tmp_path / "s.zarr"))
    buf = POLICIES[policy]()
    pairs, triples = [], []
    for k in range(4):
        apply_step(buf, k, sources)
        store.save("s", buf, message=f"step {k}")
        ex, group = buf.buffer, buf.state_dict()["columns"]["group"]
        pairs.append(_pairs(buf))
        triples.append(set(zip(group.tolist(), ex.source.tolist(), ex.ids.tolist(), strict=True)))
    for a, b in [(0, 1), (1, 2), (0, 3), (3, 0), (2, 3)]:
        d = store.diff("s", a, b)
        assert d["added"] == _sorted(pairs[b] - pairs[a])
        assert d["removed"] == _sorted(pairs[a] - pairs[b])
        assert d["added"] or d["removed"]
        ga, gb = triples[a], triples[b]
        assert sorted(d["groups"]) == sorted({g for g, _, _ in ga | gb})
        for key, entry in d["groups"].items():
            assert entry["added"] == _sorted((s, i) for g, s, i in gb - ga if g == key)
            assert entry["removed"] == _sorted((s, i) for g, s, i in ga - gb if g == key)
    if policy == "reservoir":
        assert store.diff("s", 1, 2)["params"]["changed"] == {"max_size": [40, 30]}


def test_strategy_and_policy_changes(tmp_path):
    store = open_store(str(tmp_path / "p.zarr"))
    exp = Experience(targets=[0, 1, 0, 1], index=0)
    cb = ClassBalancedBuffer(10)
    cb.update(exp)
    store.save("p", cb)
    pb = ParametricBuffer(
        10, groupby="class", selection_strategy=RandomExemplarsSelectionStrategy()
    )
    pb.update(exp)
    store.save("p", pb, overwrite=True)
    d = store.diff("p", 0, 1)
    assert d["params"]["policy"] == ["ClassBalancedBuffer", "ParametricBuffer"]
    strategy = store.describe("p", 1)["strategy"]
    assert strategy is not None and d["params"]["strategy"] == [None, strategy]
    assert d["params"]["changed"]["groupby"] == [None, "class"]
    assert d["params"]["changed"]["adaptive_size"] == [True, None]
    assert d["added"] == d["removed"] == []


def test_missing_commit_and_bad_arguments(hand):
    with pytest.raises(BufferNotFoundError, match="has no commit 9"):
        hand.diff("m", 0, 9)
    with pytest.raises(BufferNotFoundError, match="No buffer named 'nope'"):
        hand.diff("nope", 0, 1)
    with pytest.raises(InvalidParameterTypeError, match="'a' parameter of Store.diff"):
        hand.diff("m", "0", 1)
    with pytest.raises(InvalidParameterTypeError, match="'b' parameter of Store.diff"):
        hand.diff("m", 0, None)

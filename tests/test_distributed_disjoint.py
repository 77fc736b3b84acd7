"""Sample ids must be disjoint across ranks: one exact collective check over every id.

With ``draws="hash"`` each rank sends only its local top candidates, so a check on the rows
that reach the union misses an id two ranks hold when both drop it locally; the check partitions
every id to a rank by a fixed hash of the id instead. One spawn of 3 gloo ranks runs every case
(ranks 0 and 2 share ids, rank 1 holds none of them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from test_distributed import POLICIES, experience, run_group, single_process, split, stream

from memstore import distributed as mdist
from memstore.distributed.disjoint import check_ids_disjoint
from memstore.distributed.update import local_top
from memstore.policies.base import state_digest
from memstore.policies.reservoir import hash_draws
from memstore.testing.gloo import init_loopback_group

WORLD = 3
#: every path of update: hash draws (local top-k), torch draws and random selection (every
#: row gathered), herding (features to group owners).
CASES = ("reservoir-hash", "class-hash", "reservoir-torch", "random-class", "herding-class")


def dropped_everywhere(name: str) -> int:
    """An id of experience 1 that every rank's local top-k filter drops (hash draws): the one
    with the lowest weight. For the torch-draws / herding paths, any id of experience 1."""
    ids = np.sort(stream()[1])
    weights = hash_draws(POLICIES[name]().seed, np.full(len(ids), "train"), ids, np.ones_like(ids))
    return int(ids[np.argmin(weights)])


def parts(name: str, rank: int) -> tuple[np.ndarray, int]:
    """Rank ``rank``'s ids of experience 1 (strided split) and the duplicate id, which ranks 0
    and 2 both hold and rank 1 does not."""
    dup = dropped_everywhere(name)
    ids = split(stream()[1], "strided", rank, WORLD)
    ids = ids[ids != dup]
    return (np.append(ids, dup) if rank in (0, 2) else ids), dup


def refusal(fn) -> str:
    try:
        fn()
    except mdist.CollectiveError as err:
        return f"CollectiveError: {err}"
    return "ok"


def _worker(rank: int, world: int, port: int, out: str) -> None:
    init_loopback_group(rank, world, port)
    report = {}
    for name in CASES:
        buf = POLICIES[name]()
        mdist.update(buf, experience(split(stream()[0], "strided", rank, world), 0))
        before = state_digest(buf.state_dict())
        ids, _ = parts(name, rank)
        outcome = refusal(lambda b=buf, i=ids: mdist.update(b, experience(i, 1)))
        unchanged = state_digest(buf.state_dict()) == before
        # the refused update changed nothing: the disjoint stream goes on as a single process
        for k, part in enumerate(stream()[1:], start=1):
            mdist.update(buf, experience(split(part, "strided", rank, world), k))
        report[name] = [outcome, unchanged, state_digest(buf.state_dict())]
    # many repeats: rank r holds [100 r, 100 r + 150), so 2 × 50 ids are held twice
    overlap = np.arange(100 * rank, 100 * rank + 150, dtype=np.int64)
    report["overlap"] = refusal(lambda: check_ids_disjoint(overlap, None, "check"))
    # one rank repeating an id of its own (update never sees it: Experience refuses it)
    twice = np.array([500, 500] if rank == 1 else [], dtype=np.int64)
    report["twice"] = refusal(lambda: check_ids_disjoint(twice, None, "check"))
    # ids that are not integers on one rank: every rank fails alike, none waits
    wrong = np.arange(3, dtype=np.float32 if rank == 2 else np.int64) + 1000 * rank
    report["wrong"] = refusal(lambda: check_ids_disjoint(wrong, None, "check"))
    # a rank without rows takes part; disjoint input passes
    mine = np.arange(rank, 90, world, dtype=np.int64) if rank != 1 else np.empty(0, np.int64)
    check_ids_disjoint(mine, None, "check")
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("disjoint")
    assert run_group(_worker, WORLD, str(out)) == [0] * WORLD
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_the_hash_case_is_a_duplicate_no_local_filter_keeps():
    """What makes the first cases hard: both ranks' local top-k filters drop the duplicate."""
    # upper bounds of the quotas update gives local_top: 30 rows (reservoir), 23 // 5 + 1 per
    # class (class-balanced over 5 classes)
    for name, bound in (("reservoir-hash", 30), ("class-hash", 5)):
        for rank in (0, 2):
            ids, dup = parts(name, rank)
            rows = experience(ids, 1).as_exemplars(1)
            keys = rows.targets if name == "class-hash" else np.zeros(len(rows), np.int64)
            quota = {int(k): bound for k in np.unique(keys)}
            kept = rows.ids[local_top(rows, keys, POLICIES[name]().seed, quota)]
            assert dup in ids and dup not in kept, (name, rank)


@pytest.mark.parametrize("name", CASES)
def test_an_id_two_ranks_hold_is_refused_on_every_rank_and_changes_nothing(name, reports):
    outcomes = [r[name][0] for r in reports]
    assert all(o == outcomes[0] for o in outcomes), outcomes
    _, dup = parts(name, 0)
    message = outcomes[0]
    assert message.startswith("CollectiveError: memstore.distributed.update: "), message
    assert f"{dup} (ranks [0, 2])" in message and "found 1 id held more than once: " in message, (
        message
    )
    for r in reports:
        assert r[name][1], "the refused update changed the buffer"
        assert r[name][2] == state_digest(single_process(name).state_dict())


def test_every_repeat_is_counted_and_named_with_its_ranks(reports):
    outcomes = [r["overlap"] for r in reports]
    assert all(o == outcomes[0] for o in outcomes)
    message = outcomes[0]
    assert message.startswith("CollectiveError: check: ")
    assert "found 100 ids held more than once: " in message, message
    # the smallest repeated ids are named first
    assert "100 (ranks [0, 1]), 101 (ranks [0, 1])" in message, message


def test_an_id_one_rank_repeats_is_refused_too(reports):
    assert {r["twice"] for r in reports} == {
        "CollectiveError: check: sample ids must be disjoint across ranks; found 1 id held more "
        "than once: 500 (ranks [1]). Each rank must pass a disjoint part of the experience (e.g. "
        "its DistributedSampler shard, or whole shards); every rank raises this error and no rank "
        "changed its buffer."
    }


def test_ids_that_are_not_integers_on_one_rank_fail_every_rank(reports):
    (message,) = {r["wrong"] for r in reports}
    assert message.startswith("CollectiveError: check failed on rank(s) [2]; rank 2: TypeError:")
    assert "1-D integer array. Got dtype float32, shape (3,) instead." in message, message

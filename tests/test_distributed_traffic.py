"""What a rank receives in the feature-based path of ``memstore.distributed.update``.

Herding / closest-to-center: each group's owner receives the metadata and features of that
group's rows only; every other rank receives the kept rows (at most ``max_size``), small
status messages and its share of the duplicate-id check (8 bytes per id that hashes to it:
~N/world ids, the only part that grows with the experience). Counted exactly by
``memstore.distributed.TRAFFIC`` (tensor bytes, padding included) in one 3-rank gloo group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import memstore
from memstore import distributed as mdist
from memstore.distributed.disjoint import id_owners
from memstore.distributed.parametric import assign_owners
from memstore.policies.base import state_digest
from memstore.testing.gloo import free_port, init_loopback_group

WORLD, SOURCE, DIM = 3, "train", 3
SIZES = (150, 1200)  # two experiences, 8x apart
X = np.random.default_rng(5).standard_normal((max(SIZES), DIM)).astype(np.float32)
Y = (np.arange(max(SIZES)) * 7 % 5).astype(np.int64)
ROW_WORDS = 3 + -(-DIM * 4 // 8)  # id, target, task + the float32 features as int64 words
KEPT_WORDS = 6  # key, old position, id, target, task, holder rank
OWNER = "memstore.distributed.update"


def policy(name: str) -> memstore.ParametricBuffer:
    model = torch.nn.Sequential(torch.nn.Flatten())
    if name == "closest-none":
        return memstore.ParametricBuffer(
            17, None, memstore.ClosestToCenterSelectionStrategy(model, "0")
        )
    return memstore.ParametricBuffer(21, "class", memstore.HerdingSelectionStrategy(model, "0"))


def experience(ids: np.ndarray) -> memstore.Experience:
    return memstore.Experience(
        targets=Y[ids], ids=ids, source=SOURCE, index=0, source_data=memstore.ArraySource(X, Y)
    )


def stream(n: int) -> np.ndarray:
    return np.random.default_rng(n).permutation(n)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    init_loopback_group(rank, world, port)
    report = {}
    for name in ("closest-none", "herding-class"):
        for n in SIZES:
            buf = policy(name)
            mdist.TRAFFIC.reset()
            mdist.update(buf, experience(stream(n)[rank::world]))
            report[f"{name}/{n}"] = {
                "received": mdist.TRAFFIC.bytes_received,
                "by": dict(mdist.TRAFFIC.received_by),
                "digest": state_digest(buf.state_dict()),
            }
    # ranks 0 and 2 both pass id 30 (one class, so one owner sees both): refused everywhere
    buf = policy("herding-class")
    mdist.update(buf, experience(np.arange(30)[rank::world]))
    before = state_digest(buf.state_dict())
    ids = np.arange(30, 60)[rank::world]
    try:
        mdist.update(buf, experience(np.append(ids, 30) if rank == 2 else ids))
        report["repeat"] = "no error"
    except mdist.CollectiveError as err:
        report["repeat"] = str(err)
    report["unchanged"] = state_digest(buf.state_dict()) == before
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def _id_check(n: int) -> dict[int, int]:
    """Per rank: bytes of the duplicate-id check it receives from the other ranks (8 per id
    that hashes to it; no padding)."""
    ids = stream(n)
    holder = np.arange(n) % WORLD
    dst = id_owners(ids, WORLD)
    return {r: 8 * int(np.sum((dst == r) & (holder != r))) for r in range(WORLD)}


def _expected(name: str, n: int) -> tuple[dict[int, int], dict[int, int], str]:
    """Per rank: exact bytes received in the rows-to-owners and kept-rows gathers (padded
    to the largest sender, from the world - 1 others), and the single-process digest."""
    ids = stream(n)
    keys = Y[ids] if name == "herding-class" else np.zeros(n, dtype=np.int64)
    ref = policy(name)
    ref.update(experience(np.sort(ids)))
    sizes = {int(k): int(c) for k, c in zip(*np.unique(keys, return_counts=True), strict=True)}
    owners = assign_owners(sizes, WORLD)
    row_owner = np.array([owners[int(k)] for k in keys])
    holder = np.arange(n) % WORLD  # strided split: position i goes to rank i % WORLD
    kept = {r: 0 for r in range(WORLD)}
    for key, g in ref.buffer_groups.items():
        kept[owners[key]] += len(g.buffer)
    kept_bytes = (WORLD - 1) * max(kept.values()) * KEPT_WORDS * 8
    rows = {}
    for dst in range(WORLD):
        most = max(int(np.sum((row_owner == dst) & (holder == s))) for s in range(WORLD))
        rows[dst] = (WORLD - 1) * most * ROW_WORDS * 8
    return rows, {r: kept_bytes for r in range(WORLD)}, state_digest(ref.state_dict())


def _tensors(by: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in by.items() if "(status)" not in k and v}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> list[dict]:
    """One 3-rank gloo group runs every update of this module; each rank's report."""
    out = tmp_path_factory.mktemp("traffic")
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, WORLD, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # a hang guard, not a timing goal
    assert [p.exitcode for p in procs] == [0] * WORLD
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_each_rank_receives_only_its_groups_rows_and_the_kept_rows(traffic):
    reports = traffic
    for name in ("closest-none", "herding-class"):
        for n in SIZES:
            rows, kept, digest = _expected(name, n)
            for r, report in enumerate(reports):
                got = report[f"{name}/{n}"]
                assert got["digest"] == digest, (name, n, r)
                by = got["by"]
                tensors = _tensors(by)
                want = {
                    f"{OWNER} (rows to owners)": rows[r],
                    f"{OWNER} (kept rows)": kept[r],
                    f"{OWNER} (id check)": _id_check(n)[r],
                }
                assert tensors == {k: v for k, v in want.items() if v}, (name, n, r)
                assert got["received"] - sum(tensors.values()) < 1500, (name, n, r)  # status
    # one group (closest, groupby=None) is owned by rank 0: ranks 1 and 2 receive no row
    # metadata and the same kept rows whatever the experience's size; only their share of
    # the id check grows with it
    check = f"{OWNER} (id check)"
    for r in (1, 2):
        small, big = (reports[r][f"closest-none/{n}"] for n in SIZES)
        assert small["by"].get(f"{OWNER} (rows to owners)", 0) == 0
        rows_of = [{k: v for k, v in _tensors(x["by"]).items() if k != check} for x in (small, big)]
        assert rows_of[0] == rows_of[1] == {f"{OWNER} (kept rows)": 1632}
        grown = (
            big["received"] - small["received"] - (_id_check(SIZES[1])[r] - _id_check(SIZES[0])[r])
        )
        assert abs(grown) < 16  # the digits of a row count


def test_an_id_passed_by_two_ranks_is_refused_on_every_rank(traffic):
    messages = {r["repeat"] for r in traffic}
    assert len(messages) == 1 and all(r["unchanged"] for r in traffic)
    (message,) = messages
    assert "held more than once: 30 (ranks [0, 2])" in message, message

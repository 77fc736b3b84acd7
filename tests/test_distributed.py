"""memstore.distributed over real gloo process groups on 127.0.0.1.

One process group per world size (spawning costs seconds); inside it, every policy × split is
built collectively and each rank writes the digest of its final state, which must equal the
single-process build of the union in canonical (ascending id) order — also with payload
columns (float32 logits [n, 3] and a bool [n] column) travelling with their rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import memstore
from memstore import distributed as mdist
from memstore.features.cache import CHUNK_ROWS
from memstore.policies.base import state_digest
from memstore.testing.gloo import free_port, init_loopback_group

N, SOURCE = 240, "train"
CACHE_N = 2 * CHUNK_ROWS + 100  # three feature-cache chunks, the last one short
CACHE_X = np.random.default_rng(3).standard_normal((CACHE_N, 2)).astype(np.float32)
X = np.random.default_rng(7).standard_normal((N, 3)).astype(np.float32)
Y = (np.arange(N) * 7 % 5).astype(np.int64)


def _identity_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten())


POLICIES = {
    "reservoir-torch": lambda: memstore.ReservoirSamplingBuffer(30, seed=1),
    "reservoir-hash": lambda: memstore.ReservoirSamplingBuffer(30, seed=1, draws="hash"),
    "experience-torch": lambda: memstore.ExperienceBalancedBuffer(31, seed=2),
    "experience-hash": lambda: memstore.ExperienceBalancedBuffer(31, seed=2, draws="hash"),
    "class-torch": lambda: memstore.ClassBalancedBuffer(23, seed=3),
    "class-hash": lambda: memstore.ClassBalancedBuffer(23, seed=3, draws="hash"),
    "class-hash-fixed": lambda: memstore.ClassBalancedBuffer(
        23, adaptive_size=False, total_num_classes=6, seed=3, draws="hash"
    ),
    "random-class": lambda: memstore.ParametricBuffer(21, groupby="class", seed=4),
    "herding-class": lambda: memstore.ParametricBuffer(
        21, "class", memstore.HerdingSelectionStrategy(_identity_model(), "0")
    ),
    "closest-none": lambda: memstore.ParametricBuffer(
        17, None, memstore.ClosestToCenterSelectionStrategy(_identity_model(), "0")
    ),
    "herding-experience": lambda: memstore.ParametricBuffer(
        20, "experience", memstore.HerdingSelectionStrategy(_identity_model(), "0")
    ),
}


#: policies built with a payload too: both reservoir draws, class-balanced hash, the
#: ParametricBuffer paths (random: rows gathered whole; herding: features to owners).
PAYLOAD_POLICIES = (
    "reservoir-hash",
    "reservoir-torch",
    "class-hash",
    "random-class",
    "herding-class",
)


def payload_of(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Exact in float32 and distinct per id, so a row that lost its payload shows."""
    logits = np.stack([ids, -0.5 * ids, 0.25 * ids + 1], axis=1).astype(np.float32)
    return {"logits": logits, "seen": ids % 3 == 0}


def stream() -> list[np.ndarray]:
    """Three experiences of ids (in a scrambled order), the last one small."""
    perm = np.random.default_rng(0).permutation(N)
    return [perm[:100], perm[100:210], perm[210:]]


def experience(ids: np.ndarray, k: int, payload: dict | None = None) -> memstore.Experience:
    return memstore.Experience(
        targets=Y[ids],
        ids=ids,
        source=SOURCE,
        index=k,
        source_data=memstore.ArraySource(X, Y),
        payload=payload,
    )


def split(ids: np.ndarray, how: str, rank: int, world: int) -> np.ndarray:
    if how == "strided":
        return ids[rank::world]
    return np.array_split(ids, world)[rank]


def single_process(name: str, payload: bool = False):
    buf = POLICIES[name]()
    for k, ids in enumerate(stream()):
        ids = np.sort(ids)
        buf.update(experience(ids, k, payload_of(ids) if payload else None))
    return buf


_init = init_loopback_group


def _build_worker(rank: int, world: int, port: int, out: str, targets: list) -> None:
    """Ranks of one 4-process group; sub-groups of 1, 2, 3, 4 ranks build every policy."""
    _init(rank, world, port)
    for size in range(1, world + 1):
        group = dist.new_group(list(range(size)))  # every rank takes part in new_group
        if rank >= size:
            continue
        digests = {}
        for name in POLICIES:
            for how in ("contiguous", "strided"):
                buf = POLICIES[name]()
                for k, ids in enumerate(stream()):
                    mdist.update(buf, experience(split(ids, how, rank, size), k), group=group)
                digests[f"{name}/{how}"] = state_digest(buf.state_dict())
        Path(out, f"world{size}-rank{rank}.json").write_text(json.dumps(digests))
        Path(out, f"payload-world{size}-rank{rank}.json").write_text(
            json.dumps(_payload_builds(rank, size, group))
        )
    Path(out, f"payload-refusals-rank{rank}.json").write_text(json.dumps(_payload_refusals(rank)))
    Path(out, f"commits-rank{rank}.json").write_text(json.dumps(_commit_checks(rank, out)))
    pair = dist.new_group([0, 1])
    if rank < 2:
        fills = {label: _fill(rank, pair, url, options) for label, url, options in targets}
        parts_url = str(Path(out, "fill-parts.zarr"))
        fills["own-part"] = _fill(rank, pair, parts_url, None, own_part=True)
        Path(out, f"fill-rank{rank}.json").write_text(json.dumps(fills))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown (s3fs's event loop thread makes it slow)


def _payload_builds(rank: int, size: int, group) -> dict:
    """Each payload policy × split: the final state's digest and ``ExemplarSet.equals`` (which
    compares payload) against this rank's own single-process build of the union."""
    report = {}
    for name in PAYLOAD_POLICIES:
        want = single_process(name, payload=True).buffer
        for how in ("contiguous", "strided"):
            buf = POLICIES[name]()
            for k, ids in enumerate(stream()):
                part = split(ids, how, rank, size)
                mdist.update(buf, experience(part, k, payload_of(part)), group=group)
            report[f"{name}/{how}"] = [state_digest(buf.state_dict()), buf.buffer.equals(want)]
    return report


def _payload_refusals(rank: int) -> dict:
    """On the 4-rank world: one rank's payload schema differs (dtype, trailing shape, a missing
    column), or the update drops the payload the buffer holds: refused on every rank."""
    ids = split(stream()[1], "strided", rank, 4)
    good = payload_of(ids)
    bad = {
        "dtype": {**good, "logits": good["logits"].astype(np.float64)} if rank == 2 else good,
        "shape": {**good, "logits": np.zeros((len(ids), 4), np.float32)} if rank == 1 else good,
        "missing": {"logits": good["logits"]} if rank == 3 else good,
        "dropped": None,
    }
    report = {}
    for name in ("reservoir-hash", "herding-class"):
        buf = POLICIES[name]()
        first = split(stream()[0], "strided", rank, 4)
        mdist.update(buf, experience(first, 0, payload_of(first)))
        before = state_digest(buf.state_dict())
        for case, payload in bad.items():
            outcome = _outcome(lambda b=buf, p=payload: mdist.update(b, experience(ids, 1, p)))
            report[f"{name}/{case}"] = [outcome, state_digest(buf.state_dict()) == before]
    return report


def _fill(rank: int, pair, url: str, options, own_part: bool = False) -> dict:
    """Two ranks fill one feature cache at ``url``; each counts the rows its model saw and
    its one-row passes (the cache entry's creation). ``own_part``: each rank passes only the
    ids of the chunks it owns (as tools/bench_distributed.py does), not every id."""
    if rank == 0:
        memstore.open_store(url, storage_options=options)
    dist.barrier(group=pair)
    store = memstore.open_store(url, storage_options=options)
    model = torch.nn.Sequential(torch.nn.Flatten())
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(int(o.shape[0])))
    strategy = memstore.HerdingSelectionStrategy(model, "0", feature_cache=store, batch_size=1024)
    source = memstore.ArraySource(CACHE_X, np.zeros(CACHE_N, dtype=np.int64))
    ids = mdist.owned_chunk_ids(np.arange(CACHE_N), rank, 2) if own_part else None
    share = mdist.fill_feature_cache(strategy, source, ids, group=pair)
    (key,) = store.feature_caches()
    cache = store.open_feature_cache(key)
    return {
        "share": share,
        "computed": sum(seen),
        "one_row_passes": seen.count(1),
        "done": cache.num_done(),
        "equal": bool(np.array_equal(cache.read(np.arange(CACHE_N)), CACHE_X)),
    }


def _outcome(fn) -> str:
    try:
        fn()
    except mdist.CollectiveError as err:
        return f"CollectiveError: {err}"
    return "ok"


def _commit_checks(rank: int, out: str) -> dict:
    """save and the failure rule on the world group (4 ranks)."""
    if rank == 0:
        memstore.open_store(str(Path(out, "store.zarr")))  # created by one rank
    dist.barrier()
    store = memstore.open_store(str(Path(out, "store.zarr")))
    buf = POLICIES["class-hash"]()
    ids = stream()[0]
    mdist.update(buf, experience(split(ids, "strided", rank, 4), 0))
    first = mdist.save(store, "m", buf, "first")
    before = state_digest(buf.state_dict())
    bad = experience(split(stream()[1], "strided", rank, 4), 1) if rank != 1 else [1, 2]
    report = {
        "commit": [first.seq, first.id],
        "origin_seq": buf.origin.seq,
        "bad_input": _outcome(lambda: mdist.update(buf, bad)),
        "unchanged_after_bad_input": state_digest(buf.state_dict()) == before,
        # a fresh buffer under an existing name: rank 0's Store.save refuses
        "save_refused": _outcome(lambda: mdist.save(store, "m", POLICIES["class-hash"]())),
        "buffers_differ": _outcome(
            lambda: mdist.save(store, "m", buf if rank else POLICIES["class-hash"]())
        ),
        "seqs": [c.seq for c in store.log("m")],
        # replay under DDP: num_replicas and rank default to the process group's
        "sampler": list(memstore.GroupBalancedSampler(buf, num_samples=40, seed=2)),
    }
    return report


def run_group(target, world: int, *args, timeout: float = 120.0) -> list[int | None]:
    """Start ``world`` spawned ranks of ``target(rank, world, port, *args)``; exit codes."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    return codes


@pytest.fixture(scope="module")
def references() -> dict[str, str]:
    return {name: state_digest(single_process(name).state_dict()) for name in POLICIES}


@pytest.fixture(scope="module")
def built(tmp_path_factory, seaweedfs_server) -> Path:
    """One 4-rank gloo group runs every collective check; each writes its report here."""
    out = tmp_path_factory.mktemp("built")
    s3 = seaweedfs_server
    targets = [
        ("local", str(out / "cache.zarr"), None),
        ("s3", s3.url(s3.make_bucket(), "cache.zarr"), s3.storage_options()),
    ]
    assert run_group(_build_worker, 4, str(out), targets) == [0] * 4
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_policy_and_split_equals_the_single_process_build(world, built, references):
    want = {f"{n}/{h}": references[n] for n in POLICIES for h in ("contiguous", "strided")}
    for rank in range(world):
        got = json.loads((built / f"world{world}-rank{rank}.json").read_text())
        assert got == want, f"rank {rank} of {world}"


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_payload_travels_with_its_rows_as_in_the_single_process_build(world, built):
    want = {}
    for name in PAYLOAD_POLICIES:
        ref = single_process(name, payload=True)
        ex = ref.buffer  # the reference carries the payload, aligned with its exemplars
        assert len(ex) and ex.payload["logits"].dtype == np.float32
        np.testing.assert_array_equal(ex.payload["logits"], payload_of(ex.ids)["logits"])
        np.testing.assert_array_equal(ex.payload["seen"], ex.ids % 3 == 0)
        for how in ("contiguous", "strided"):
            want[f"{name}/{how}"] = [state_digest(ref.state_dict()), True]
    for rank in range(world):
        got = json.loads((built / f"payload-world{world}-rank{rank}.json").read_text())
        assert got == want, f"rank {rank} of {world}"


def test_payload_schema_mismatch_is_refused_on_every_rank(built):
    reports = [json.loads((built / f"payload-refusals-rank{r}.json").read_text()) for r in range(4)]
    for name in ("reservoir-hash", "herding-class"):
        for case in ("dtype", "shape", "missing"):
            outcomes = [r[f"{name}/{case}"] for r in reports]
            assert all(o == outcomes[0] for o in outcomes), (name, case)
            message, unchanged = outcomes[0]
            assert message.startswith("CollectiveError:") and "payload" in message, message
            assert unchanged
        for r in reports:
            message, unchanged = r[f"{name}/dropped"]
            assert "PayloadMismatchError" in message and unchanged, message


def test_save_commits_once_and_any_failure_fails_every_rank(built):
    reports = [json.loads((built / f"commits-rank{r}.json").read_text()) for r in range(4)]
    assert all(r["commit"] == reports[0]["commit"] for r in reports)
    assert all(r["origin_seq"] == reports[0]["commit"][0] for r in reports)
    for r in reports:
        assert "failed on rank(s) [1]" in r["bad_input"] and "Experience" in r["bad_input"]
        assert r["unchanged_after_bad_input"]
        assert "rank 0 could not commit 'm'" in r["save_refused"]
        assert "UnrelatedHistoryError" in r["save_refused"]
        assert "different buffers" in r["buffers_differ"]
        assert r["seqs"] == [reports[0]["commit"][0]]
    whole = memstore.GroupBalancedSampler(
        single_process_first("class-hash"), num_samples=40, seed=2
    )
    steps = zip(*(r["sampler"] for r in reports), strict=True)
    assert [x for step in steps for x in step] == list(whole)


def single_process_first(name: str):
    buf = POLICIES[name]()
    buf.update(experience(np.sort(stream()[0]), 0))
    return buf


@pytest.mark.s3
def test_two_ranks_fill_one_cache_each_writing_its_own_chunks(built):
    """On local disk and on the S3 test server: every row computed once, by the owner of its
    chunk, so no chunk has two writers; the cache is complete and exact."""
    reports = [json.loads((built / f"fill-rank{r}.json").read_text()) for r in (0, 1)]
    owned = [mdist.owned_chunk_ids(np.arange(CACHE_N), r, 2).size for r in (0, 1)]
    assert owned == [CHUNK_ROWS + 100, CHUNK_ROWS]
    for label in ("local", "s3", "own-part"):
        got = [r[label] for r in reports]
        assert [g["share"] for g in got] == owned
        assert [g["computed"] for g in got] == owned
        assert all(g["done"] == CACHE_N and g["equal"] for g in got)
        # one rank alone creates the entry, also when each passes only its own ids (both
        # used to, racing: the other rank could find the entry half made)
        assert sum(g["one_row_passes"] for g in got) == 1, label


def _kill_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank 1 dies (os._exit) right before the second update; rank 0 must fail cleanly."""
    _init(rank, world, port, timeout=15.0)
    if rank == 0:
        memstore.open_store(str(Path(out, "store.zarr")))
    dist.barrier()
    store = memstore.open_store(str(Path(out, "store.zarr")))
    buf = POLICIES["herding-class"]()
    mdist.update(buf, experience(split(stream()[0], "contiguous", rank, world), 0))
    mdist.save(store, "m", buf, "first")
    if rank == 1:
        os._exit(3)
    t0 = time.monotonic()
    try:
        mdist.update(buf, experience(split(stream()[1], "contiguous", rank, world), 1))
        mdist.save(store, "m", buf, "second")
        outcome = "no error"
    except mdist.CollectiveError as err:
        outcome = f"CollectiveError: {err}"
    Path(out, "rank0.json").write_text(json.dumps([outcome, time.monotonic() - t0]))
    os._exit(0)  # the group is broken: skip destroy_process_group


def test_a_rank_killed_mid_update_fails_the_others_and_the_store_keeps_its_commit(tmp_path):
    assert run_group(_kill_worker, 2, str(tmp_path), timeout=60.0) == [0, 3]
    outcome, seconds = json.loads((tmp_path / "rank0.json").read_text())
    assert outcome.startswith("CollectiveError: memstore.distributed") and seconds < 15
    store = memstore.open_store(str(tmp_path / "store.zarr"))
    assert [c.message for c in store.log("m")] == ["first"]
    want = POLICIES["herding-class"]()
    want.update(experience(np.sort(stream()[0]), 0))
    assert state_digest(store.state("m")) == state_digest(want.state_dict())


def test_hash_reservoir_sends_only_top_candidates():
    """A bound check of the local step: with draws='hash' a rank keeps ≤ quota per group."""
    from memstore.distributed.update import local_top

    rows = experience(np.arange(100), 0).as_exemplars(0)
    keep = local_top(rows, rows.targets, 0, {k: 3 for k in range(5)})
    assert np.bincount(rows.targets[keep]).tolist() == [3] * 5


@pytest.mark.parametrize("n", [0, 1, 5])
def test_payload_rows_pack_into_words_with_exact_bytes_dtype_and_shape(n):
    from memstore.distributed.wire import payload_words, wire_schema, words_payload

    payload = {
        "logits": np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32),
        "seen": np.arange(n) % 2 == 0,
        "big_endian": np.arange(2 * n, dtype=">i2").reshape(n, 2),
        "empty": np.zeros((n, 0), dtype=np.int16),
        "nan": np.full((n, 1, 1), np.nan, dtype=np.float64),
    }
    words = payload_words(payload, n)
    assert words.dtype == np.int64 and words.shape == (n, 4)  # 12 + 1 + 4 + 0 + 8 = 25 bytes
    back = words_payload(words, payload)
    assert list(back) == list(payload)
    assert wire_schema(back) == wire_schema(payload)
    for k, v in payload.items():
        assert back[k].tobytes() == v.tobytes(), k
    assert payload_words({}, n).shape == (n, 0)

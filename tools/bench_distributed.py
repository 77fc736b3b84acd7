"""A memory built by 1 vs 2 gloo ranks: feature extraction + herding per class over shards.

Generates (untimed) ``--n`` synthetic samples (``write_synthetic``: ``--sample-bytes`` float32
``.npy`` inputs, ``--classes`` classes) in shards of ``--per-shard`` samples (a multiple of the
feature-cache chunk, so each rank reads only its own shards), indexes them once into a store,
then for world sizes 1 and 2 spawns that many gloo ranks on 127.0.0.1, each of which, from one
barrier to the end:

1. takes its whole shards (``memstore.distributed.shard_part``, shard ``s`` → rank ``s % w``);
2. fills one shared feature cache (``fill_feature_cache``, chunks follow shard ownership) with
   the features of ``Linear(dim -> --feature-dim)``;
3. runs ``memstore.distributed.update`` of ``ParametricBuffer(--max-size, groupby="class",
   HerdingSelectionStrategy)``: per-class row counts shared, each class herded on its owner
   rank, its rows' metadata and features sent only there, the kept rows shared;
4. ``memstore.distributed.save`` (rank 0 commits).

Printed per world size: wall seconds (slowest rank), the ratio 1-rank wall / 2-rank wall
(target ≥ 1.7 on a quiet 2-core machine), bytes each rank sent to and received from memstore's
collectives (``memstore.distributed.TRAFFIC``: payload incl. padding) and each rank's peak
RSS. Both builds must give the same memory (checked: equal state digests). Threads are pinned
to 1 per rank.

    python tools/bench_distributed.py                 # 1 000 000 samples
    python tools/bench_distributed.py --n 100000      # smaller
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch load their thread pools; children inherit
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from memstore.testing.gloo import free_port  # noqa: E402


def _rank(rank: int, world: int, port: int, args: dict, out: str) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    import memstore
    from memstore import distributed as mdist
    from memstore.policies.base import state_digest
    from memstore.testing.gloo import init_loopback_group

    init_loopback_group(rank, world, port, timeout=600.0)
    index_store = memstore.open_store(args["index"], mode="r")
    run_url = os.path.join(out, f"world{world}.zarr")
    if rank == 0:
        memstore.open_store(run_url)
    dist.barrier()
    store = memstore.open_store(run_url)
    source = memstore.ShardSource(args["spec"], name="train", store=index_store, progress=False)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(args["dim"], args["feature_dim"]))
    strategy = memstore.HerdingSelectionStrategy(model, "0", feature_cache=store, batch_size=1024)
    buf = memstore.ParametricBuffer(args["max_size"], "class", strategy)
    dist.barrier()
    mdist.TRAFFIC.reset()
    t0 = time.perf_counter()
    (whole,) = source.experiences(by_shards=1)
    part = mdist.shard_part(whole, source)
    owners = mdist.shard_chunk_owners(source, world)
    mdist.fill_feature_cache(strategy, source, part.ids, chunk_owners=owners)
    t_features = time.perf_counter() - t0
    mdist.update(buf, part, sources={"train": source})
    commit = mdist.save(store, "memory", buf, "bench")
    wall = time.perf_counter() - t0
    report = {
        "rank": rank,
        "rows": int(len(part)),
        "features_s": t_features,
        "wall_s": wall,
        "bytes_sent": mdist.TRAFFIC.bytes_sent,
        "bytes_received": mdist.TRAFFIC.bytes_received,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "digest": state_digest(buf.state_dict()),
        "commit": commit.seq,
        "size": len(buf),
        "rows_held": int(np.asarray(len(buf.buffer))),
    }
    with open(os.path.join(out, f"world{world}-rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def _run(world: int, args: dict, out: str) -> list[dict]:
    import torch.multiprocessing as mp

    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, world, port, args, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"world {world}: exit codes {[p.exitcode for p in procs]}")
    reports = []
    for r in range(world):
        with open(os.path.join(out, f"world{world}-rank{r}.json")) as f:
            reports.append(json.load(f))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--sample-bytes", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-shard", type=int, default=8192)
    parser.add_argument("--feature-dim", type=int, default=16)
    parser.add_argument("--max-size", type=int, default=2000)
    parser.add_argument("--data", default=None, help="folder for shards (default: a temp dir)")
    a = parser.parse_args()

    import memstore
    from memstore.features.cache import CHUNK_ROWS
    from memstore.sources.shards import write_synthetic

    if a.per_shard % CHUNK_ROWS:
        parser.error(f"--per-shard must be a multiple of {CHUNK_ROWS} (the cache chunk)")
    work = a.data or tempfile.mkdtemp(prefix="bench-distributed-")
    os.makedirs(work, exist_ok=True)
    t = time.perf_counter()
    shards = write_synthetic(
        os.path.join(work, "train-%06d.tar"),
        a.n,
        sample_bytes=a.sample_bytes,
        classes=a.classes,
        maxcount=a.per_shard,
    )
    index_url = os.path.join(work, "index.zarr")
    memstore.ShardSource(
        shards.spec, name="train", store=memstore.open_store(index_url), progress=False
    )
    print(
        f"data: {a.n} samples in {len(shards.paths)} shards, indexed in "
        f"{time.perf_counter() - t:.1f} s (untimed)"
    )
    args = {
        "spec": shards.spec,
        "index": index_url,
        "dim": a.sample_bytes // 4,
        "feature_dim": a.feature_dim,
        "max_size": a.max_size,
    }
    results = {w: _run(w, args, tempfile.mkdtemp(dir=work)) for w in (1, 2)}
    print(
        f"{'world':>5} {'rank':>4} {'rows':>9} {'features s':>10} {'wall s':>8} "
        f"{'sent MB':>9} {'recv MB':>9} {'peak RSS MB':>11}"
    )
    for w, reports in results.items():
        for r in reports:
            print(
                f"{w:>5} {r['rank']:>4} {r['rows']:>9} {r['features_s']:>10.2f} "
                f"{r['wall_s']:>8.2f} {r['bytes_sent'] / 1e6:>9.2f} "
                f"{r['bytes_received'] / 1e6:>9.2f} {r['peak_rss_mb']:>11.0f}"
            )
    walls = {w: max(r["wall_s"] for r in reports) for w, reports in results.items()}
    same = len({r["digest"] for reports in results.values() for r in reports}) == 1
    print(
        f"speed-up 1 -> 2 ranks: {walls[1] / walls[2]:.2f}x (target >= 1.7 on a quiet "
        f"2-core machine); same memory on every rank and world size: {same}; "
        f"memory size {results[1][0]['size']}"
    )
    if not same:
        raise SystemExit("the 1-rank and 2-rank builds differ")


if __name__ == "__main__":
    main()

"""Issue 8, item 9: two processes filling one feature cache entry at once. Every row marked
done must hold that row's features (one writer per chunk: claims)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np

import memstore
from memstore.features.cache import CHUNK_ROWS
from memstore.features.extract import extract_features
from memstore.testing.models import CountingModel, make_source

N = 8 * CHUNK_ROWS
ROUNDS = 3

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import memstore
    from memstore.features.extract import cached_features
    from memstore.testing.models import CountingModel, make_source

    url, go, parity = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = memstore.open_store(url)
    src = make_source({n})
    while not os.path.exists(go):
        time.sleep(0.001)
    ids = np.arange({n})
    for seed in range({rounds}):
        # interleaved blocks of 64 rows, overlapping by a few rows: every chunk is written
        # partially by both processes
        mine = ids[((ids // 64) % 2 == parity) | (ids % 64 < 4)]
        for k in range(24):  # every call writes a few rows of every chunk
            part = mine[k::24]
            cached_features(CountingModel(seed=seed), "feat", src, part, store, batch_size=97)
    """
)


def test_two_processes_filling_one_entry_leave_only_right_rows(tmp_path):
    url = str(tmp_path / "m.zarr")
    memstore.open_store(url)
    go = str(tmp_path / "go")
    script = _CHILD.format(n=N, rounds=ROUNDS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, go, str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in (0, 1)
    ]
    time.sleep(1.0)  # both imported and waiting
    open(go, "w").close()
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    store = memstore.open_store(url)
    src = make_source(N)
    keys = store.feature_caches()
    assert len(keys) == ROUNDS
    bad_rows = 0
    for key in keys:
        cache = store.open_feature_cache(key)
        done = cache.done[:] != 0
        values = cache.values[:]
        matches = [
            np.allclose(
                values[done],
                extract_features(CountingModel(seed=s), "feat", src, np.flatnonzero(done)),
                atol=1e-5,
            )
            for s in range(ROUNDS)
        ]
        assert any(matches), f"{key}: rows marked done hold other values"
        assert cache.damaged_chunks() == []
        bad_rows += int(np.count_nonzero(~done))
    assert bad_rows == 0  # together they filled everything
    assert store.verify() == []


def test_claims_break_a_dead_writers_claim_and_wait_for_a_live_one(tmp_path):
    import json

    import pytest

    from memstore.features.claims import ChunkClaims
    from memstore.io import open_files

    files = open_files(str(tmp_path))
    claims = ChunkClaims(files, "claims", lease_seconds=0.3)
    files.create_if_absent("claims/3", json.dumps({"owner": "dead", "expires": 0}).encode())
    with claims.hold(3):  # stale: broken at once
        assert json.loads(files.read("claims/3"))["owner"] != "dead"
        assert claims.held(3)
    assert not files.exists("claims/3")
    live = json.dumps({"owner": "other", "expires": time.time() + 60}).encode()
    files.create_if_absent("claims/4", live)
    with pytest.raises(memstore.ConcurrentCommitError, match="claims/4"):
        with claims.hold(4):
            pass
    assert files.read("claims/4") == live  # a live claim is never broken

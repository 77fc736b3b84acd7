"""examples/ddp_replay.py: 2 gloo ranks with one shared memory; a rank killed mid-run, the run
resumed from the last commit (memory + the model in its run state) equals an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_replay.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def test_killed_rank_resumes_to_the_uninterrupted_memory(tmp_path):
    store = str(tmp_path / "m.zarr")
    killed = _run("--store", store, "--stop-after", "1", "--epochs", "1")
    assert "experience 1: commit 1" in killed.stdout and "experience 2" not in killed.stdout
    assert "a rank died" in killed.stdout + killed.stderr
    resumed = _run("--store", store, "--check", "--epochs", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "experience 0: commit" not in resumed.stdout.split("final memory")[0]  # resumed
    assert "experience 2: commit 2" in resumed.stdout
    assert "uninterrupted run: same memory and accuracy: True" in resumed.stdout

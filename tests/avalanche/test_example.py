"""examples/avalanche_replay.py: stopped mid-run and resumed from Avalanche's checkpoint,
the run ends with the memory and accuracy of an uninterrupted one (the script checks)."""

import pathlib
import subprocess
import sys


def test_avalanche_replay_example_resumes_exactly():
    script = pathlib.Path(__file__).parents[2] / "examples" / "avalanche_replay.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert "same final memory and accuracy: True" in out.stdout

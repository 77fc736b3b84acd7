"""examples/der_digits.py --check: DER++ with logits as payload, killed (SIGKILL) mid-experience
and resumed from the commit's memory + run state, ends identical to the uninterrupted run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_der_digits_check_resumes_identically(capfd, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example imports split_digits
    spec = importlib.util.spec_from_file_location("der_digits", EXAMPLES / "der_digits.py")
    der = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "der_digits", der)
    spec.loader.exec_module(der)
    status = der.main(["--check", "--epochs", "1", "--memory", "40", "--stop-after", "1"])
    out = capfd.readouterr().out
    assert "exit status of the killed run: -9" in out
    assert "resumed after experience 0 (40 exemplars)" in out
    assert "memory ids identical, logits payload identical, accuracy identical" in out
    assert status == 0 and out.rstrip().endswith("IDENTICAL")

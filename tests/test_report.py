"""tools/store_report.py: one self-contained HTML page of a store (buffers, commits, sources,
feature caches, a plot per buffer)."""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import pathlib
import re
import sys

import numpy as np
import pytest
from PIL import Image

import memstore
from memstore import ClassBalancedBuffer, Experience, ReservoirSamplingBuffer, open_store

PATH = pathlib.Path(__file__).parent.parent / "tools" / "store_report.py"


def _tool():
    spec = importlib.util.spec_from_file_location("store_report", PATH)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


MESSAGES = {"cb": ["first <b>&", "second"], "res": ["only one"]}


@pytest.fixture
def store(tmp_path):
    store = open_store(str(tmp_path / "m.zarr"))
    sources = {"train": memstore.ArraySource(np.zeros((20, 2)), np.arange(20) % 4)}
    cb = ClassBalancedBuffer(8, seed=0)
    cb.update(Experience(targets=np.arange(10) % 2, source="train", index=0))
    store.save("cb", cb, message=MESSAGES["cb"][0], sources=sources)
    cb.update(Experience(targets=np.arange(10, 20) % 4, ids=np.arange(10, 20), source="train"))
    store.save("cb", cb, message=MESSAGES["cb"][1], sources=sources)
    res = ReservoirSamplingBuffer(5, seed=0)
    res.update(Experience(targets=np.arange(7) % 3, source="train"))
    store.save("res", res, message=MESSAGES["res"][0])
    store.write_source_index("shardsrc", {"kind": "shards", "length": 3}, {"o": np.arange(3)})
    cache = store.feature_cache("f0123", 20, 4, attrs={"source": "train", "layer": "feat"})
    cache.write(np.arange(4), np.ones((4, 4), dtype=np.float32))
    return store


def test_report_holds_every_buffer_commit_source_and_cache(store, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert _tool().main([store.url, "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name, messages in MESSAGES.items():
        assert f'<h2 id="buffer-{name}">{name}' in page
        for message in messages:
            assert html.escape(message) in page
    assert "<b>&" not in page  # messages are escaped
    for word in ("ClassBalancedBuffer", "ReservoirSamplingBuffer", "shardsrc", "f0123", "feat"):
        assert word in page
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [alt for alt, _ in images] == ["plot of cb", "plot of res"]
    for _, data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "PNG" and img.size == (900, 600)
    # no external assets: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<script" not in page and "<link" not in page


def test_report_without_matplotlib_says_so(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "r.html"
    assert _tool().main([store.url, "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<img" not in page and "memstore[plot]" in page and "second" in page


def test_report_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert _tool().main([str(tmp_path / "none.zarr"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No memstore" in err and err.count("\n") == 1 and not out.exists()

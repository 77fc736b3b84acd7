"""memstore.plot and ``memstore plot``: the data drawn equals the store's histograms and group
quotas per commit; the PNG has the asked size and is not blank; a clear error without
matplotlib."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import memstore
from memstore import BufferNotFoundError, ClassBalancedBuffer, Experience, open_store
from memstore.cli import main
from memstore.plot import build_figure, plot_data, render_png
from memstore.testing.store_child import POLICIES, apply_step, make_sources


@pytest.fixture
def hand(tmp_path):
    """'m': commit 0 holds classes 0 and 1 (3 each), commit 1 adds class 2 (4 rows)."""
    store = open_store(str(tmp_path / "m.zarr"))
    buf = ClassBalancedBuffer(100, seed=1)
    buf.update(Experience(targets=[0, 0, 0, 1, 1, 1], source="a", index=0))
    store.save("m", buf, message="two classes")
    buf.update(Experience(targets=[2, 2, 2, 2], ids=[10, 11, 12, 13], source="b", index=1))
    store.save("m", buf, message="class 2 arrives")
    return store


def test_plot_data_exact(hand):
    data = plot_data(hand, "m")
    assert data["buffer"] == "m" and data["policy"] == "ClassBalancedBuffer"
    assert data["commits"] == [
        {"seq": 0, "message": "two classes"},
        {"seq": 1, "message": "class 2 arrives"},
    ]
    assert data["classes"] == [0, 1, 2]
    assert data["class_counts"] == [[3, 3, 0], [3, 3, 4]]
    assert data["groups"] == [0, 1, 2]
    assert data["group_sizes"] == [[3, 3, 0], [3, 3, 4]]
    assert data["group_quotas"] == [[50, 50, None], [34, 33, 33]]
    assert json.loads(json.dumps(data)) == data


def _four_commits(tmp_path):
    """A store whose buffer "s" has 4 commits of the test stream (a resize after step 2)."""
    sources = make_sources()
    store = open_store(str(tmp_path / "s.zarr"))
    buf = POLICIES["random-experience"]()
    for k in range(4):
        apply_step(buf, k, sources)
        store.save("s", buf, message=f"step {k}")
    return store


def test_plot_data_equals_describe(tmp_path):
    """Over the test stream (a resize after step 2 shrinks the quotas), every commit's
    counts are describe()'s class histogram and groups."""
    store = _four_commits(tmp_path)
    data = plot_data(store, "s")
    assert [c["seq"] for c in data["commits"]] == [0, 1, 2, 3]
    for row, c in enumerate(data["commits"]):
        d = store.describe("s", c["seq"])
        counts = dict(zip(data["classes"], data["class_counts"][row], strict=True))
        assert {str(k): n for k, n in counts.items() if n} == d["classes"]
        groups = {g["key"]: (g["size"], g["max_size"]) for g in d["groups"]}
        for key, size, quota in zip(
            data["groups"], data["group_sizes"][row], data["group_quotas"][row], strict=True
        ):
            assert (size, quota) == groups.get(key, (0, None))
        assert set(groups) <= set(data["groups"])
    assert data["group_quotas"][1] != data["group_quotas"][2]  # the resize shows


def test_describe_log_is_describe_of_each_commit_reading_the_log_once(tmp_path, monkeypatch):
    """plot_data's source: Store.describe_log equals describe() of each commit of the log,
    and reads each manifest once (not the whole log again per commit)."""
    store = _four_commits(tmp_path)
    want = [store.describe("s", c.seq) for c in store.log("s")]
    reads: list[str] = []
    read = store.files.read

    def counted(path, *args, **kwargs):
        reads.append(path)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(store.files, "read", counted)
    assert store.describe_log("s") == want
    manifests = sorted(p for p in reads if "/commits/" in p)
    assert manifests == [f"buffers/s/commits/{seq:010d}.json" for seq in range(4)]


def test_plot_data_refuses_a_damaged_commit(hand):
    (snapshot,) = [
        d
        for d in (Path(hand.files.root) / "buffers/m/snapshots").iterdir()
        if d.name.startswith("0000000000-")
    ]
    chunk = next(
        p for p in (snapshot / "targets").rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"not zstd")
    with pytest.raises(memstore.CorruptStoreError, match="targets"):
        plot_data(hand, "m")


def test_figure_draws_the_data(hand):
    data = plot_data(hand, "m")
    fig = build_figure(data)
    bars, lines = fig.axes[:2]
    heights = np.array([[p.get_height() for p in c] for c in bars.containers]).T
    assert heights.tolist() == data["class_counts"]
    bottoms = np.array([[p.get_y() for p in c] for c in bars.containers]).T
    assert bottoms[:, 1].tolist() == [3, 3] and bottoms[:, 2].tolist() == [6, 6]  # stacked
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["0", "1", "2"]
    assert "m" in bars.get_title() and bars.get_ylabel() and lines.get_xlabel() == "commit"
    ticks = [t.get_text() for t in lines.get_xticklabels()]
    assert ticks == ["0\ntwo classes", "1\nclass 2 arrives"]
    sizes = [ln.get_ydata().tolist() for ln in lines.get_lines() if ln.get_linestyle() == "-"]
    quotas = [ln.get_ydata().tolist() for ln in lines.get_lines() if ln.get_linestyle() == "--"]
    assert sizes == [[3, 3], [3, 3], [0, 4]]
    assert quotas[:2] == [[50, 34], [50, 33]] and quotas[2][1] == 33
    assert np.isnan(quotas[2][0])  # group 2 has no quota before it exists


def _image(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_cli_writes_a_png(hand, tmp_path, capsys):
    out = tmp_path / "m.png"
    code = main(["plot", hand.url, "m", "--out", str(out), "--width", "900", "--height", "600"])
    printed, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert printed == f"wrote {out}: 2 commit(s), 3 class(es), 3 group(s)\n"
    pixels = _image(out)
    assert pixels.shape == (600, 900, 3)
    white = (pixels == 255).all(axis=2)
    assert 0.05 < 1 - white.mean() < 0.9  # drawn on, not filled
    colours = {tuple(c) for c in pixels.reshape(-1, 3)[::7].tolist()}
    assert (31, 119, 180) in colours  # tab10's first colour: class 0's bars
    assert len(colours) > 20
    assert main(["plot", hand.url, "m", "--out", str(tmp_path / "j.png"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"out": str(tmp_path / "j.png"), "data": plot_data(hand, "m")}
    # the same picture as the library renders
    again = np.asarray(Image.open(io.BytesIO(render_png(plot_data(hand, "m"), 900, 600))))
    assert np.array_equal(np.asarray(Image.open(out)), again)


def test_cli_errors(hand, tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.png"
    assert main(["plot", hand.url, "nope", "--out", str(out)]) == 2
    assert "No buffer named 'nope'" in capsys.readouterr().err and not out.exists()
    assert main(["plot", hand.url, "m", "--out", str(tmp_path / "no" / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "'out' parameter" in err and "Traceback" not in err
    assert main(["plot", hand.url, "m", "--out", str(out), "--width", "10"]) == 2
    assert "'width' parameter of memstore.plot" in capsys.readouterr().err and not out.exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["plot", hand.url, "m", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memstore plot: error: ") and "memstore[plot]" in err
    assert err.count("\n") == 1 and not out.exists()
    with pytest.raises(ImportError, match=r"memstore\[plot\]"):
        render_png(plot_data(hand, "m"))


def test_plot_data_unknown_buffer(hand):
    with pytest.raises(BufferNotFoundError):
        plot_data(hand, "nope")
    with pytest.raises(memstore.InvalidParameterTypeError):
        plot_data("not a store", "m")


def test_class_groups_share_their_class_colour():
    data = {
        "buffer": "x",
        "policy": "ClassBalancedBuffer",
        "commits": [{"seq": 4, "message": "m"}],
        "classes": [2, 5],
        "class_counts": [[1, 3]],
        "groups": [5, 2],  # first seen: 5
        "group_sizes": [[3, 1]],
        "group_quotas": [[4, 4]],
    }
    bars, lines = build_figure(data, 400, 300).axes[:2]
    bar_colour = {int(c.get_label()): c.patches[0].get_facecolor() for c in bars.containers}
    solid = [ln for ln in lines.get_lines() if ln.get_linestyle() == "-"]
    assert [ln.get_label() for ln in solid] == ["2", "5"]
    for ln in solid:
        key = int(ln.get_label())
        assert ln.get_color()[:3] == bar_colour[key][:3]
        assert ln.get_ydata().tolist() == [{5: 3, 2: 1}[key]]

"""Write a one-page HTML report of a store: buffers, commits, sources, feature caches, plots.

    python tools/store_report.py runs/x/memory.zarr --out report.html

For people who would rather look than read. The numbers are exactly what
``memstore inspect --json`` prints (the tool runs that command), the pictures what
``memstore plot`` draws (``memstore.plot``), embedded as base64 PNG: the page fetches
nothing from elsewhere (no scripts, styles or images outside it), so it can be mailed. Without
matplotlib (``pip install 'memstore[plot]'``) the page says so instead of showing plots.
Exits 2 with a one-line message on a store error, like the ``memstore`` command.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import io
import json
import sys
from html import escape
from typing import Any

from memstore import MemstoreError, open_store, plot
from memstore.cli import main as memstore

__all__ = ["main", "render_page"]

PLOT_SIZE = (900, 600)  # pixels of each buffer's plot

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } code { font-size: 0.9em; } img { max-width: 100%; }
.note { color: #777; }
"""


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return '<p class="note">none</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(store: Any, name: str) -> str:
    if not plot.matplotlib_available():
        return f'<p class="note">No plot: {escape(plot.INSTALL_HINT)}.</p>'
    png = plot.render_png(plot.plot_data(store, name), *PLOT_SIZE)
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="plot of {escape(name)}" src="data:image/png;base64,{data}">'


def _buffer(store: Any, s: dict[str, Any]) -> str:
    name, c = s["buffer"], s["commit"]
    params = dict(s["params"])
    if s["strategy"]:
        params["strategy"] = json.dumps(s["strategy"], sort_keys=True)
    return "\n".join(
        [
            f'<h2 id="buffer-{escape(name)}">{escape(name)} '
            f"<small>{escape(s['policy'])}</small></h2>",
            f"<p>{s['size']} exemplars after {s['num_updates']} update(s); latest commit "
            f"{c['seq']} ({escape(c['time'])}): <q>{escape(c['message'])}</q></p>",
            _table(["parameter", "value"], [[k, v] for k, v in params.items()]),
            _image(store, name),
            "<h3>groups</h3>",
            _table(
                ["key", "size", "max_size"],
                [[g["key"], g["size"], g["max_size"]] for g in s["groups"]],
            ),
            "<h3>classes</h3>",
            _table(["class", *s["classes"]], [["exemplars", *s["classes"].values()]]),
            "<h3>sources</h3>",
            _table(
                ["source", "fingerprint"],
                [[k, v.get("fingerprint") or "not recorded"] for k, v in s["sources"].items()],
            ),
            "<h3>commits</h3>",
            _table(
                ["seq", "id", "time", "rows", "message"],
                [
                    [x["seq"], x["id"], x["time"], x["sizes"].get("rows"), x["message"]]
                    for x in s["commits"]
                ],
            ),
        ]
    )


def _source_rows(store: Any, names: list[str]) -> list[list[Any]]:
    """One row per source record: its scalar fields (lists shown by their length)."""
    rows = []
    for name in names:
        found = store.read_source_index(name)
        record = {} if found is None else found[0]
        fields = {
            k: (f"{len(v)} entries" if isinstance(v, list) else v)
            for k, v in sorted(record.items())
            if not k.startswith("_") and not isinstance(v, dict)
        }
        rows.append([name, ", ".join(f"{k}={v}" for k, v in fields.items()) or "-"])
    return rows


def render_page(store: Any, summary: dict[str, Any]) -> str:
    """The HTML page of ``summary`` (what ``memstore inspect --json`` prints) of ``store``."""
    buffers = summary["buffers"]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    overview = _table(
        ["buffer", "policy", "size", "commits", "latest message"],
        [
            [s["buffer"], s["policy"], s["size"], len(s["commits"]), s["commit"]["message"]]
            for s in buffers
        ],
    )
    features = _table(
        ["key", "source", "layer", "shape", "dtype", "rows done"],
        [
            [f["key"], f.get("source"), f.get("layer"), f["shape"], f["dtype"], f["done"]]
            for f in summary["features"]
        ],
    )
    title = f"memstore report: {summary['store']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">written {now} by tools/store_report.py</p>',
        f"<h2>buffers</h2>{overview}",
        "<h2>sources</h2>",
        _table(["source", "record"], _source_rows(store, summary["sources"])),
        f"<h2>feature caches</h2>{features}",
        *(_buffer(store, s) for s in buffers),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    args = parser.parse_args(argv)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = memstore(["inspect", args.store, "--json"])
    if status != 0:  # memstore printed the error
        return status
    summary = json.loads(printed.getvalue())
    try:
        page = render_page(open_store(args.store, mode="r"), summary)
    except MemstoreError as err:
        print(f"store_report: error: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {args.out}: {len(summary['buffers'])} buffer(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

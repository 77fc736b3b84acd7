"""Pictures of a buffer's history (``memstore plot``, ``tools/store_report.py``).

Two panels over the buffer's commits (as ``Store.log`` lists them): the class histogram of each
commit as stacked bars (one colour per class), and each group's size (solid) against its quota
(dashed: the per-group max size the policy computed at that commit). :func:`plot_data` gives
the numbers drawn (JSON-able, testable); :func:`build_figure` / :func:`render_png` draw them.

matplotlib is an optional dependency (``pip install 'memstore[plot]'``); it is imported only
when drawing, through its object API and the Agg canvas (headless; pyplot's global state and
backend are left alone).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

from memstore._validation import param_error
from memstore.errors import InvalidParameterError, InvalidParameterTypeError
from memstore.store import Store
from memstore.store.checks import int_at_least

__all__ = [
    "INSTALL_HINT",
    "matplotlib_available",
    "plot_data",
    "build_figure",
    "render_png",
    "write_png",
]

INSTALL_HINT = "matplotlib is needed to draw plots: pip install 'memstore[plot]'"
_TICK_CHARS = 18  # commit messages are cut to this many characters under the ticks


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_data(store: Store, name: str) -> dict[str, Any]:
    """The numbers the plot of buffer ``name`` draws, one row per commit of ``store.log``:

    ``{"buffer", "policy" (of the newest commit), "commits": [{"seq", "message"}],
    "classes": [class, ...] (sorted, every class of any commit), "class_counts": [[count per
    class] per commit], "groups": [key, ...] (first seen, in the buffer's order),
    "group_sizes": [[size per group] per commit] (0 where absent), "group_quotas": [[max_size
    per group] per commit] (None where absent)}``.

    Taken from :meth:`Store.describe_log`, :meth:`Store.describe` of each commit (so damage is
    refused as there). Cost: O(commits): one manifest and one snapshot read per commit.
    """
    if not isinstance(store, Store):
        raise param_error(
            "store", "plot_data", "a memstore Store", store, kind=InvalidParameterTypeError
        )
    summaries = store.describe_log(name)
    classes = sorted({int(k) for s in summaries for k in s["classes"]})
    groups: dict[int, None] = {}
    for s in summaries:
        groups.update((g["key"], None) for g in s["groups"] if g["key"] not in groups)
    rows = [{g["key"]: g for g in s["groups"]} for s in summaries]
    return {
        "buffer": name,
        "policy": summaries[-1]["policy"] if summaries else None,
        "commits": [
            {"seq": s["commit"]["seq"], "message": s["commit"]["message"]} for s in summaries
        ],
        "classes": classes,
        "class_counts": [[s["classes"].get(str(c), 0) for c in classes] for s in summaries],
        "groups": list(groups),
        "group_sizes": [[r[k]["size"] if k in r else 0 for k in groups] for r in rows],
        "group_quotas": [[r[k]["max_size"] if k in r else None for k in groups] for r in rows],
    }


def _matplotlib() -> tuple[Any, Any, Any]:
    """``(matplotlib, Figure, FigureCanvasAgg)``, or an ImportError saying what to install."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return matplotlib, Figure, FigureCanvasAgg


def _colours(matplotlib: Any, n: int) -> list[Any]:
    """``n`` distinct colours: tab10 / tab20 while they last, else evenly along viridis."""
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["viridis"](i / (n - 1)) for i in range(n)]


def _pixels(value: Any, name: str) -> int:
    return int_at_least(value, name, "memstore.plot", 100)


def build_figure(data: dict[str, Any], width: int = 1000, height: int = 700) -> Any:
    """A matplotlib ``Figure`` (``width`` x ``height`` pixels at 100 dpi) of ``data`` (from
    :func:`plot_data`): stacked class bars per commit above, group sizes vs. quotas below.

    Cost: O(commits x (classes + groups)) artists.
    """
    width, height = _pixels(width, "width"), _pixels(height, "height")
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    bars, lines = fig.subplots(2, 1, sharex=True)
    x = list(range(len(data["commits"])))
    bottom = [0] * len(x)
    colours = _colours(matplotlib, len(data["classes"]))
    for j, (cls, colour) in enumerate(zip(data["classes"], colours, strict=True)):
        counts = [row[j] for row in data["class_counts"]]
        bars.bar(x, counts, bottom=bottom, color=colour, label=str(cls), width=0.7)
        bottom = [b + n for b, n in zip(bottom, counts, strict=True)]
    bars.set_title(f"{data['buffer']} ({data['policy']}): exemplars per class at each commit")
    bars.set_ylabel("exemplars")
    legend_cols = max(1, math.ceil(len(data["classes"]) / 16))
    if data["classes"]:
        bars.legend(
            title="class",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncols=legend_cols,
            fontsize="small",
        )
    # groups drawn (and coloured) in key order: class groups get their class's colour
    colours = _colours(matplotlib, len(data["groups"]))
    by_key = sorted(range(len(data["groups"])), key=lambda j: data["groups"][j])
    for j, colour in zip(by_key, colours, strict=True):
        key = data["groups"][j]
        sizes = [row[j] for row in data["group_sizes"]]
        quotas = [math.nan if row[j] is None else row[j] for row in data["group_quotas"]]
        lines.plot(x, sizes, "-", marker="o", color=colour, label=str(key))
        lines.plot(x, quotas, "--", color=colour, linewidth=1)
    lines.set_ylim(bottom=0)
    lines.set_title("group sizes (solid) vs. quota per group (dashed)")
    lines.set_ylabel("exemplars")
    lines.set_xlabel("commit")
    lines.set_xticks(x, [f"{c['seq']}\n{c['message'][:_TICK_CHARS]}" for c in data["commits"]])
    if data["groups"]:
        lines.legend(
            title="group",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncols=max(1, math.ceil(len(data["groups"]) / 16)),
            fontsize="small",
        )
    return fig


def render_png(data: dict[str, Any], width: int = 1000, height: int = 700) -> bytes:
    """The PNG bytes of :func:`build_figure` (exactly ``width`` x ``height`` pixels)."""
    out = io.BytesIO()
    build_figure(data, width, height).savefig(out, format="png")
    return out.getvalue()


def write_png(
    store: Store, name: str, out: str | os.PathLike, width: int = 1000, height: int = 700
) -> dict[str, Any]:
    """Draw buffer ``name`` of ``store`` into the local file ``out``; returns the data drawn.

    Nothing is written if reading the store or importing matplotlib fails.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise param_error("out", "write_png", "a file path", out, kind=InvalidParameterTypeError)
    data = plot_data(store, name)
    png = render_png(data, width, height)
    try:
        with open(out, "wb") as f:
            f.write(png)
    except OSError as err:
        raise InvalidParameterError(
            f"The 'out' parameter of write_png must be a writable file path. Got {str(out)!r} "
            f"instead ({err.strerror or err})."
        ) from err
    return data

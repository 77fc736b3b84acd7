"""The ``memstore`` command: inspect, log, diff, plot, verify, gc and export a store. Thin:
calls the public API.

Errors from memstore (:class:`~memstore.errors.MemstoreError`, which every failure of a store
operation is) print as one line (no traceback) and exit with status 2; ``verify`` exits 1 when
it finds damage. Bad command-line syntax is argparse's (usage message, status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from memstore import plot
from memstore.errors import InvalidParameterError, MemstoreError
from memstore.store import export_memory, open_store

__all__ = ["main"]


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


def _inspect(args: argparse.Namespace) -> int:
    store = open_store(args.store, mode="r")
    names = [args.name] if args.name else store.buffers()
    summaries = [store.describe(n, args.commit) for n in names]
    features = []
    for key in store.feature_caches():
        cache = store.open_feature_cache(key)
        if cache is not None:
            features.append(
                {
                    "key": key,
                    "shape": list(cache.shape),
                    "dtype": str(cache.values.dtype),
                    "done": cache.num_done(),
                    **dict(cache.group.attrs),
                }
            )
    if args.json:
        print(
            json.dumps(
                {
                    "store": args.store,
                    "buffers": summaries,
                    "sources": store.sources(),
                    "features": features,
                },
                indent=1,
            )
        )
        return 0
    con = _console()
    con.print(f"[bold]{args.store}[/bold]: {len(names)} buffer(s), sources {store.sources()}")
    if features:
        con.print(
            _table(
                "cached features",
                ["key", "source", "layer", "shape", "dtype", "done"],
                [
                    [f["key"], f.get("source"), f.get("layer"), f["shape"], f["dtype"], f["done"]]
                    for f in features
                ],
            )
        )
    for s in summaries:
        c = s["commit"]
        con.print(
            f"\n[bold]{s['buffer']}[/bold]  {s['policy']}  size {s['size']}  "
            f"commit {c['seq']} ({c['time']}) {c['message']!r}"
        )
        params = dict(s["params"])
        if s["strategy"]:
            params["strategy"] = s["strategy"]["class"]
        con.print("params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
        con.print(
            _table(
                "groups",
                ["key", "size", "max_size"],
                [[g["key"], g["size"], g["max_size"]] for g in s["groups"]],
            )
        )
        con.print(
            _table("classes", ["class", "exemplars"], [[k, v] for k, v in s["classes"].items()])
        )
        con.print(
            _table(
                "sources",
                ["source", "fingerprint"],
                [[k, v.get("fingerprint")] for k, v in s["sources"].items()],
            )
        )
        for col, spec in s["payload"].items():
            con.print(
                f"payload {col}: {spec['dtype']}, shape {spec['shape']} per exemplar", markup=False
            )
        if not s["payload"]:
            con.print("payload: none")
        con.print(
            _table(
                "commits",
                ["seq", "time", "rows", "message"],
                [[x["seq"], x["time"], x["sizes"].get("rows"), x["message"]] for x in s["commits"]],
            )
        )
    return 0


def _log(args: argparse.Namespace) -> int:
    commits = open_store(args.store, mode="r").log(args.name)
    if args.json:
        print(json.dumps([c.__dict__ for c in commits], indent=1))
        return 0
    _console().print(
        _table(
            f"{args.name}",
            ["seq", "id", "time", "rows", "message"],
            [[c.seq, c.id, c.time, c.sizes.get("rows"), c.message] for c in commits],
        )
    )
    return 0


_LISTED = 10  # ids shown per source and direction in the text output of diff


def _ids_by_source(pairs: list[list[Any]]) -> str:
    """``a: 1 4 9 ... (+12 more); b: 3`` for a sorted list of [source, id] pairs."""
    by_source: dict[str, list[int]] = {}
    for src, i in pairs:
        by_source.setdefault(src, []).append(i)
    parts = []
    for src, ids in by_source.items():
        more = f" ... (+{len(ids) - _LISTED} more)" if len(ids) > _LISTED else ""
        parts.append(f"{src}: " + " ".join(map(str, ids[:_LISTED])) + more)
    return "; ".join(parts) if parts else "-"


def _diff(args: argparse.Namespace) -> int:
    d = open_store(args.store, mode="r").diff(args.name, args.a, args.b)
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    con = _console()
    a, b = d["a"], d["b"]
    con.print(
        f"[bold]{d['buffer']}[/bold]: commit {a['seq']} {a['message']!r} "
        f"({a['sizes'].get('rows')} rows) -> commit {b['seq']} {b['message']!r} "
        f"({b['sizes'].get('rows')} rows): +{len(d['added'])} added, "
        f"-{len(d['removed'])} removed"
    )
    p = d["params"]
    changes = [f"{k}: {old} -> {new}" for k, (old, new) in p["changed"].items()]
    for field in ("policy", "strategy"):
        if p[field] is not None:
            changes.insert(0, f"{field}: {p[field][0]} -> {p[field][1]}")
    con.print("params: " + ("; ".join(changes) if changes else "unchanged"))
    src = d["sources"]
    notes = [f"+{n}" for n in src["added"]] + [f"-{n}" for n in src["removed"]]
    notes += [
        f"{n} fingerprint {x or 'not recorded'} -> {y or 'not recorded'}"
        for n, (x, y) in src["fingerprints"].items()
    ]
    con.print("sources: " + ("; ".join(notes) if notes else "unchanged"))
    con.print(
        _table(
            "groups",
            ["key", "size", "max_size", "added", "removed"],
            [
                [k, "{} -> {}".format(*g["size"]), "{} -> {}".format(*g["max_size"])]
                + [f"+{len(g['added'])}", f"-{len(g['removed'])}"]
                for k, g in d["groups"].items()
            ],
        )
    )
    con.print(f"added: {_ids_by_source(d['added'])}")
    con.print(f"removed: {_ids_by_source(d['removed'])}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    if not plot.matplotlib_available():  # an optional extra, not a store failure
        print(f"memstore plot: error: {plot.INSTALL_HINT}", file=sys.stderr)
        return 2
    store = open_store(args.store, mode="r")
    data = plot.write_png(store, args.name, args.out, args.width, args.height)
    if args.json:
        print(json.dumps({"out": args.out, "data": data}, indent=1))
    else:
        print(
            f"wrote {args.out}: {len(data['commits'])} commit(s), "
            f"{len(data['classes'])} class(es), {len(data['groups'])} group(s)"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    problems = open_store(args.store, mode="r").verify()
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        print(json.dumps({"ok": not errors, "problems": [p.__dict__ for p in problems]}, indent=1))
    else:
        for p in problems:
            print(f"{p.severity.upper()}: {p.path}: {p.message}")
        print("OK" if not errors else f"DAMAGED: {len(errors)} problem(s)")
    return 1 if errors else 0


def _gc(args: argparse.Namespace) -> int:
    removed = open_store(args.store, mode="a").gc(
        keep=args.keep,
        grace_seconds=args.grace,
        force=args.force,
        remove_orphans=args.remove_orphans,
    )
    if args.json:
        print(json.dumps({"removed": removed}, indent=1))
    else:
        for path in removed:
            print(f"removed {path}")
        print(f"{len(removed)} path(s) removed")
    return 0


def _export_sources(specs: list[str]) -> dict[str, Any]:
    """``--source NAME=SPEC`` values: an ``.npz`` (arrays ``x``, ``y``) is an ArraySource,
    anything else a shard spec (a ShardSource, indexed now)."""
    import numpy as np

    from memstore.sources import ArraySource, ShardSource

    out: dict[str, Any] = {}
    for item in specs:
        name, eq, spec = item.partition("=")
        if not eq or not name or not spec:
            raise InvalidParameterError(
                f"--source takes NAME=SPEC (a shard spec or an .npz file). Got {item!r} instead."
            )
        if spec.endswith(".npz"):
            with np.load(spec, allow_pickle=False) as npz:
                if "x" not in npz.files or "y" not in npz.files:
                    raise InvalidParameterError(
                        f"--source {name}={spec}: the .npz must hold arrays 'x' and 'y'. "
                        f"Got {npz.files} instead."
                    )
                out[name] = ArraySource(npz["x"], npz["y"], npz["t"] if "t" in npz.files else None)
        else:
            out[name] = ShardSource(spec, name=name, decode=False, progress=False)
    return out


def _export(args: argparse.Namespace) -> int:
    store = open_store(args.store, mode="r")
    done = export_memory(
        store,
        args.name,
        args.to,
        commit=args.commit,
        sources=_export_sources(args.source),
        maxcount=args.maxcount,
        progress=False if args.quiet or args.json else None,
    )
    if args.json:
        print(json.dumps(done.record, indent=1, sort_keys=True))
    elif not args.quiet:
        print(
            f"exported {done.count} exemplars of {args.name!r} (commit {done.record['commit']}) "
            f"to {done.path}: {done.spec or 'no shards'} + export.json"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memstore", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "inspect", help="policy, sizes, groups, classes, sources, payload columns, commits"
    )
    p.add_argument("store")
    p.add_argument("name", nargs="?")
    p.add_argument("--commit", type=int, default=None)
    p.set_defaults(run=_inspect)
    p = sub.add_parser("log", help="the commits of one buffer")
    p.add_argument("store")
    p.add_argument("name")
    p.set_defaults(run=_log)
    p = sub.add_parser("diff", help="exemplars added and removed between two commits")
    p.add_argument("store")
    p.add_argument("name")
    p.add_argument("a", type=int, help="the older commit's seq (as `memstore log` lists)")
    p.add_argument("b", type=int, help="the newer commit's seq")
    p.set_defaults(run=_diff)
    p = sub.add_parser("plot", help="PNG: class histogram over commits, group sizes vs. quota")
    p.add_argument("store")
    p.add_argument("name")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--width", type=int, default=1000, help="pixels (default 1000)")
    p.add_argument("--height", type=int, default=700, help="pixels (default 700)")
    p.set_defaults(run=_plot)
    p = sub.add_parser("verify", help="check every manifest, checksum and reference")
    p.add_argument("store")
    p.set_defaults(run=_verify)
    p = sub.add_parser("gc", help="keep the last K commits per buffer, remove debris")
    p.add_argument("store")
    p.add_argument("--keep", type=int, required=True)
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="seconds a debris file must be old before removal (default 60)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="collect even while a buffer's newest commit is damaged (refused otherwise)",
    )
    p.add_argument(
        "--remove-orphans",
        action="store_true",
        help="also remove orphans older than --grace (snapshots whose manifest is missing, "
        "source index folders whose record is missing); kept as evidence otherwise",
    )
    p.set_defaults(run=_gc)
    p = sub.add_parser(
        "export",
        help="the memory as a webdataset shard set with its metadata (re-open: open_export)",
    )
    p.add_argument("store")
    p.add_argument("name")
    p.add_argument("--to", required=True, help="a new or empty local folder")
    p.add_argument("--commit", type=int, default=None, help="commit seq (default: latest)")
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="where a source's samples are: a shard spec, or an .npz with arrays x, y "
        "(needed for array sources; shard sources default to the store's record)",
    )
    p.add_argument("--maxcount", type=int, default=10_000, help="exemplars per shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(run=_export)
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # e.g. `memstore inspect ... | head`
        sys.stderr.close()
        return 0
    except MemstoreError as err:  # every failure of a store operation is one
        print(f"memstore {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Exporting a memory: a buffer's exemplars at one commit as a self-contained webdataset shard
set, readable by a plain ``webdataset.WebDataset`` and re-openable as a ``ShardSource``.

Layout of the folder ``to`` (format version 1, :data:`EXPORT_FORMAT`):

``memory-000000.tar``, ...
    webdataset shards written by ``webdataset.ShardWriter`` (``mtime=0``), one sample per
    exemplar in buffer order, ``__key__`` = the row as ``"%09d"`` (so the re-opened
    ``ShardSource``'s id ``i`` is buffer row ``i``). Members: an exemplar of a ``ShardSource``
    keeps every member of its sample, byte for byte (read by offset); an exemplar of any other
    source (an ``ArraySource``, a map-style dataset) gets its input as ``input.npy`` (webdataset's
    ``.npy`` encoder). ``cls`` holds the target as text (added when the source's target member
    is another). ``memstore.json`` holds the metadata: ``source``, ``id``, ``key`` (the sample's
    original ``__key__``, or null), ``target``, ``task``, ``experience``, and every further
    1-D column of the exemplar set (payload columns); a column with more dimensions becomes the
    member ``<column>.npy``.
``export.json`` (written last: a folder without it is an unfinished export)
    ``kind`` ``"memstore-export"``, ``format``, ``buffer``, ``commit``, ``store``, ``spec``
    (brace spec of the shards, relative to the folder), ``shards``, ``shard_counts``,
    ``length``, ``members``, ``target_key`` (``"cls"``), ``input_key``, ``columns``, and per
    source ``kind``, ``fingerprint`` and ``count``.

Every sample of a shard set holds the same members, so a memory whose sources give different
member sets (a JPEG shard source and an array source) is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memstore.errors import (
    FormatVersionError,
    InvalidParameterError,
    MissingSourceError,
    SourceNotFoundError,
)
from memstore.experiences import COLUMNS
from memstore.io import is_local_url
from memstore.sources import ShardSource, as_source
from memstore.sources.base import InputBatchSource
from memstore.sources.inputs import item_input
from memstore.sources.shards import expand_spec, shard_spec, write_samples

from . import checks
from .store import Store

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_FILE",
    "Export",
    "export_memory",
    "open_export",
    "resolve_sources",
    "write_export",
]

EXPORT_FORMAT = 1
EXPORT_FILE = "export.json"
META_MEMBER = "memstore.json"
INPUT_MEMBER = "input.npy"
TARGET_MEMBER = "cls"
SHARD_PATTERN = "memory-%06d.tar"
_CHUNK = 1024  # exemplars read per batched read
_META_NAMES = {"source": "source", "ids": "id", "targets": "target", "task_labels": "task"}


@dataclass(frozen=True)
class Export:
    """What :func:`export_memory` wrote: the folder, its shards (brace spec relative to the
    folder, and paths), the number of exemplars and the members of every sample."""

    path: str
    spec: str
    shards: list[str]
    count: int
    members: list[str]
    record: dict[str, Any]


def resolve_sources(
    store: Store, names: list[str], given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The dataset of each source name: the one ``given``, else a ``ShardSource`` re-opened
    from the store's record of it (its recorded shard list and target member, ``decode=False``,
    ``reindex=False``: a changed shard is a :class:`~memstore.errors.SourceMismatchError`).
    A source the store holds no shard record of (an ``ArraySource``: its data is not in the
    store) must be given, else :class:`~memstore.errors.MissingSourceError`. Cost: two 64 KiB
    reads per shard of each re-opened source."""
    given = checks.sources_mapping(given, "export_memory") or {}
    out: dict[str, Any] = {}
    for name in names:
        if name in given:
            out[name] = given[name]
            continue
        saved = store.read_source_index(name)
        if saved is None or saved[0].get("kind") != "shards":
            raise MissingSourceError(
                f"The memory holds exemplars of source {name!r}, whose data is not in the "
                f"store ({'no record' if saved is None else 'not a shard source'}): pass it, "
                f"e.g. sources={{{name!r}: ArraySource(x, y)}} (CLI: --source {name}=x.npz, "
                "an .npz holding 'x' and 'y', or --source NAME=SHARD_SPEC)."
            )
        record = saved[0]
        try:
            out[name] = ShardSource(
                record["shards"],
                name=name,
                target_key=record["target_key"],
                decode=False,
                store=store,
                reindex=False,
                progress=False,
            )
        except SourceNotFoundError as err:
            raise SourceNotFoundError(
                f"{err} The store recorded source {name!r} at {record['spec']!r}; if the "
                f"shards moved, pass sources={{{name!r}: ShardSource(new_spec)}} (CLI: "
                f"--source {name}=NEW_SPEC)."
            ) from err
    return out


def export_memory(
    store: Store,
    name: str,
    to: str | os.PathLike,
    *,
    commit: int | None = None,
    sources: Mapping[str, Any] | None = None,
    maxcount: int = 10_000,
    progress: bool | None = None,
) -> Export:
    """Write buffer ``name`` (at ``commit``, default the latest) of ``store`` into the new or
    empty local folder ``to`` as a webdataset shard set with its metadata (module docstring).

    Args:
        sources: datasets by source name; sources not given are re-opened from the store's
            shard records (:func:`resolve_sources`). Each is checked against the fingerprint
            recorded with the commit (:class:`~memstore.errors.SourceMismatchError`).
        maxcount: exemplars per shard.
        progress: a tqdm bar on stderr; ``None``: when stderr is a terminal.

    Returns the :class:`Export`; re-open it with :func:`open_export`. Cost: one read of the
    commit, one fingerprint per source, one batched offset read per 1024 exemplars and
    source, and one write of the memory's samples.
    """
    if not isinstance(store, Store):
        raise checks.wrong_type("store", "export_memory", "a memstore Store", store)
    checks.valid_name(name, "export_memory")
    exemplars = store.load(name, commit)
    seq = int(exemplars.origin.seq)
    names = sorted(set(exemplars.buffer.source.tolist()))
    resolved = resolve_sources(store, names, sources)
    prints = store.check_sources(name, resolved, seq)  # refuses a source that changed
    header = {
        "buffer": name,
        "commit": seq,
        "store": store.url,
        "sources": {s: {"fingerprint": prints[s]} for s in names},
    }
    held = exemplars.buffer
    columns = {**held.columns(), **{f"payload.{k}": v for k, v in held.payload.items()}}
    return write_export(
        columns,
        resolved,
        to,
        header=header,
        maxcount=maxcount,
        progress=progress,
    )


def _member_set(source: Any) -> tuple[list[str], str | None]:
    """The members an exported sample of ``source`` holds, and its input member."""
    if isinstance(source, ShardSource):
        members = set(source.members)
        if source.target_key != TARGET_MEMBER and TARGET_MEMBER in members:
            raise InvalidParameterError(
                f"ShardSource {source.name!r} holds a {TARGET_MEMBER!r} member that is not its "
                f"target ({source.target_key!r}); an export keeps the target in "
                f"{TARGET_MEMBER!r}. Rename one of them in the shards first."
            )
        others = sorted(members - {source.target_key})
        input_key = source.input_key or (others[0] if len(others) == 1 else None)
        return sorted(members | {TARGET_MEMBER}), input_key
    return sorted({INPUT_MEMBER, TARGET_MEMBER}), INPUT_MEMBER


def _check_folder(to: Any) -> str:
    if not isinstance(to, (str, os.PathLike)):
        raise checks.wrong_type("to", "export_memory", "a folder path (str)", to)
    path = os.fspath(to)
    if not is_local_url(path):
        raise InvalidParameterError(
            f"The 'to' parameter of export_memory must be a local folder. Got {path!r} instead; "
            "export locally, then copy the folder (its shards and export.json)."
        )
    path = os.path.abspath(path.removeprefix("file://"))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InvalidParameterError(
            f"The 'to' parameter of export_memory must be a new or empty folder. Got {path!r}, "
            "which exists and is not empty; pick another folder or remove it."
        )
    return path


def write_export(
    columns: Mapping[str, np.ndarray],
    sources: Mapping[str, Any],
    to: str | os.PathLike,
    *,
    header: Mapping[str, Any] | None = None,
    maxcount: int = 10_000,
    progress: bool | None = None,
) -> Export:
    """Write exemplar ``columns`` (``ExemplarSet.columns()``, plus any further columns of one
    value per exemplar) as an export into ``to`` (module docstring); ``sources`` maps every
    source name of the ``source`` column to its dataset. The building block of
    :func:`export_memory`, which also fills ``header`` (buffer, commit, store, fingerprints)."""
    owner = "export_memory"
    path = _check_folder(to)
    maxcount = checks.int_at_least(maxcount, "maxcount", owner, 1)
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise InvalidParameterError(f"The exemplar columns lack {missing}.")
    n = len(columns["ids"])
    extra = [c for c in columns if c not in COLUMNS]
    src_col = np.asarray(columns["source"]).astype(str)
    names = sorted(set(src_col.tolist()))
    lost = [s for s in names if s not in sources]
    if lost:
        raise MissingSourceError(f"No dataset given for source(s) {lost} of the memory.")
    shapes = {s: _member_set(sources[s]) for s in names}
    if len({tuple(m) for m, _ in shapes.values()}) > 1:
        raise InvalidParameterError(
            "The memory mixes sources whose samples hold different members "
            f"({ {s: m for s, (m, _) in shapes.items()} }); a webdataset shard set needs one "
            "member set per sample. Export a memory of compatible sources."
        )
    members = next(iter(shapes.values()))[0] if shapes else [INPUT_MEMBER, TARGET_MEMBER]
    wide = [c for c in extra if np.asarray(columns[c]).ndim > 1]
    clash = [c for c in [META_MEMBER] + [f"{c}.npy" for c in wide] if c in members]
    if clash:
        raise InvalidParameterError(f"Exported members {clash} clash with the samples' members.")
    inputs = {k for _, k in shapes.values()}
    os.makedirs(path, exist_ok=True)
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    with tqdm(total=n, unit="exemplar", desc="export", disable=not show or n == 0) as bar:
        samples = _samples(columns, src_col, sources, extra, wide, bar)
        written = write_samples(
            samples, os.path.join(path, SHARD_PATTERN), maxcount, float("inf"), encode=True
        )
    counts = [min(maxcount, n - k * maxcount) for k in range(len(written))]
    spec = shard_spec(SHARD_PATTERN, len(written)) if written else ""
    record = {
        "kind": "memstore-export",
        "format": EXPORT_FORMAT,
        **dict(header or {}),
        "spec": spec,
        "shards": [os.path.basename(p) for p in written],
        "shard_counts": counts,
        "length": n,
        "members": sorted(members + [META_MEMBER] + [f"{c}.npy" for c in wide]),
        "target_key": TARGET_MEMBER,
        "input_key": inputs.pop() if len(inputs) == 1 else None,
        "columns": list(columns),
    }
    per_source = record.setdefault("sources", {})
    for s in names:
        kind = "shards" if isinstance(sources[s], ShardSource) else "data"
        entry = per_source.setdefault(s, {})
        entry.update(kind=kind, count=int((src_col == s).sum()))
    tmp = os.path.join(path, EXPORT_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(path, EXPORT_FILE))
    return Export(path, spec, written, n, record["members"], record)


def _rows_of(source: Any, ids: np.ndarray, targets: np.ndarray) -> list[tuple[dict, Any]]:
    """Per id: the exported members (bytes or objects webdataset encodes) and original key."""
    if isinstance(source, ShardSource):
        out = []
        for raw, y in zip(source.get_raw(ids), targets.tolist(), strict=True):
            members = {k: v for k, v in raw.items() if not k.startswith("__")}
            members.setdefault(TARGET_MEMBER, str(y).encode("ascii"))
            out.append((members, raw["__key__"]))
        return out
    data = as_source(source)
    if isinstance(data, InputBatchSource):  # in-memory arrays: one gather
        xs: Any = list(torch.as_tensor(data.get_inputs(ids)).unbind(0))
    else:
        xs = [item_input(item) for item in data.get_many(ids)]
    out = []
    for x, y in zip(xs, targets.tolist(), strict=True):
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        if not isinstance(x, (np.ndarray, np.generic, int, float)):
            raise InvalidParameterError(
                f"An exported input must be an array or tensor (written as {INPUT_MEMBER}). "
                f"Got {type(x).__name__} instead; pass a source whose items hold arrays."
            )
        out.append(({INPUT_MEMBER: np.asarray(x), TARGET_MEMBER: int(y)}, None))
    return out


def _samples(
    columns: Mapping[str, np.ndarray],
    src_col: np.ndarray,
    sources: Mapping[str, Any],
    extra: list[str],
    wide: list[str],
    bar: Any,
) -> Iterator[dict[str, Any]]:
    """The export's samples in buffer order, read ``_CHUNK`` exemplars at a time."""
    ids = np.asarray(columns["ids"], dtype=np.int64)
    targets = np.asarray(columns["targets"], dtype=np.int64)
    narrow = [c for c in extra if c not in wide]
    for a in range(0, len(ids), _CHUNK):
        rows = np.arange(a, min(a + _CHUNK, len(ids)))
        got: list[Any] = [None] * len(rows)
        for s in sorted(set(src_col[rows].tolist())):
            pos = np.flatnonzero(src_col[rows] == s)
            for p, row in zip(
                pos.tolist(), _rows_of(sources[s], ids[rows[pos]], targets[rows[pos]]), strict=True
            ):
                got[p] = row
        meta_cols = {c: np.asarray(columns[c])[rows].tolist() for c in [*COLUMNS, *narrow]}
        for k, r in enumerate(rows.tolist()):
            members, key = got[k]
            meta = {_META_NAMES.get(c, c): meta_cols[c][k] for c in meta_cols}
            meta["key"] = key
            sample = {"__key__": f"{r:09d}", **members, META_MEMBER: meta}
            for c in wide:
                sample[f"{c}.npy"] = np.asarray(columns[c][r])
            yield sample
        bar.update(len(rows))


def open_export(path: str | os.PathLike, *, name: str = "memory", **options: Any) -> ShardSource:
    """An export (its folder) as a ``ShardSource``: id ``i`` is buffer row ``i``; targets,
    keys and members as written. ``options`` go to ``ShardSource`` (``decode=``,
    ``transform=``, ``store=`` to keep its index, ...); ``input_key`` defaults to the recorded
    one. Cost: one sequential read of the export's shards to index them (none with a ``store``
    that holds the index)."""
    folder = os.path.abspath(os.fspath(path))
    try:
        with open(os.path.join(folder, EXPORT_FILE), encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError as err:
        raise SourceNotFoundError(
            f"{folder!r} holds no {EXPORT_FILE}: not a memstore export (or an unfinished one)."
        ) from err
    if not isinstance(record, dict) or record.get("kind") != "memstore-export":
        raise FormatVersionError(f"{folder}/{EXPORT_FILE} is not a memstore export record.")
    if int(record.get("format", 0)) > EXPORT_FORMAT:
        raise FormatVersionError(
            f"{folder}/{EXPORT_FILE} has export format {record.get('format')}; this memstore "
            f"reads up to {EXPORT_FORMAT}. Upgrade memstore."
        )
    shards = (
        [os.path.join(folder, s) for s in expand_spec(record["shards"])] if record["shards"] else []
    )
    if not shards:
        raise InvalidParameterError(f"The export {folder!r} holds no exemplars.")
    options.setdefault("input_key", record.get("input_key"))
    return ShardSource(shards, name=name, target_key=record["target_key"], **options)

"""``verify`` and ``gc`` over a whole store: what ``memstore verify`` / ``memstore gc`` run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from memstore.errors import MemstoreError

from . import layout, manifest
from .feature_caches import feature_cache_problems
from .history import History
from .source_index import SourceIndexes

__all__ = ["Problem", "verify_store", "gc_store", "source_debris"]


@dataclass(frozen=True)
class Problem:
    """Something ``verify`` found: ``severity`` is ``"error"`` (damage) or ``"debris"``."""

    path: str
    message: str
    severity: str = "error"


@dataclass
class _BufferScan:
    seqs: list[int] = field(default_factory=list)  # published, ascending
    problems: list[Problem] = field(default_factory=list)
    debris: list[str] = field(default_factory=list)


def _scan_buffer(history: History, name: str, check_data: bool = True) -> _BufferScan:
    """Published seqs, manifest problems and debris of one buffer.

    ``check_data`` reads every snapshot and checks its checksums (verify); gc only needs the
    manifests, so it skips that O(data) pass.
    """
    files = history.conn.files
    scan = _BufferScan()
    referenced: set[str] = set()
    damaged: set[int] = set()  # seqs whose manifest exists but cannot be read
    commits = layout.commits_dir(name)
    for entry in files.listdir(commits):
        seq = layout.manifest_seq(entry)
        if seq is None:
            scan.debris.append(f"{commits}/{entry}")
            continue
        scan.seqs.append(seq)
        try:
            parsed = history.manifest(name, seq, owner="Store.verify")
        except MemstoreError as err:
            scan.problems.append(Problem(f"{commits}/{entry}", str(err)))
            damaged.add(seq)
            continue
        referenced.add(parsed["snapshot"].split("/")[-1])
        if not check_data:
            continue
        snapshot = layout.snapshot_path(name, parsed["snapshot"])
        try:
            state = history.state_of(name, parsed)
        except MemstoreError as err:
            if files.exists(snapshot):
                scan.problems.append(Problem(snapshot, str(err)))
            else:
                scan.problems.append(
                    Problem(snapshot, f"snapshot referenced by commit {seq} is missing")
                )
        else:
            scan.problems.extend(_loadable(history, name, seq, state))
    for entry in files.listdir(layout.snapshots_dir(name)):
        if entry not in referenced and layout.snapshot_seq(entry) not in damaged:
            # A damaged manifest's snapshot is evidence for repair, not debris.
            scan.debris.append(f"{layout.snapshots_dir(name)}/{entry}")
    scan.seqs.sort()
    return scan


def _loadable(history: History, name: str, seq: int, state: dict) -> list[Problem]:
    """What ``load`` would refuse in a commit whose manifest and arrays passed their checks:
    the buffer's own ``load_state_dict`` checks, run as ``load`` runs them."""
    path = layout.manifest_path(name, seq)
    try:
        manifest.rebuild(state, None, f"{history.conn.url}/{path}")
    except MemstoreError as err:
        return [Problem(path, str(err))]
    return []


def _guarded(where: str, check: Callable[[], None], out: list[Problem]) -> None:
    """Run one part of verify; a failure to read that part is a problem, never an error."""
    try:
        check()
    except (MemstoreError, OSError) as err:
        out.append(Problem(where, f"cannot be checked ({type(err).__name__}: {err})"))


def verify_store(history: History, sources: SourceIndexes) -> list[Problem]:
    """Every manifest parses and holds its checksum, every snapshot exists and matches its
    checksums, every commit rebuilds a buffer as ``load`` would; source records and their
    indexes are checked; debris listed. Never raises on damage: it lists it.

    Cost: reads every published snapshot and source index once, O(store size).
    """
    files = history.conn.files
    out: list[Problem] = []

    def buffer(name: str) -> None:
        scan = _scan_buffer(history, name)
        out.extend(scan.problems)
        out.extend(
            Problem(p, "leftover from an interrupted or lost commit", "debris") for p in scan.debris
        )

    def probes() -> None:
        for entry in files.listdir(layout.PROBES):
            out.append(Problem(f"{layout.PROBES}/{entry}", "leftover probe file", "debris"))

    def source(name: str) -> None:
        try:
            sources.read(name)
        except MemstoreError as err:
            out.append(Problem(layout.source_dir(name), str(err)))
            return
        out.extend(
            Problem(p, "leftover from an interrupted re-indexing", "debris")
            for p in sources.debris(name)
        )

    def each(folder: str, check: Callable[[str], None]) -> None:
        for name in files.listdir(folder):
            _guarded(f"{folder}/{name}", partial(check, name), out)

    _guarded(layout.BUFFERS, partial(each, layout.BUFFERS, buffer), out)
    _guarded(layout.PROBES, probes, out)
    _guarded(layout.SOURCES, partial(each, layout.SOURCES, source), out)

    def caches() -> None:
        out.extend(Problem(path, msg) for path, msg in feature_cache_problems(history.conn))

    _guarded(layout.FEATURES, caches, out)
    return out


def source_debris(sources: SourceIndexes) -> list[str]:
    """Debris under ``sources/`` (see :meth:`SourceIndexes.debris`); sources whose record is
    damaged or unreadable contribute none (their folders are evidence)."""
    out: list[str] = []
    for name in sources.conn.files.listdir(layout.SOURCES):
        try:
            out.extend(sources.debris(name))
        except MemstoreError:
            continue
    return out


def gc_store(history: History, keep: int, grace_seconds: float) -> list[str]:
    """Drop commits beyond the last ``keep`` per buffer, then debris older than the grace."""
    files = history.conn.files
    removed: list[str] = []
    now = time.time()

    def old_enough(path: str) -> bool:
        try:
            return now - files.mtime(path) >= grace_seconds
        except (FileNotFoundError, OSError):
            return True

    for name in files.listdir(layout.BUFFERS):
        scan = _scan_buffer(history, name, check_data=False)
        for seq in scan.seqs[:-keep]:
            path = layout.manifest_path(name, seq)
            snapshot = None
            try:
                snapshot = json.loads(files.read(path)).get("snapshot")
            except (ValueError, OSError, AttributeError):
                pass
            if not (isinstance(snapshot, str) and layout.SNAPSHOT_REF.match(snapshot)):
                snapshot = None  # never follow a damaged reference out of the buffer
            files.delete(path)  # manifest first: never a manifest without its data
            removed.append(path)
            if snapshot:
                files.delete(layout.snapshot_path(name, snapshot))
                removed.append(layout.snapshot_path(name, snapshot))
        for path in scan.debris:  # a writer still committing has written it within the grace
            if old_enough(path):
                files.delete(path)
                removed.append(path)
    for entry in files.listdir(layout.PROBES):
        if old_enough(f"{layout.PROBES}/{entry}"):
            files.delete(f"{layout.PROBES}/{entry}")
            removed.append(f"{layout.PROBES}/{entry}")
    for path in source_debris(SourceIndexes(history.conn)):
        if old_enough(path):
            files.delete(path)
            removed.append(path)
    return removed

"""``verify`` and ``gc`` over a whole store: what ``memstore verify`` / ``memstore gc`` run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from memstore.errors import MemstoreError

from . import layout
from .feature_caches import feature_cache_problems
from .history import History
from .source_index import SourceIndexes

__all__ = ["Problem", "verify_store", "gc_store"]


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
            history.state_of(name, parsed)
        except MemstoreError as err:
            if files.exists(snapshot):
                scan.problems.append(Problem(snapshot, str(err)))
            else:
                scan.problems.append(
                    Problem(snapshot, f"snapshot referenced by commit {seq} is missing")
                )
    for entry in files.listdir(layout.snapshots_dir(name)):
        if entry not in referenced and layout.snapshot_seq(entry) not in damaged:
            # A damaged manifest's snapshot is evidence for repair, not debris.
            scan.debris.append(f"{layout.snapshots_dir(name)}/{entry}")
    scan.seqs.sort()
    return scan


def verify_store(history: History, sources: SourceIndexes) -> list[Problem]:
    """Every manifest parses, every snapshot exists and matches its checksums; debris listed.

    Cost: reads every published snapshot and source index once, O(store size).
    """
    files = history.conn.files
    out: list[Problem] = []
    for name in files.listdir(layout.BUFFERS):
        scan = _scan_buffer(history, name)
        out.extend(scan.problems)
        out.extend(
            Problem(p, "leftover from an interrupted or lost commit", "debris") for p in scan.debris
        )
    for entry in files.listdir(layout.PROBES):
        out.append(Problem(f"{layout.PROBES}/{entry}", "leftover probe file", "debris"))
    for name in files.listdir(layout.SOURCES):
        try:
            sources.read(name)
        except MemstoreError as err:
            out.append(Problem(layout.source_dir(name), str(err)))
    out.extend(Problem(path, message) for path, message in feature_cache_problems(history.conn))
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
    return removed

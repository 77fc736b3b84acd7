"""``verify`` and ``gc`` over a whole store: what ``memstore verify`` / ``memstore gc`` run."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from memstore.errors import MemstoreError

if TYPE_CHECKING:
    from .store import Problem, Store

__all__ = ["verify_store", "gc_store"]

_SNAPSHOT_REF = re.compile(r"^snapshots/\d{10}-[0-9a-f]{8}$")


def _scan_buffer(store: Store, name: str, check_data: bool = True):
    """(published seqs, manifest problems, referenced snapshots, debris) of one buffer.

    ``check_data`` reads every snapshot and checks its checksums (verify); gc only needs the
    manifests, so it skips that O(data) pass.
    """
    from .store import _MANIFEST, _SNAPSHOT, Problem

    problems: list[Problem] = []
    debris: list[str] = []
    referenced: dict[str, int] = {}
    damaged: set[int] = set()  # seqs whose manifest exists but cannot be read
    commits = f"buffers/{name}/commits"
    seqs = []
    for entry in store.files.listdir(commits):
        m = _MANIFEST.match(entry)
        if not m:
            debris.append(f"{commits}/{entry}")
            continue
        seq = int(m.group(1))
        seqs.append(seq)
        try:
            manifest = store._manifest(name, seq)
        except MemstoreError as err:
            problems.append(Problem(f"{commits}/{entry}", str(err)))
            damaged.add(seq)
            continue
        referenced[manifest["snapshot"].split("/")[-1]] = seq
        if not check_data:
            continue
        try:
            store._state_of(name, manifest)
        except MemstoreError as err:
            problems.append(Problem(f"buffers/{name}/{manifest['snapshot']}", str(err)))
            if not store.files.exists(f"buffers/{name}/{manifest['snapshot']}"):
                problems[-1] = Problem(
                    f"buffers/{name}/{manifest['snapshot']}",
                    f"snapshot referenced by commit {seq} is missing",
                )
    for entry in store.files.listdir(f"buffers/{name}/snapshots"):
        m = _SNAPSHOT.match(entry)
        if entry not in referenced and not (m and int(m.group(1)) in damaged):
            # A damaged manifest's snapshot is evidence for repair, not debris.
            debris.append(f"buffers/{name}/snapshots/{entry}")
    return sorted(seqs), problems, referenced, debris


def verify_store(store: Store) -> list[Problem]:
    """Every manifest parses, every snapshot exists and matches its checksums; debris listed."""
    from .store import Problem

    out: list[Problem] = []
    for name in store.files.listdir("buffers"):
        _seqs, problems, _ref, debris = _scan_buffer(store, name)
        out.extend(problems)
        out.extend(
            Problem(p, "leftover from an interrupted or lost commit", "debris") for p in debris
        )
    for entry in store.files.listdir(".memstore"):
        out.append(Problem(f".memstore/{entry}", "leftover probe file", "debris"))
    for name in store.files.listdir("sources"):
        try:
            store.read_source_index(name)
        except MemstoreError as err:
            out.append(Problem(f"sources/{name}", str(err)))
    return out


def gc_store(store: Store, keep: int, grace_seconds: float) -> list[str]:
    """Drop commits beyond the last ``keep`` per buffer, then debris older than the grace."""
    removed: list[str] = []
    now = time.time()

    def old_enough(path: str) -> bool:
        try:
            return now - store.files.mtime(path) >= grace_seconds
        except (FileNotFoundError, OSError):
            return True

    for name in store.files.listdir("buffers"):
        seqs, _problems, referenced, debris = _scan_buffer(store, name, check_data=False)
        for seq in seqs[:-keep]:
            path = store._manifest_path(name, seq)
            snapshot = None
            try:
                snapshot = json.loads(store.files.read(path)).get("snapshot")
            except (ValueError, OSError, AttributeError):
                pass
            if not (isinstance(snapshot, str) and _SNAPSHOT_REF.match(snapshot)):
                snapshot = None  # never follow a damaged reference out of the buffer
            store.files.delete(path)  # manifest first: never a manifest without its data
            removed.append(path)
            if snapshot:
                store.files.delete(f"buffers/{name}/{snapshot}")
                removed.append(f"buffers/{name}/{snapshot}")
        for path in debris:  # a writer still committing has written it within the grace
            if old_enough(path):
                store.files.delete(path)
                removed.append(path)
    for entry in store.files.listdir(".memstore"):
        if old_enough(f".memstore/{entry}"):
            store.files.delete(f".memstore/{entry}")
            removed.append(f".memstore/{entry}")
    return removed

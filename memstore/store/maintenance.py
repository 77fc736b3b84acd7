"""``verify`` and ``gc`` over a whole store: what ``memstore verify`` / ``memstore gc`` run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from memstore.errors import CorruptStoreError, MemstoreError

from . import layout, manifest
from .feature_caches import feature_cache_problems
from .history import History, tombstone_bytes
from .run_state import RunStates, refs_of
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
    seqs: list[int] = field(default_factory=list)  # taken (manifests and tombstones), ascending
    pruned: set[int] = field(default_factory=set)  # seqs holding a tombstone
    damaged: set[int] = field(default_factory=set)  # seqs whose manifest exists but is damaged
    problems: list[Problem] = field(default_factory=list)
    debris: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # snapshots whose manifest was deleted
    snapshots: dict[int, str] = field(default_factory=dict)  # seq -> referenced snapshot path
    # seq -> older snapshot paths whose run-state tensors the commit reads (gc keeps them)
    run_refs: dict[int, set[str]] = field(default_factory=dict)
    head: int | None = None  # the head marker's seq


def _scan_buffer(history: History, name: str, check_data: bool = True) -> _BufferScan:
    """Taken seqs, manifest problems, history problems, orphans and debris of one buffer.

    ``check_data`` reads every snapshot and checks its checksums (verify); gc only needs the
    manifests, so it skips that O(data) pass.
    """
    files = history.conn.files
    scan = _BufferScan()
    try:  # before listing: every seq up to the head is listed then (no false alarm)
        scan.head = history.head(name)
    except MemstoreError as err:
        scan.problems.append(Problem(layout.head_path(name), str(err)))
    referenced: set[str] = set()
    commits = layout.commits_dir(name)
    for entry in files.listdir(commits):
        seq = layout.manifest_seq(entry)
        if seq is None:
            scan.debris.append(f"{commits}/{entry}")
            continue
        scan.seqs.append(seq)
        try:
            parsed = history.read(name, seq)
        except MemstoreError as err:
            scan.problems.append(Problem(f"{commits}/{entry}", str(err)))
            scan.damaged.add(seq)
            continue
        if parsed is None:
            scan.pruned.add(seq)
            continue
        referenced.add(parsed["snapshot"].split("/")[-1])
        scan.snapshots[seq] = layout.snapshot_path(name, parsed["snapshot"])
        refs = refs_of(parsed)
        referenced.update(ref.split("/")[-1] for ref in refs)
        scan.run_refs[seq] = {layout.snapshot_path(name, ref) for ref in refs}
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
            scan.problems.extend(_rebuild_problems(history, name, seq, state))
        try:
            RunStates(history.conn).read(name, parsed)
        except MemstoreError as err:
            where = layout.run_state_path(name, parsed["snapshot"])
            scan.problems.append(Problem(where, f"run state of commit {seq}: {err}"))
    scan.seqs.sort()
    missing = _missing_seqs(name, scan)
    for entry in files.listdir(layout.snapshots_dir(name)):
        seq = layout.snapshot_seq(entry)
        path = f"{layout.snapshots_dir(name)}/{entry}"
        if entry in referenced or seq in scan.damaged:
            continue  # a damaged manifest's snapshot is evidence for repair, not debris
        if seq in missing:
            scan.orphans.append(path)
        else:
            scan.debris.append(path)
    for entry in files.listdir(layout.buffer_dir(name)):  # an interrupted head write
        if entry.startswith(layout.TEMP_PREFIX):
            scan.debris.append(f"{layout.buffer_dir(name)}/{entry}")
    return scan


def _rebuild_problems(history: History, name: str, seq: int, state: dict) -> list[Problem]:
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


def _missing_seqs(name: str, scan: _BufferScan) -> set[int]:
    """Seqs that were published but have neither a manifest nor a tombstone, each reported.

    Every seq from the buffer's first to its newest (or to the head marker, if higher) stays
    taken once published (gc leaves tombstones), so a hole is a deleted manifest. Seqs below
    the first are those a format-1 gc removed, not damage.
    """
    head = scan.head
    first = scan.seqs[0] if scan.seqs else 0
    top = max(scan.seqs[-1:] + ([] if head is None else [head]), default=-1)
    missing = set(range(first, top + 1)) - set(scan.seqs)
    for seq in sorted(missing):
        why = (
            f"the head marker says commit {head} was published"
            if head is not None and seq > (scan.seqs[-1] if scan.seqs else -1)
            else f"it lies between commits {first} and {top}"
        )
        scan.problems.append(
            Problem(
                layout.manifest_path(name, seq),
                f"manifest of commit {seq} of buffer {name!r} is missing ({why}): it was "
                "deleted. Restore it; load(commit=N) loads the others.",
            )
        )
    return missing


def _orphan_problems(scan: _BufferScan) -> list[Problem]:
    return [
        Problem(
            path,
            "snapshot whose manifest is missing (deleted): kept as evidence; "
            "gc(remove_orphans=True) removes it",
        )
        for path in scan.orphans
    ]


def _unrecorded_problems(name: str, paths: list[str]) -> list[Problem]:
    """The missing record of a source folder that still holds ``paths`` (none: no problem,
    e.g. the whole folder was removed)."""
    if not paths:
        return []
    record = layout.source_record_path(name)
    return [
        Problem(
            record,
            f"{record} is missing, but {layout.source_dir(name)}/ holds "
            f"{', '.join(paths)}: the record was deleted (or the source's first indexing "
            "was interrupted, or is running now), so nothing can read that index. Restore "
            "the record, or re-index the source (e.g. ShardSource(..., store=store) on a "
            "writable store) and gc removes the old folders; until then they are kept as "
            "evidence (gc(remove_orphans=True) removes them). To remove a source, delete "
            f"the whole {layout.source_dir(name)}/ folder.",
        )
    ]


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
        out.extend(_orphan_problems(scan))
        out.extend(
            Problem(p, "leftover from an interrupted or lost commit", "debris") for p in scan.debris
        )

    def probes() -> None:
        for entry in files.listdir(layout.PROBES):
            out.append(Problem(f"{layout.PROBES}/{entry}", "leftover probe file", "debris"))

    def source(name: str) -> None:
        try:
            saved = sources.read(name)
        except MemstoreError as err:
            out.append(Problem(layout.source_dir(name), str(err)))
            return
        if saved is None:
            out.extend(_unrecorded_problems(name, sources.unrecorded(name)))
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


def source_debris(sources: SourceIndexes, remove_orphans: bool = False) -> list[str]:
    """Debris under ``sources/`` (see :meth:`SourceIndexes.debris`), plus with
    ``remove_orphans`` what the folders of sources without a record hold
    (:meth:`SourceIndexes.unrecorded`). Sources whose record is damaged or unreadable
    contribute none (their folders are evidence)."""
    out: list[str] = []
    for name in sources.conn.files.listdir(layout.SOURCES):
        try:
            recorded, paths = sources.leftovers(name)
        except MemstoreError:
            continue
        if recorded or remove_orphans:
            out.extend(paths)
    return out


@dataclass
class _Plan:
    """What gc would remove from one buffer."""

    prune: list[int] = field(default_factory=list)  # seqs whose manifest becomes a tombstone
    paths: list[str] = field(default_factory=list)  # debris (and orphans, if asked) to delete
    damaged_newest: str | None = None  # why the newest commit cannot be loaded


def _loadable(history: History, name: str, seq: int) -> str | None:
    """``None`` if commit ``seq`` loads (manifest, snapshot checksums, state, run state);
    else why not."""
    try:
        parsed = history.read(name, seq)
        if parsed is None:
            return f"commit {seq} was pruned"
        where = f"{history.conn.url}/{layout.manifest_path(name, seq)}"
        manifest.rebuild(history.state_of(name, parsed), None, where)
        RunStates(history.conn).read(name, parsed)
    except MemstoreError as err:
        return str(err)
    return None


def _plan_buffer(
    history: History, name: str, keep: int, old_enough, remove_orphans: bool
) -> tuple[_BufferScan, _Plan]:
    scan = _scan_buffer(history, name, check_data=False)
    plan = _Plan()
    if scan.head is not None and scan.head > max(scan.seqs, default=-1):
        plan.damaged_newest = f"its manifest {layout.manifest_path(name, scan.head)} is missing"
    kept = 0
    for seq in reversed(scan.seqs):
        if seq in scan.pruned:
            continue
        why = _loadable(history, name, seq)
        if why is not None:
            if seq == scan.seqs[-1] and plan.damaged_newest is None:
                plan.damaged_newest = why
            continue
        kept += 1
        if kept == keep:
            plan.prune = [s for s in scan.seqs if s < seq and s not in scan.pruned]
            break
    candidates = scan.debris + (scan.orphans if remove_orphans else [])
    plan.paths = [p for p in candidates if old_enough(p)]
    return scan, plan


def gc_store(
    history: History,
    keep: int,
    grace_seconds: float,
    force: bool = False,
    remove_orphans: bool = False,
) -> list[str]:
    """Prune commits older than the newest ``keep`` loadable ones per buffer (tombstones
    keep their seqs taken), then remove debris older than the grace.

    Nothing at all is deleted while a buffer's newest commit is damaged and there is
    something to delete in it, unless ``force``: :class:`CorruptStoreError` says why.
    """
    files = history.conn.files
    removed: list[str] = []
    now = time.time()

    def old_enough(path: str) -> bool:
        try:
            return now - files.mtime(path) >= grace_seconds
        except (FileNotFoundError, OSError):
            return True

    plans = {
        name: _plan_buffer(history, name, keep, old_enough, remove_orphans)
        for name in files.listdir(layout.BUFFERS)
    }
    refused = [
        f"the newest commit {scan.seqs[-1] if scan.seqs else '?'} of buffer {name!r} is "
        f"damaged ({plan.damaged_newest})"
        for name, (scan, plan) in plans.items()
        if plan.damaged_newest is not None and (plan.prune or plan.paths)
    ]
    if refused and not force:
        raise CorruptStoreError(
            "gc deleted nothing: "
            + "; ".join(refused)
            + ". Older commits may be all that is left of it: repair the damage (verify "
            "lists it), or pass force=True (memstore gc --force) to collect anyway; the "
            "newest loadable commits are kept."
        )
    for name, (scan, plan) in plans.items():
        # Snapshots whose run-state tensors a commit that stays reads are kept (FORMAT.md).
        pruned = set(plan.prune)
        needed = set().union(*(r for s, r in scan.run_refs.items() if s not in pruned))
        for seq in plan.prune:
            path = layout.manifest_path(name, seq)
            # Tombstone first: the seq stays taken, and never a manifest without its data.
            files.write_file(path, tombstone_bytes(seq))
            removed.append(path)
            snapshot = scan.snapshots.get(seq)
            if snapshot and snapshot not in needed:
                files.delete(snapshot)
                removed.append(snapshot)
        # Snapshots of commits pruned before, kept for their tensors, that only the commits
        # just pruned still read: nothing reads them any more.
        released = set().union(*(scan.run_refs.get(s, set()) for s in pruned)) - needed
        for path in sorted(released):
            if layout.snapshot_seq(path.rsplit("/", 1)[-1]) in scan.pruned:
                files.delete(path)
                removed.append(path)
        for path in plan.paths:  # a writer still committing has written it within the grace
            files.delete(path)
            removed.append(path)
    for entry in files.listdir(layout.PROBES):
        if old_enough(f"{layout.PROBES}/{entry}"):
            files.delete(f"{layout.PROBES}/{entry}")
            removed.append(f"{layout.PROBES}/{entry}")
    for path in source_debris(SourceIndexes(history.conn), remove_orphans):
        if old_enough(path):
            files.delete(path)
            removed.append(path)
    return removed

"""The commit protocol: how a new version of a buffer becomes visible, atomically.

A commit builds on its parent (the commit the buffer's content came from) and is published
as exactly ``parent + 1`` (optimistic concurrency: as git refuses a non-fast-forward push):

1. write the snapshot under a fresh, never-reused prefix ``snapshots/<seq>-<id>``;
2. on local disk, fsync its files and directories;
3. publish the manifest create-if-absent (``os.link`` of an fsynced temp file locally,
   ``If-None-Match: *`` on S3); if the seq is taken (another writer, or a gc tombstone) the
   writer removes its snapshot and gets :class:`~memstore.errors.ConcurrentCommitError`;
4. write the head marker ``head.json`` (the newest seq; a crash before it leaves it lower,
   which readers accept).

Readers follow published manifests only, so a crash leaves the previous commit or the new
one, never a torn buffer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from memstore.errors import (
    BufferNotFoundError,
    ConcurrentCommitError,
    InvalidParameterError,
    UnrelatedHistoryError,
)
from memstore.io import CreateConflict
from memstore.policies import ExemplarsBuffer

from . import checks, layout, manifest, snapshots
from .connect import Connection, access_error
from .history import Origin
from .run_state import FIELD, PreparedRunState, RunStates

__all__ = ["commit_state", "check_save_arguments", "parent_of", "publish_arrays"]


def publish_arrays(
    conn: Connection,
    prefix: str,
    arrays: Mapping[str, Any],
    what: str,
    then: Callable[[], None] | None = None,
) -> None:
    """Steps 1-2: write ``arrays`` under the fresh ``prefix`` (then whatever ``then`` adds to
    it, e.g. the run state) and make them durable."""
    try:
        snapshots.write_arrays(conn, prefix, arrays)
        if then is not None:
            then()
        conn.files.sync_tree(prefix)
    except OSError as err:
        raise access_error(err, conn.url, what) from err


def check_save_arguments(
    buffer: object, message: object, parent: object, overwrite: object
) -> int | None:
    """Check ``Store.save``'s arguments before anything is read or written; the parent."""
    if not isinstance(buffer, ExemplarsBuffer):
        raise checks.wrong_type("buffer", "Store.save", "a memstore buffer", type(buffer).__name__)
    if not isinstance(message, str):
        raise checks.wrong_type("message", "Store.save", "a str", message)
    if not isinstance(overwrite, bool):
        raise checks.wrong_type("overwrite", "Store.save", "a bool", overwrite)
    if parent is None:
        return None
    parent = checks.int_at_least(parent, "parent", "Store.save", 0)
    if overwrite:
        raise InvalidParameterError(
            "Store.save takes either parent= or overwrite=True, not both: parent=N "
            "builds on commit N, overwrite=True on the latest one."
        )
    return parent


def parent_of(
    name: str,
    origin: object,
    location: str,
    top: int | None,
    parent: int | None,
    overwrite: bool,
) -> int | None:
    """The commit a save under ``name`` builds on (``None``: the first of a new name).

    ``origin`` is the buffer's ``origin``, ``location`` the saving store's, ``top`` the
    newest seq ``name`` has taken; ``parent`` / ``overwrite`` are the caller's explicit choice.
    Raises :class:`~memstore.errors.UnrelatedHistoryError` for a buffer not from ``name``
    saved under it without a choice.
    """
    if parent is not None:
        if top is None or parent > top:
            newest = "it has none" if top is None else f"the newest is {top}"
            raise BufferNotFoundError(
                f"Buffer {name!r} has no commit {parent} to build on ({newest})."
            )
        return parent
    if overwrite:
        return top
    if isinstance(origin, Origin) and (origin.store, origin.name) == (location, name):
        return origin.seq
    if top is None:
        return None
    came = (
        f"comes from commit {origin.seq} of buffer {origin.name!r} in {origin.store!r}"
        if isinstance(origin, Origin)
        else "was never loaded or saved"
    )
    raise UnrelatedHistoryError(
        f"Buffer {name!r} already has commits (the newest is {top}) and this buffer {came}, "
        "so saving it would replace that history by accident. Pass parent=N to build on "
        "commit N, or overwrite=True to commit it on top of the latest, or save it under "
        "a new name. Nothing was written."
    )


def commit_state(
    conn: Connection,
    name: str,
    state: Mapping[str, Any],
    *,
    parent: int | None,
    top: int | None,
    message: str,
    sources: Mapping[str, Any],
    run_state: PreparedRunState | None = None,
    prior: Mapping[tuple, Any] | None = None,
) -> dict[str, Any]:
    """Publish ``state`` as commit ``parent + 1`` (0 without a parent) of ``name``; its
    manifest.

    ``run_state`` (:func:`run_state.prepare`) goes into the same snapshot, before it is
    synced; tensors ``prior`` (:meth:`RunStates.prior` of the parent) holds are referenced.

    ``top`` is the newest seq the caller saw taken (``None``: a new name): a seq at or below
    it is refused before anything is written. ``sources`` are the source records
    (:func:`manifest.source_records`). Cost: O(state size) written and fsynced.
    """
    seq = 0 if parent is None else parent + 1
    if top is not None and seq <= top:
        raise _conflict(name, seq, parent)
    arrays = manifest.snapshot_arrays(state)
    snapshot = layout.new_snapshot_ref(seq)
    prefix = layout.snapshot_path(name, snapshot)
    field: dict[str, Any] = {}

    def add_run_state() -> None:
        field.update(RunStates(conn).write(name, snapshot, run_state, prior or {}))

    then = None if run_state is None else add_run_state
    publish_arrays(conn, prefix, arrays, f"write the snapshot of buffer {name!r}", then)
    path = layout.manifest_path(name, seq)
    if conn.files.exists(path):  # taken while the snapshot was written: skip the collision
        conn.files.delete(prefix)
        raise _conflict(name, seq, parent)
    parsed = manifest.encode(
        state,
        arrays,
        name=name,
        seq=seq,
        parent=parent,
        snapshot=snapshot,
        message=message,
        sources=sources,
    )
    if run_state is not None:
        parsed[FIELD] = field
    try:
        conn.files.create_if_absent(path, manifest.to_bytes(parsed))
    except CreateConflict as err:
        conn.files.delete(prefix)
        raise _conflict(name, seq, parent) from err
    except OSError as err:
        raise access_error(err, conn.url, f"publish commit {seq} of buffer {name!r}") from err
    try:  # step 4; if it fails the head stays lower than the newest commit, which is allowed
        conn.files.write_file(layout.head_path(name), json.dumps({"seq": seq}).encode())
    except OSError:
        pass
    return parsed


def _conflict(name: str, seq: int, parent: int | None) -> ConcurrentCommitError:
    base = f"was loaded from commit {parent}" if parent is not None else "starts a new history"
    return ConcurrentCommitError(
        f"Commit {seq} of buffer {name!r} is taken (another writer published it first, or gc "
        f"pruned it): this buffer {base}, so saving it would drop the changes of the newer "
        f"commits. Reload it (store.load({name!r})), apply your update again and save."
    )

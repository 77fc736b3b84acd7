"""The commit protocol: how a new version of a buffer becomes visible, atomically.

1. write the snapshot under a fresh, never-reused prefix ``snapshots/<seq>-<id>``;
2. on local disk, fsync its files and directories;
3. publish the manifest create-if-absent (``os.link`` of an fsynced temp file locally,
   ``If-None-Match: *`` on S3); the loser of a race removes its snapshot and gets
   :class:`~memstore.errors.ConcurrentCommitError`.

Readers follow published manifests only, so a crash leaves the previous commit or the new
one, never a torn buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memstore.errors import ConcurrentCommitError
from memstore.io import CreateConflict

from . import layout, manifest, snapshots
from .connect import Connection, access_error

__all__ = ["commit_state", "publish_arrays"]


def publish_arrays(conn: Connection, prefix: str, arrays: Mapping[str, Any], what: str) -> None:
    """Steps 1-2: write ``arrays`` under the fresh ``prefix`` and make them durable."""
    try:
        snapshots.write_arrays(conn, prefix, arrays)
        conn.files.sync_tree(prefix)
    except OSError as err:
        raise access_error(err, conn.url, what) from err


def commit_state(
    conn: Connection,
    name: str,
    state: Mapping[str, Any],
    *,
    seqs: list[int],
    message: str,
    sources: Mapping[str, Any],
) -> dict[str, Any]:
    """Publish ``state`` as commit ``seqs[-1] + 1`` (or 0) of ``name``; its manifest.

    ``seqs`` are the commits seen when the caller listed them; ``sources`` are the source
    records (:func:`manifest.source_records`). Cost: O(state size) written and fsynced.
    """
    seq = (seqs[-1] + 1) if seqs else 0
    arrays = manifest.snapshot_arrays(state)
    snapshot = layout.new_snapshot_ref(seq)
    prefix = layout.snapshot_path(name, snapshot)
    publish_arrays(conn, prefix, arrays, f"write the snapshot of buffer {name!r}")
    parsed = manifest.encode(
        state,
        arrays,
        name=name,
        seq=seq,
        parent=seqs[-1] if seqs else None,
        snapshot=snapshot,
        message=message,
        sources=sources,
    )
    try:
        conn.files.create_if_absent(layout.manifest_path(name, seq), manifest.to_bytes(parsed))
    except CreateConflict as err:
        conn.files.delete(prefix)
        raise ConcurrentCommitError(
            f"Another writer committed version {seq} of buffer {name!r} first. Reload it "
            f"(store.load({name!r})) and apply your update again."
        ) from err
    except OSError as err:
        raise access_error(err, conn.url, f"publish commit {seq} of buffer {name!r}") from err
    return parsed

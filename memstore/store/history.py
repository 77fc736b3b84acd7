"""Buffer history: which commits a buffer has, reading one back, its log.

Commits are numbered 0, 1, 2, ... per buffer (``seq``); a commit exists once its manifest is
published. Reads follow published manifests only and verify the checksums of what they read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memstore.errors import BufferNotFoundError, CorruptStoreError

from . import checks, layout, manifest, snapshots
from .connect import Connection, access_error

__all__ = ["Commit", "commit_of", "History"]


@dataclass(frozen=True)
class Commit:
    """One published version of a buffer."""

    seq: int
    id: str
    time: str
    message: str
    sizes: dict[str, int] = field(default_factory=dict)


def commit_of(parsed: Mapping[str, Any]) -> Commit:
    """The :class:`Commit` a parsed manifest describes."""
    return Commit(
        seq=int(parsed["seq"]),
        id=str(parsed["id"]),
        time=str(parsed["time"]),
        message=str(parsed.get("message", "")),
        sizes=dict(parsed.get("sizes", {})),
    )


class History:
    """The commits of the buffers of one store (reads only; see ``commit.py`` for writes)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def buffers(self) -> list[str]:
        """Names of the buffers that have at least one commit (sorted)."""
        return [n for n in self.conn.files.listdir(layout.BUFFERS) if self.seqs(n)]

    def seqs(self, name: str) -> list[int]:
        """The published commit numbers of ``name``, ascending (``[]`` if none)."""
        entries = self.conn.files.listdir(layout.commits_dir(name))
        return sorted(s for s in map(layout.manifest_seq, entries) if s is not None)

    def manifest(self, name: str, seq: int | None = None, owner: str = "Store.load") -> dict:
        """The parsed, validated manifest of commit ``seq`` of ``name`` (default: latest).

        Raises :class:`~memstore.errors.BufferNotFoundError` for an unknown buffer or commit,
        :class:`~memstore.errors.CorruptStoreError` for a damaged manifest.
        """
        checks.valid_name(name, owner)
        seqs = self.seqs(name)
        if not seqs:
            raise BufferNotFoundError(
                f"No buffer named {name!r} in {self.conn.url!r}; it holds {self.buffers()}."
            )
        if seq is None:
            seq = seqs[-1]
        else:
            seq = checks.int_at_least(seq, "commit", owner, 0)
            if seq not in seqs:
                raise BufferNotFoundError(
                    f"Buffer {name!r} has no commit {seq}; its commits are {seqs[0]}..{seqs[-1]}"
                    f" ({len(seqs)} kept)."
                )
        path = layout.manifest_path(name, seq)
        older = [s for s in seqs if s < seq][-3:]
        try:
            raw = self.conn.files.read(path)
        except FileNotFoundError as err:  # removed (by gc) since it was listed
            raise BufferNotFoundError(
                f"Commit {seq} of buffer {name!r} was removed while it was being read."
            ) from err
        except OSError as err:
            raise access_error(err, self.conn.url, f"read {path}") from err
        return manifest.parse(
            raw,
            seq,
            where=f"{self.conn.url}/{path}",
            hint=f" Older commits ({older}) can be loaded with commit=N.",
            legacy_seq=self.conn.root.legacy_seq(name),
        )

    def state_of(self, name: str, parsed: Mapping[str, Any]) -> dict[str, Any]:
        """The state a parsed manifest describes (reads and verifies its snapshot)."""
        prefix = layout.snapshot_path(name, parsed["snapshot"])
        arrays = snapshots.read_arrays(self.conn, prefix, parsed["arrays"])
        return manifest.decode(parsed, arrays)

    def log(self, name: str) -> list[Commit]:
        """The buffer's commits, oldest first (damaged manifests are skipped; see verify)."""
        out = []
        for seq in self.seqs(checks.valid_name(name, "Store.log")):
            try:
                parsed = self.manifest(name, seq, owner="Store.log")
            except CorruptStoreError:
                continue
            out.append(commit_of(parsed))
        if not out and not self.seqs(name):
            raise BufferNotFoundError(f"No buffer named {name!r} in {self.conn.url!r}.")
        return out

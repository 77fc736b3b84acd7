"""Buffer history: which commits a buffer has, reading one back, its log.

Commits are numbered 0, 1, 2, ... per buffer (``seq``); a commit exists once its manifest is
published. Reads follow published manifests only and verify the checksums of what they read.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memstore.errors import BufferNotFoundError, CorruptStoreError

from . import checks, layout, manifest, snapshots
from .connect import Connection, access_error, store_exists

__all__ = ["Commit", "Origin", "commit_of", "tombstone_bytes", "History"]


@dataclass(frozen=True)
class Commit:
    """One published version of a buffer."""

    seq: int
    id: str
    time: str
    message: str
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """The commit a buffer's content comes from (``buffer.origin``): which store (its
    location), which buffer name, which seq. Set by ``Store.load`` and ``Store.save``;
    ``Store.save`` publishes ``seq + 1`` when the buffer is saved under ``name`` again."""

    store: str
    name: str
    seq: int


def commit_of(parsed: Mapping[str, Any]) -> Commit:
    """The :class:`Commit` a parsed manifest describes."""
    return Commit(
        seq=int(parsed["seq"]),
        id=str(parsed["id"]),
        time=str(parsed["time"]),
        message=str(parsed.get("message", "")),
        sizes=dict(parsed.get("sizes", {})),
    )


def tombstone_bytes(seq: int) -> bytes:
    """What gc writes over the manifest of a pruned commit: the seq stays taken."""
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
    body = {"kind": layout.TOMBSTONE_KIND, "memstore_format": layout.FORMAT_VERSION}
    return json.dumps({**body, "seq": seq, "time": now}, sort_keys=True).encode()


def _tombstone_seq(raw: bytes) -> object:
    """The ``seq`` a tombstone names; ``None`` if ``raw`` is not a tombstone."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("kind") == layout.TOMBSTONE_KIND:
        return parsed.get("seq", -1)
    return None


class History:
    """The commits of the buffers of one store (reads only; see ``commit.py`` for writes).

    ``commits/<seq>.json`` holds a manifest or, once gc pruned the commit, a tombstone: every
    seq from a buffer's first to its newest stays taken, so none is ever published twice.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def buffers(self) -> list[str]:
        """Names of the buffers that have at least one commit (sorted)."""
        return [n for n in self.conn.files.listdir(layout.BUFFERS) if self.seqs(n)]

    def seqs(self, name: str) -> list[int]:
        """The taken commit numbers of ``name`` (manifests and tombstones), ascending."""
        entries = self.conn.files.listdir(layout.commits_dir(name))
        return sorted(s for s in map(layout.manifest_seq, entries) if s is not None)

    def head(self, name: str) -> int | None:
        """The seq the head marker names (``None`` if there is none: format-1 buffers).

        It is written after each publish, so it is at most the newest seq; more means a
        deleted manifest. Raises :class:`~memstore.errors.CorruptStoreError` if damaged.
        """
        path = layout.head_path(name)
        try:
            raw = self.conn.files.read(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise access_error(err, self.conn.url, f"read {path}") from err
        try:
            seq = json.loads(raw)["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError(f"seq {seq!r} is not a commit number")
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptStoreError(
                f"{self.conn.url}/{path}: head marker is damaged ({err}). Rewrite it as "
                '{"seq": N} with N the newest commit, or delete it.'
            ) from err
        return seq

    def top(self, name: str) -> int | None:
        """The newest seq ``name`` has taken (manifest, tombstone or head), ``None`` if new."""
        head = self.head(name)  # before listing: every seq <= head is listed then
        seqs = self.seqs(name)
        known = seqs[-1:] + ([] if head is None else [head])
        return max(known) if known else None

    def missing_newest(self, name: str) -> CorruptStoreError | None:
        """The error to raise when the head names a commit newer than every manifest."""
        head = self.head(name)  # before listing: every seq <= head is listed then
        seqs = self.seqs(name)
        if head is None or (seqs and seqs[-1] >= head):
            return None
        path = layout.manifest_path(name, head)
        newest = f"the newest manifest is commit {seqs[-1]}" if seqs else "no manifest is left"
        return CorruptStoreError(
            f"{self.conn.url}/{path} is missing: the head marker says commit {head} of buffer "
            f"{name!r} was published, but {newest}, so it was deleted. Loading the latest "
            "would silently roll back; restore the file, or load an older commit with "
            "commit=N (verify lists what is missing)."
        )

    def manifest(self, name: str, seq: int | None = None, owner: str = "Store.load") -> dict:
        """The parsed, validated manifest of commit ``seq`` of ``name`` (default: latest).

        Raises :class:`~memstore.errors.BufferNotFoundError` for an unknown buffer or commit
        (or one gc pruned), :class:`~memstore.errors.CorruptStoreError` for a damaged or
        deleted manifest.
        """
        checks.valid_name(name, owner)
        if seq is None:
            missing = self.missing_newest(name)
            if missing is not None:
                raise missing
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
                if seqs[0] < seq <= (self.top(name) or 0):
                    raise CorruptStoreError(
                        f"{self.conn.url}/{layout.manifest_path(name, seq)} is missing: "
                        f"commit {seq} of buffer {name!r} was published (it is older than the "
                        "newest), but its manifest was deleted."
                    )
                raise BufferNotFoundError(
                    f"Buffer {name!r} has no commit {seq}; its commits are {seqs[0]}..{seqs[-1]}."
                )
        older = [s for s in seqs if s < seq][-3:]
        parsed = self.read(name, seq, f" Older commits ({older}) can be loaded with commit=N.")
        if parsed is None:
            raise BufferNotFoundError(
                f"Buffer {name!r} has no commit {seq}: gc pruned it (its commits are "
                f"{seqs[0]}..{seqs[-1]}; store.log({name!r}) lists the ones kept)."
            )
        return parsed

    def read(self, name: str, seq: int, hint: str = "") -> dict[str, Any] | None:
        """The parsed manifest of the taken seq ``seq``; ``None`` if it is a tombstone.

        ``hint`` is appended to a damage message."""
        path = layout.manifest_path(name, seq)
        where = f"{self.conn.url}/{path}"
        try:
            raw = self.conn.files.read(path)
        except FileNotFoundError as err:  # removed since it was listed
            raise BufferNotFoundError(
                f"Commit {seq} of buffer {name!r} was removed while it was being read."
            ) from err
        except OSError as err:
            raise access_error(err, self.conn.url, f"read {path}") from err
        pruned = _tombstone_seq(raw)
        if pruned is not None:
            if pruned != seq:
                raise CorruptStoreError(f"{where}: tombstone is damaged (seq {pruned!r}).")
            return None
        parsed = manifest.parse(
            raw, seq, where=where, hint=hint, legacy_seq=self.conn.root.legacy_seq(name)
        )
        self._check_not_newer_than_root(parsed["memstore_format"], where, hint)
        return parsed

    def _check_not_newer_than_root(self, version: int, where: str, hint: str) -> None:
        """A manifest of a newer format than the root names a root set back to an older
        format (an older memstore could open the store and gc what the commit reads): damage.
        A read-only store may have been upgraded since it was opened: the root is read again
        first (one small read, only in that case)."""
        if version <= self.conn.root.version:
            return
        store_exists(self.conn)  # refreshes conn.root; read-only, it never writes
        if version > self.conn.root.version:
            raise CorruptStoreError(
                f"{where}: manifest is damaged (it says memstore_format {version}, but the "
                f"store's root says format {self.conn.root.version}: the root's zarr.json was "
                "set back to an older format, which lets an older memstore open the store and "
                "gc snapshots this commit reads). Open the store for writing once to upgrade "
                f"the root again.{hint}"
            )

    def state_of(self, name: str, parsed: Mapping[str, Any]) -> dict[str, Any]:
        """The state a parsed manifest describes (reads and verifies its snapshot)."""
        prefix = layout.snapshot_path(name, parsed["snapshot"])
        arrays = snapshots.read_arrays(self.conn, prefix, parsed["arrays"])
        return manifest.decode(parsed, arrays)

    def checked(
        self, name: str, seq: int | None, owner: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(manifest, state)`` of commit ``seq`` (default: latest), refused as damage
        (:class:`~memstore.errors.CorruptStoreError`) wherever ``load`` would refuse it."""
        parsed = self.manifest(name, seq, owner)
        return parsed, self.checked_state(name, parsed)

    def checked_state(self, name: str, parsed: Mapping[str, Any]) -> dict[str, Any]:
        """The state of a parsed manifest, refused as damage wherever ``load`` would."""
        state = self.state_of(name, parsed)
        where = f"{self.conn.url}/{layout.manifest_path(name, parsed['seq'])}"
        manifest.rebuild(state, None, where)  # never show what load refuses
        return state

    def log(self, name: str) -> list[Commit]:
        """The buffer's commits, oldest first (pruned and damaged ones skipped; see verify)."""
        return [commit_of(parsed) for parsed in self.manifests(name)]

    def manifests(self, name: str) -> list[dict[str, Any]]:
        """The parsed manifests of :meth:`log`'s commits, oldest first: one read each."""
        out = []
        for seq in self.seqs(checks.valid_name(name, "Store.log")):
            try:
                parsed = self.read(name, seq)
            except (CorruptStoreError, BufferNotFoundError):
                continue
            if parsed is not None:  # tombstones are pruned commits
                out.append(parsed)
        if not out and not self.seqs(name):
            raise BufferNotFoundError(f"No buffer named {name!r} in {self.conn.url!r}.")
        return out

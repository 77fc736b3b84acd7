"""One writer per feature-cache chunk: create-if-absent claim files with a lease.

A writer claims chunk ``c`` of entry ``features/<key>`` by creating ``claims/<c>`` under it
(``Files.create_if_absent``: an ``os.link`` locally, ``If-None-Match: *`` on S3) holding its
token and the time its lease ends. Whoever holds the claim reads, merges and writes the
chunk's values, done mask and checksums; everyone else waits. A claim whose lease has ended
belongs to a dead (or hopelessly slow) writer: a waiter breaks it, and only the waiter that
creates the marker ``claims/<c>.break-<hash of the stale claim>`` (create-if-absent again)
deletes it, so two waiters never both break one claim.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from memstore.errors import ConcurrentCommitError
from memstore.io import CreateConflict, Files

__all__ = ["ChunkClaims", "LEASE_SECONDS"]

LEASE_SECONDS = 60.0  # a chunk write takes milliseconds; a claim older than this is stale


class ChunkClaims:
    """Claims on the chunks of one cache entry at ``folder`` (``features/<key>/claims``)."""

    def __init__(self, files: Files, folder: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.files, self.folder, self.lease = files, folder, float(lease_seconds)

    def path(self, chunk: int | str) -> str:
        return f"{self.folder}/{chunk}"

    def _stale(self, raw: bytes) -> bool:
        try:
            return float(json.loads(raw)["expires"]) < time.time()
        except (ValueError, KeyError, TypeError):
            return True  # an unreadable claim protects nothing

    def held(self, chunk: int | str) -> bool:
        """Whether a live claim on ``chunk`` exists (another writer is writing it)."""
        try:
            return not self._stale(self.files.read(self.path(chunk)))
        except FileNotFoundError:
            return False

    def wait(self, chunk: int | str, timeout: float | None = None) -> None:
        """Return once ``chunk`` has no live claim (or after ``timeout``, default the lease)."""
        end = time.monotonic() + (self.lease if timeout is None else timeout)
        delay = 0.005
        while self.held(chunk) and time.monotonic() < end:
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @contextmanager
    def hold(self, chunk: int | str) -> Iterator[None]:
        """Hold the claim on ``chunk`` (a chunk number, or ``"create"`` for creating the
        entry) for the duration of the block.

        Waits while another writer holds a live claim (up to two leases, then
        :class:`~memstore.errors.ConcurrentCommitError`), breaks a stale one.
        """
        path = self.path(chunk)
        token = uuid.uuid4().hex
        end = time.monotonic() + 2 * self.lease
        delay = 0.005
        while True:
            body = json.dumps({"owner": token, "expires": time.time() + self.lease}).encode()
            try:
                self.files.create_if_absent(path, body)
                break
            except CreateConflict:
                pass
            try:
                raw = self.files.read(path)
            except FileNotFoundError:
                continue  # released meanwhile: try again at once
            if self._stale(raw):
                marker = f"{path}.break-{hashlib.blake2b(raw, digest_size=8).hexdigest()}"
                try:
                    self.files.create_if_absent(marker, b"")
                    self.files.delete(path)  # we alone break this stale claim
                except CreateConflict:
                    pass
                continue
            if time.monotonic() > end:
                raise ConcurrentCommitError(
                    f"The feature cache chunk claim {path} is held by another writer and "
                    f"was not released within {2 * self.lease:.0f} s. Retry later, or delete "
                    "the claim if its writer is known to be gone."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            try:
                if json.loads(self.files.read(path)).get("owner") == token:
                    self.files.delete(path)
            except (FileNotFoundError, ValueError, AttributeError):
                pass

"""The store: named buffers with their commit history in a Zarr v3 hierarchy.

The format (version 2; version 1 is read as is) — the tree, the commit protocol, every
manifest field — is documented in ``FORMAT.md`` next to this module. :class:`Store` is a
facade over the modules that implement it: ``connect`` (opening), ``layout`` (paths),
``manifest`` (the codec), ``commit`` (the commit protocol), ``history`` (reading commits),
``source_index``, ``feature_caches`` and ``maintenance`` (verify / gc).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import (
    BufferNotFoundError,
    MemstoreError,
    ReadOnlyStoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from memstore.features.cache import FeatureCache
from memstore.io import FsspecFiles, LocalFiles
from memstore.policies import ExemplarsBuffer

from . import checks, commit, connect, layout, manifest
from .diff import diff_commits
from .feature_caches import FeatureCaches
from .history import Commit, History, Origin, commit_of
from .maintenance import Problem, gc_store, verify_store
from .run_state import RunStates, prepare
from .source_index import SourceIndexes
from .summary import describe_commit

__all__ = ["open_store", "Store", "Commit", "Origin", "Problem", "FORMAT_VERSION"]

FORMAT_VERSION = layout.FORMAT_VERSION


def open_store(
    url: str | os.PathLike,
    mode: str = "a",
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Store:
    """Open (``"r"``, ``"a"``) or create (``"a"``, ``"w-"``) a store at a path or fsspec URL.

    ``"r"`` is read-only and requires an existing store; ``"a"`` creates it if absent;
    ``"w-"`` requires that it does not exist yet (:class:`~memstore.errors.StoreExistsError`).
    """
    return Store(url, mode=mode, storage_options=storage_options, **kwargs)


class Store:
    """A memstore hierarchy. Use :func:`open_store`.

    Every failure is a :class:`~memstore.errors.MemstoreError` that also inherits the built-in
    a caller would catch (``KeyError``, ``ValueError``, ``OSError``...).

    Args:
        url: a local path (``str`` or ``os.PathLike``), or any fsspec URL
            (``s3://bucket/prefix``, ``memory://x``).
        mode: ``"r"``, ``"a"`` or ``"w-"``.
        storage_options: passed to fsspec (credentials, ``client_kwargs``, ...).
        single_writer: acknowledge that the object store ignores conditional writes, so
            concurrent writers could overwrite each other's commits (refused otherwise).
    """

    def __init__(
        self,
        url: str | os.PathLike,
        mode: str = "a",
        storage_options: Mapping[str, Any] | None = None,
        single_writer: bool = False,
    ) -> None:
        path = connect.as_url(url)
        if path is None:
            raise checks.wrong_type("url", "open_store", "a str or os.PathLike", url)
        self.mode = checks.choice(mode, "mode", "open_store", ("r", "a", "w-"))
        self.url = path
        self.read_only = mode == "r"
        self._conn = connect.connect(path, storage_options, self.read_only)
        self._history = History(self._conn)
        self._sources = SourceIndexes(self._conn)
        self._features = FeatureCaches(self._conn)
        self._runs = RunStates(self._conn)
        # Which store a buffer's origin names: the root on disk, or the URL.
        self._location = self.url.rstrip("/") if self._conn.remote else self._conn.files.root
        self.supports_conditional_writes = True
        if not connect.store_exists(self._conn):
            if self.read_only:
                raise StoreNotFoundError(f"No memstore at {path!r} (opened with mode='r').")
            connect.create_root(self._conn)
        elif mode == "w-":
            raise StoreExistsError(f"A memstore already exists at {path!r} (mode='w-').")
        if not self.read_only and self._conn.remote:
            self.supports_conditional_writes = connect.conditional_writes(
                self._conn, path, single_writer
            )

    @property
    def files(self) -> LocalFiles | FsspecFiles:
        """The raw file layer under the store root (:mod:`memstore.io`)."""
        return self._conn.files

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"Cannot {what}: the store at {self.url!r} was opened with mode='r'. "
                "Open it with mode='a' to write."
            )

    # -- buffers ------------------------------------------------------------------------------
    def buffers(self) -> list[str]:
        """Names of the buffers that have at least one commit."""
        return self._history.buffers()

    def __contains__(self, name: object) -> bool:
        try:
            checks.valid_name(name, "Store")
        except MemstoreError:
            return False
        return bool(self._history.seqs(name))

    def log(self, name: str) -> list[Commit]:
        """The buffer's commits, oldest first (damaged manifests are skipped; see verify)."""
        return self._history.log(name)

    def next_experience(self, name: str) -> int:
        """How many updates the latest commit of ``name`` has seen (0 if absent)."""
        checks.valid_name(name, "Store.next_experience")
        if name not in self:
            return 0
        return int(self._history.manifest(name)["num_updates"])

    def save(
        self,
        name: str,
        buffer: ExemplarsBuffer,
        message: str = "",
        sources: Mapping[str, Any] | None = None,
        run_state: Mapping[str, Any] | None = None,
        *,
        parent: int | None = None,
        overwrite: bool = False,
    ) -> Commit:
        """Commit ``buffer``'s state as the next version of ``name`` (atomic).

        The commit builds on the one the buffer was loaded from or last saved as
        (``buffer.origin``) and is published as exactly that seq + 1; if another writer took
        it first, :class:`~memstore.errors.ConcurrentCommitError` is raised and nothing
        changes: reload, apply the update again and save (as git refuses a non-fast-forward
        push). A buffer not from ``name`` starts ``name``'s history if the name is new;
        under an existing name it needs ``parent=N`` or ``overwrite=True``, else
        :class:`~memstore.errors.UnrelatedHistoryError`. Sets ``buffer.origin``.

        Args:
            sources: name -> dataset; records each source's fingerprint, checked on load.
            run_state: training state committed with the memory (:meth:`run_state`): a
                nested mapping of tensors, arrays, scalars, lists (``FORMAT.md``), e.g.
                ``{"model": model.state_dict(), "rng": memstore.rng_state(), "epoch": 3}``.
            parent: the commit to build on, overriding ``buffer.origin``.
            overwrite: build on the latest commit, whatever the buffer's origin.

        Cost: O(buffer size + changed run-state bytes), one fingerprint per given source.
        """
        checks.valid_name(name, "Store.save")
        self._writable(f"save buffer {name!r}")
        parent = commit.check_save_arguments(buffer, message, parent, overwrite)
        run = None if run_state is None else prepare(run_state)
        top = self._history.top(name)
        base = commit.parent_of(name, buffer.origin, self._location, top, parent, overwrite)
        state = buffer.state_dict()
        parsed = commit.commit_state(
            self._conn,
            name,
            state,
            parent=base,
            top=top,
            message=message,
            sources=manifest.source_records(state, sources),
            run_state=run,
            prior=None if run is None else self._runs.prior(self._history, name, base),
        )
        buffer.origin = Origin(self._location, name, int(parsed["seq"]))
        return commit_of(parsed)

    def state(self, name: str, commit: int | None = None) -> dict[str, Any]:
        """The buffer's ``state_dict`` as committed (verified against its checksums)."""
        return self._history.state_of(name, self._history.manifest(name, commit, "Store.state"))

    def run_state(self, name: str, commit: int | None = None) -> dict[str, Any]:
        """The run state saved with a commit (default: the latest); ``{}`` if it has none.

        Tensors come back as CPU torch tensors, mappings as dicts; every byte is checked
        (damage: :class:`~memstore.errors.CorruptStoreError`). Never unpickles."""
        parsed = self._history.manifest(name, commit, "Store.run_state")
        return self._runs.read(name, parsed)

    def load(
        self,
        name: str,
        commit: int | None = None,
        sources: Mapping[str, Any] | None = None,
        selection_strategy: Any = None,
        allow_source_mismatch: bool = False,
    ) -> ExemplarsBuffer:
        """A buffer of the saved class whose ``state_dict()`` equals the committed one.

        The buffer remembers the commit (``buffer.origin``): saving it under ``name`` again
        publishes the next commit, or raises ``ConcurrentCommitError`` if that is taken.

        Args:
            commit: a commit ``seq`` (default: the latest).
            sources: datasets to check against the recorded fingerprints.
            selection_strategy: re-attaches a feature-based strategy (models are never
                stored); without it such a buffer loads but refuses to update.
            allow_source_mismatch: load even if a source's fingerprint changed.
        """
        sources = checks.sources_mapping(sources, "Store.load")
        allow_source_mismatch = checks.boolean(
            allow_source_mismatch, "allow_source_mismatch", "Store.load"
        )
        parsed = self._history.manifest(name, commit)
        if sources is not None and not allow_source_mismatch:
            manifest.check_source_fingerprints(parsed, sources, name)
        state = self._history.state_of(name, parsed)
        path = layout.manifest_path(name, parsed["seq"])
        buffer = manifest.rebuild(state, selection_strategy, f"{self.url}/{path}")
        buffer.origin = Origin(self._location, name, int(parsed["seq"]))
        return buffer

    def check_sources(
        self, name: str, sources: Mapping[str, Any], commit: int | None = None
    ) -> dict[str, str]:
        """Each of ``sources``' fingerprints (source name -> dataset), checked against the ones
        recorded with ``commit`` (default: the latest) as :meth:`load` checks them
        (:class:`~memstore.errors.SourceMismatchError`). Cost: one manifest read and one
        fingerprint per source."""
        sources = checks.sources_mapping(sources, "Store.check_sources") or {}
        parsed = self._history.manifest(name, commit, "Store.check_sources")
        return manifest.checked_fingerprints(parsed, sources, name)

    def describe(self, name: str, commit: int | None = None) -> dict[str, Any]:
        """A JSON-able summary of a commit: policy, sizes, groups, classes, sources, payload
        columns, history (:func:`~memstore.store.summary.describe_commit`). Cost: one
        snapshot read and the log."""
        parsed, state = self._history.checked(name, commit, "Store.describe")
        return describe_commit(name, parsed, state, self.log(name))

    def describe_log(self, name: str) -> list[dict[str, Any]]:
        """:meth:`describe` of each commit :meth:`log` lists, oldest first (damage refused as
        there). Cost: O(commits): one manifest and one snapshot read per commit."""
        parsed = self._history.manifests(name)
        log = [commit_of(p) for p in parsed]
        return [describe_commit(name, p, self._history.checked_state(name, p), log) for p in parsed]

    def diff(self, name: str, a: int, b: int) -> dict[str, Any]:
        """Exemplars added / removed from commit ``a`` to ``b`` (``[source, id]``), per group,
        and parameter and source changes; schema in :mod:`memstore.store.diff`. O(n log n)."""
        return diff_commits(self._history, name, a, b)

    def delete_buffer(self, name: str) -> None:
        """Remove a buffer and its whole history (damaged or not)."""
        checks.valid_name(name, "Store.delete_buffer")
        self._writable(f"delete buffer {name!r}")
        if not self._history.seqs(name) and not self.files.exists(layout.head_path(name)):
            raise BufferNotFoundError(
                f"No buffer named {name!r} in {self.url!r}; it holds {self.buffers()}."
            )
        self.files.delete(layout.buffer_dir(name))

    # -- source records -----------------------------------------------------------------------
    def write_source_index(
        self, name: str, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> None:
        """Save a source's record and index arrays (e.g. a shard index) under ``sources/``.

        Arrays go to a fresh prefix; the record, written last, points at them and holds their
        checksums, so a reader sees the old index or the new one.
        """
        checks.valid_name(name, "Store.write_source_index")
        self._writable(f"write the index of source {name!r}")
        self._sources.write(name, record, arrays)

    def read_source_index(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(record, arrays)`` saved by :meth:`write_source_index`, or ``None``."""
        return self._sources.read(checks.valid_name(name, "Store.read_source_index"))

    def sources(self) -> list[str]:
        """Names of the sources with a record."""
        return self._sources.names()

    # -- feature cache ------------------------------------------------------------------------
    def open_feature_cache(self, key: str) -> FeatureCache | None:
        """The feature cache entry ``key``, or ``None`` if it does not exist."""
        return self._features.open(checks.valid_name(key, "Store.open_feature_cache"))

    def feature_cache(
        self, key: str, n: int, d: int, dtype: str = "float32", attrs: dict | None = None
    ) -> FeatureCache:
        """Open or create the feature cache entry ``key`` of shape ``[n, d]``."""
        return self._features.open_or_create(key, n, d, dtype, attrs)

    def feature_caches(self) -> list[str]:
        """Keys of the feature cache entries."""
        return self._features.keys()

    # -- maintenance --------------------------------------------------------------------------
    def verify(self) -> list[Problem]:
        """Check every manifest, array checksum and snapshot reference; list debris."""
        return verify_store(self._history, self._sources)

    def gc(
        self,
        keep: int = 10,
        grace_seconds: float = 60.0,
        *,
        force: bool = False,
        remove_orphans: bool = False,
    ) -> list[str]:
        """Keep the newest ``keep`` loadable commits of each buffer; prune older ones, remove
        debris.

        A pruned commit's manifest is replaced by a tombstone (its seq is never reused) and
        its snapshot removed. A damaged commit never counts as kept; while the newest commit
        of a buffer is damaged (or its manifest deleted) gc deletes nothing anywhere and
        raises :class:`~memstore.errors.CorruptStoreError`, unless ``force=True``. Debris
        (snapshots of interrupted commits, temp files) younger than ``grace_seconds`` is left
        alone: it may belong to a writer still committing. Snapshots whose manifest was
        deleted, and the folders of a source whose record was deleted, are evidence (verify
        reports them) and are removed only with ``remove_orphans=True``. Returns the removed
        paths.

        Cost: reads the manifests, and the snapshots of the newest commits until ``keep``
        of them load.
        """
        self._writable("gc")
        keep = checks.int_at_least(keep, "keep", "Store.gc", 1)
        grace_seconds = checks.seconds(grace_seconds, "grace_seconds", "Store.gc")
        for flag, value in (("force", force), ("remove_orphans", remove_orphans)):
            if not isinstance(value, bool):
                raise checks.wrong_type(flag, "Store.gc", "a bool", value)
        return gc_store(
            self._history, keep, grace_seconds, force=force, remove_orphans=remove_orphans
        )

    def __repr__(self) -> str:
        return f"Store({self.url!r}, mode={self.mode!r})"

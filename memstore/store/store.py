"""The store: named buffers with their commit history in a Zarr v3 hierarchy.

Layout (format version 1)::

    <root>/zarr.json                     group, attrs {"memstore_format": 1}
    buffers/<name>/commits/<seq>.json    immutable manifest (seq zero-padded to 10 digits)
    buffers/<name>/snapshots/<seq>-<id>/ immutable zarr group: one flat array per column
    sources/<name>/                      source records (shard indexes)
    features/<key>/                      feature cache

Commit protocol: (1) write the snapshot under a fresh, never-reused prefix; (2) on local disk
fsync its files and directories; (3) publish the manifest create-if-absent (``os.link`` of an
fsynced temp file locally, ``If-None-Match: *`` on S3) — the loser of a race gets
:class:`ConcurrentCommitError`; (4) readers only follow published manifests, whose checksums
they verify. A crash leaves the previous commit or the new one, never a torn buffer.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memstore._validation import check_choice, check_int
from memstore.errors import (
    BufferNotFoundError,
    ConcurrentCommitError,
    CorruptStoreError,
    FormatVersionError,
    MemstoreError,
    ReadOnlyStoreError,
    SourceMismatchError,
    StoreAccessError,
    StoreNotFoundError,
    StrategyMismatchError,
)
from memstore.io import CreateConflict, FsspecFiles, LocalFiles, open_files
from memstore.policies.buffers import STATE_FORMAT, ExemplarsBuffer, buffer_from_state
from memstore.sources.arrays import fingerprint

if TYPE_CHECKING:
    from memstore.features.cache import FeatureCache

__all__ = ["open_store", "Store", "Commit", "Problem", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MANIFEST = re.compile(r"^(\d{10})\.json$")
_SNAPSHOT = re.compile(r"^(\d{10})-([0-9a-f]{8})$")
_CHUNK_ROWS = 1 << 20
_MANIFEST_KEYS = {
    "memstore_format",
    "state_format",
    "seq",
    "id",
    "time",
    "snapshot",
    "policy",
    "params",
    "num_updates",
    "source_names",
    "groups",
    "arrays",
}


@dataclass(frozen=True)
class Commit:
    """One published version of a buffer."""

    seq: int
    id: str
    time: str
    message: str
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """Something ``verify`` found: ``severity`` is ``"error"`` (damage) or ``"debris"``."""

    path: str
    message: str
    severity: str = "error"


def _checksum(arr: np.ndarray) -> str:
    data = np.ascontiguousarray(arr)
    return "blake2b:" + hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def _array_specs(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """What a manifest or source record says of each array: dtype, shape, checksum."""
    return {
        k: {"dtype": str(v.dtype), "shape": list(v.shape), "checksum": _checksum(v)}
        for k, v in arrays.items()
    }


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"A buffer name must be a str. Got {type(name).__name__} {name!r} instead.")
    if not _NAME.match(name):
        raise ValueError(
            "A buffer name must be 1-128 characters of letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit). Got {name!r} instead."
        )
    return name


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def open_store(
    url: str, mode: str = "a", storage_options: Mapping[str, Any] | None = None, **kwargs: Any
) -> Store:
    """Open (``"r"``, ``"a"``) or create (``"a"``, ``"w-"``) a store at a path or fsspec URL.

    ``"r"`` is read-only and requires an existing store; ``"a"`` creates it if absent;
    ``"w-"`` requires that it does not exist yet.
    """
    return Store(url, mode=mode, storage_options=storage_options, **kwargs)


class Store:
    """A memstore hierarchy. Use :func:`open_store`. The only memstore module that does I/O.

    Args:
        url: a local path, or any fsspec URL (``s3://bucket/prefix``, ``memory://x``).
        mode: ``"r"``, ``"a"`` or ``"w-"``.
        storage_options: passed to fsspec (credentials, ``client_kwargs``, ...).
        single_writer: acknowledge that the object store ignores conditional writes, so
            concurrent writers could overwrite each other's commits (refused otherwise).
    """

    def __init__(
        self,
        url: str,
        mode: str = "a",
        storage_options: Mapping[str, Any] | None = None,
        single_writer: bool = False,
    ) -> None:
        import zarr

        if not isinstance(url, str) or not url:
            raise TypeError(f"The 'url' parameter of open_store must be a str. Got {url!r}.")
        self.mode = check_choice(mode, "mode", "open_store", ("r", "a", "w-"))
        self.url = url
        self.read_only = mode == "r"
        self.files, self._zarr_store = self._connect(url, storage_options, self.read_only)
        self.supports_conditional_writes = True
        exists = self._check_root()
        if not exists:
            if self.read_only:
                raise StoreNotFoundError(f"No memstore at {url!r} (opened with mode='r').")
            self._create_root(zarr)
        elif mode == "w-":
            raise FileExistsError(f"A memstore already exists at {url!r} (mode='w-').")
        if not self.read_only and isinstance(self.files, FsspecFiles):
            self.supports_conditional_writes = self._probe_conditional_writes()
            if not self.supports_conditional_writes and not single_writer:
                raise MemstoreError(
                    f"The object store behind {url!r} ignores conditional writes "
                    "(If-None-Match), so two writers could silently overwrite each other's "
                    "commits. Use a server that supports them, or pass single_writer=True "
                    "to open_store if only one process ever writes to this store."
                )

    # -- opening ------------------------------------------------------------------------------
    @staticmethod
    def _connect(url: str, storage_options: Any, read_only: bool):
        import zarr.storage

        files = open_files(url, storage_options)
        if isinstance(files, LocalFiles):
            return files, zarr.storage.LocalStore(files.root, read_only=read_only)
        zstore = zarr.storage.FsspecStore.from_url(
            url, storage_options=dict(files.storage_options), read_only=read_only
        )
        return files, zstore

    def _check_root(self) -> bool:
        try:
            raw = self.files.read("zarr.json")
        except FileNotFoundError:
            if self.files.listdir(""):
                raise FormatVersionError(
                    f"{self.url!r} is not empty and is not a Zarr group, so not a memstore."
                ) from None
            return False
        except PermissionError as err:
            raise PermissionError(
                f"Access to {self.url!r} was refused ({err}): check the credentials in "
                "storage_options (key/secret) or the environment."
            ) from err
        except OSError as err:
            raise StoreAccessError(f"Cannot reach the store at {self.url!r}: {err}") from err
        except Exception as err:
            if type(err).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                raise PermissionError(
                    f"No credentials to access {self.url!r} ({err}): pass "
                    "storage_options={'key': ..., 'secret': ...} or set AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY."
                ) from err
            raise
        try:
            meta = json.loads(raw)
        except ValueError as err:
            raise CorruptStoreError(f"{self.url}/zarr.json is not valid JSON ({err}).") from err
        version = (meta.get("attributes") or {}).get("memstore_format")
        if version is None:
            raise FormatVersionError(
                f"{self.url!r} is a Zarr {meta.get('node_type', 'node')} but not a memstore "
                "(no 'memstore_format' attribute)."
            )
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{self.url!r} was written with memstore format {version!r}; this memstore "
                f"reads format {FORMAT_VERSION} and older. Upgrade memstore to open it."
            )
        return True

    def _create_root(self, zarr: Any) -> None:
        try:
            zarr.open_group(
                store=self._zarr_store, mode="a", attributes={"memstore_format": FORMAT_VERSION}
            )
        except PermissionError as err:
            raise PermissionError(f"Cannot create a memstore at {self.url!r}: {err}") from err
        except OSError as err:
            raise StoreAccessError(f"Cannot create a memstore at {self.url!r}: {err}") from err

    def _probe_conditional_writes(self) -> bool:
        folder = f".memstore/probe-{uuid.uuid4().hex[:12]}"
        try:
            self.files.create_if_absent(f"{folder}/p", b"1")
            try:
                self.files.create_if_absent(f"{folder}/p", b"2")
            except CreateConflict:
                return True
            return False
        finally:
            self.files.delete(folder)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"Cannot {what}: the store at {self.url!r} was opened with mode='r'. "
                "Open it with mode='a' to write."
            )

    # -- buffers ------------------------------------------------------------------------------
    def buffers(self) -> list[str]:
        """Names of the buffers that have at least one commit."""
        return [n for n in self.files.listdir("buffers") if self._seqs(n)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(_NAME.match(name)) and bool(self._seqs(name))

    def _seqs(self, name: str) -> list[int]:
        names = self.files.listdir(f"buffers/{name}/commits")
        return sorted(int(m.group(1)) for m in map(_MANIFEST.match, names) if m)

    def _manifest_path(self, name: str, seq: int) -> str:
        return f"buffers/{name}/commits/{seq:010d}.json"

    def _manifest(self, name: str, seq: int | None = None) -> dict[str, Any]:
        _check_name(name)
        seqs = self._seqs(name)
        if not seqs:
            raise BufferNotFoundError(
                f"No buffer named {name!r} in {self.url!r}; it holds {self.buffers()}."
            )
        if seq is None:
            seq = seqs[-1]
        else:
            seq = check_int(seq, "commit", "Store.load", minimum=0)
            if seq not in seqs:
                raise BufferNotFoundError(
                    f"Buffer {name!r} has no commit {seq}; its commits are {seqs[0]}..{seqs[-1]}"
                    f" ({len(seqs)} kept)."
                )
        path = self._manifest_path(name, seq)
        try:
            manifest = json.loads(self.files.read(path))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
            version = manifest.get("memstore_format")
            if isinstance(version, int) and version > FORMAT_VERSION:  # before any field check
                raise FormatVersionError(
                    f"{self.url}/{path} was written with a newer memstore format {version}; "
                    f"this memstore reads format {FORMAT_VERSION}. Upgrade memstore to load it."
                )
            missing = sorted(_MANIFEST_KEYS - set(manifest))
            if missing:
                raise ValueError(f"missing fields {missing}")
            snapshot = manifest["snapshot"]
            if (
                manifest["seq"] != seq
                or version != FORMAT_VERSION
                or not isinstance(snapshot, str)
                or not snapshot.startswith(f"snapshots/{seq:010d}-")
                or not _SNAPSHOT.match(snapshot[len("snapshots/") :])
                or not isinstance(manifest["arrays"], dict)
            ):
                raise ValueError("fields do not match its file name")
        except FormatVersionError:
            raise
        except ValueError as err:  # JSON and UTF-8 decoding errors are ValueErrors too
            older = [s for s in seqs if s < seq][-3:]
            raise CorruptStoreError(
                f"{self.url}/{path}: manifest is damaged ({err}). Older commits "
                f"({older}) can be loaded with commit=N."
            ) from err
        return manifest

    def log(self, name: str) -> list[Commit]:
        """The buffer's commits, oldest first (damaged manifests are skipped; see verify)."""
        out = []
        for seq in self._seqs(_check_name(name)):
            try:
                m = self._manifest(name, seq)
            except CorruptStoreError:
                continue
            out.append(_commit_of(m))
        if not out and name not in self:
            raise BufferNotFoundError(f"No buffer named {name!r} in {self.url!r}.")
        return out

    def next_experience(self, name: str) -> int:
        """How many updates the latest commit of ``name`` has seen (0 if absent)."""
        if name not in self:
            return 0
        return int(self._manifest(name)["num_updates"])

    def save(
        self,
        name: str,
        buffer: ExemplarsBuffer,
        message: str = "",
        sources: Mapping[str, Any] | None = None,
    ) -> Commit:
        """Commit ``buffer``'s state as the next version of ``name`` (atomic).

        ``sources`` (name -> dataset) records each source's fingerprint, checked on load.
        Raises :class:`ConcurrentCommitError` if another writer published that version first.
        """
        _check_name(name)
        self._writable(f"save buffer {name!r}")
        if not isinstance(buffer, ExemplarsBuffer):
            raise TypeError(
                "The 'buffer' parameter of Store.save must be a memstore buffer. "
                f"Got {type(buffer).__name__} instead."
            )
        if not isinstance(message, str):
            raise TypeError(
                f"The 'message' parameter of Store.save must be a str. Got {message!r}."
            )
        state = buffer.state_dict()
        seqs = self._seqs(name)
        seq = (seqs[-1] + 1) if seqs else 0
        arrays = dict(state["columns"])
        arrays["generator_state"] = np.asarray(state["generator_state"], dtype=np.uint8)
        snapshot = f"snapshots/{seq:010d}-{uuid.uuid4().hex[:8]}"
        prefix = f"buffers/{name}/{snapshot}"
        self._write_arrays(prefix, arrays)
        self.files.sync_tree(prefix)
        fingerprints = {}
        for src in state["source_names"]:
            record = {"fingerprint": None}
            if sources is not None and src in sources:
                record["fingerprint"] = fingerprint(sources[src])
            fingerprints[src] = record
        group_col = state["columns"]["group"]
        manifest = {
            "memstore_format": FORMAT_VERSION,
            "state_format": STATE_FORMAT,
            "buffer": name,
            "seq": seq,
            "id": snapshot[-8:],
            "parent": seqs[-1] if seqs else None,
            "time": _now(),
            "message": message,
            "snapshot": snapshot,
            "policy": state["policy"],
            "params": state["params"],
            "strategy": state.get("strategy"),
            "num_updates": state["num_updates"],
            "source_names": state["source_names"],
            "sources": fingerprints,
            "groups": {
                "keys": state["groups"]["keys"].tolist(),
                "max_sizes": state["groups"]["max_sizes"].tolist(),
                "sizes": _group_sizes(group_col, state["groups"]["keys"]),
            },
            "arrays": _array_specs(arrays),
            "sizes": {"rows": int(len(group_col)), "groups": int(len(state["groups"]["keys"]))},
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        try:
            self.files.create_if_absent(self._manifest_path(name, seq), data)
        except CreateConflict as err:
            self.files.delete(prefix)
            raise ConcurrentCommitError(
                f"Another writer committed version {seq} of buffer {name!r} first. Reload it "
                f"(store.load({name!r})) and apply your update again."
            ) from err
        return _commit_of(manifest)

    def _write_arrays(self, prefix: str, arrays: Mapping[str, np.ndarray]) -> None:
        import zarr

        group = zarr.open_group(store=self._zarr_store, path=prefix, mode="w-")
        for key, value in arrays.items():
            value = np.ascontiguousarray(value)
            chunks = (max(1, min(len(value), _CHUNK_ROWS)),)
            arr = group.create_array(key, shape=value.shape, dtype=value.dtype, chunks=chunks)
            if value.size:
                arr[...] = value

    def _read_arrays(self, prefix: str, specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import zarr

        out = {}
        for key, spec in specs.items():
            path = f"{prefix}/{key}"
            try:
                arr = zarr.open_array(store=self._zarr_store, path=path, mode="r")
                value = arr[...] if arr.size else np.empty(arr.shape, dtype=arr.dtype)
            except Exception as err:  # zarr raises many types for a damaged chunk
                raise CorruptStoreError(
                    f"{self.url}/{path}: cannot read array ({type(err).__name__}: {err})."
                ) from err
            if list(value.shape) != spec["shape"] or _checksum(value) != spec["checksum"]:
                raise CorruptStoreError(
                    f"{self.url}/{path}: content does not match the manifest's checksum "
                    "(damaged or modified after commit)."
                )
            out[key] = value
        return out

    def state(self, name: str, commit: int | None = None) -> dict[str, Any]:
        """The buffer's ``state_dict`` as committed (verified against its checksums)."""
        return self._state_of(name, self._manifest(name, commit))

    def _state_of(self, name: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """The state a parsed manifest describes (reads and verifies its snapshot)."""
        arrays = self._read_arrays(f"buffers/{name}/{manifest['snapshot']}", manifest["arrays"])
        state = {
            "format": manifest["state_format"],
            "policy": manifest["policy"],
            "params": manifest["params"],
            "num_updates": manifest["num_updates"],
            "generator_state": arrays.pop("generator_state"),
            "source_names": manifest["source_names"],
            "columns": arrays,
            "groups": {
                "keys": np.asarray(manifest["groups"]["keys"], dtype=np.int64),
                "max_sizes": np.asarray(manifest["groups"]["max_sizes"], dtype=np.int64),
            },
        }
        if manifest.get("strategy") is not None:
            state["strategy"] = manifest["strategy"]
        return state

    def load(
        self,
        name: str,
        commit: int | None = None,
        sources: Mapping[str, Any] | None = None,
        selection_strategy: Any = None,
        allow_source_mismatch: bool = False,
    ) -> ExemplarsBuffer:
        """A buffer of the saved class whose ``state_dict()`` equals the committed one.

        Args:
            commit: a commit ``seq`` (default: the latest).
            sources: datasets to check against the recorded fingerprints.
            selection_strategy: re-attaches a feature-based strategy (models are never
                stored); without it such a buffer loads but refuses to update.
            allow_source_mismatch: load even if a source's fingerprint changed.
        """
        manifest = self._manifest(name, commit)
        if sources is not None and not allow_source_mismatch:
            for src, record in manifest.get("sources", {}).items():
                recorded = record.get("fingerprint")
                if src in sources and recorded is not None:
                    now = fingerprint(sources[src])
                    if now != recorded:
                        raise SourceMismatchError(
                            f"Source {src!r} differs from the one buffer {name!r} was built "
                            f"from (fingerprint {now} != recorded {recorded}): its ids would "
                            "point at other samples. Pass allow_source_mismatch=True to load "
                            "anyway."
                        )
        state = self._state_of(name, manifest)
        try:
            return buffer_from_state(state, selection_strategy)
        except StrategyMismatchError:
            raise
        except ValueError as err:
            raise CorruptStoreError(
                f"{self.url}/{self._manifest_path(name, manifest['seq'])}: {err}"
            ) from err

    def describe(self, name: str, commit: int | None = None) -> dict[str, Any]:
        """A JSON-able summary of a commit: policy, sizes, groups, classes, sources, history."""
        manifest = self._manifest(name, commit)
        state = self._state_of(name, manifest)
        classes, counts = np.unique(state["columns"]["targets"], return_counts=True)
        groups = manifest["groups"]
        return {
            "buffer": name,
            "commit": _commit_of(manifest).__dict__,
            "policy": manifest["policy"],
            "params": manifest["params"],
            "strategy": manifest.get("strategy"),
            "size": manifest["sizes"]["rows"],
            "num_updates": manifest["num_updates"],
            "groups": [
                {"key": k, "max_size": m, "size": n}
                for k, m, n in zip(
                    groups["keys"], groups["max_sizes"], groups["sizes"], strict=True
                )
            ],
            "classes": {
                str(c): int(n) for c, n in zip(classes.tolist(), counts.tolist(), strict=True)
            },
            "sources": manifest.get("sources", {}),
            "commits": [c.__dict__ for c in self.log(name)],
        }

    def delete_buffer(self, name: str) -> None:
        """Remove a buffer and its whole history."""
        self._writable(f"delete buffer {name!r}")
        self._manifest(name)
        self.files.delete(f"buffers/{_check_name(name)}")

    # -- source records -----------------------------------------------------------------------
    def write_source_index(
        self, name: str, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> None:
        """Save a source's record and index arrays (e.g. a shard index) under ``sources/``.

        Arrays go to a fresh prefix; the record, written last, points at them and holds their
        checksums, so a reader sees the old index or the new one.
        """
        _check_name(name)
        self._writable(f"write the index of source {name!r}")
        previous = self._source_record(name)
        prefix = f"sources/{name}/index-{uuid.uuid4().hex[:8]}"
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._write_arrays(prefix, arrays)
        self.files.sync_tree(prefix)
        full = dict(record)
        full["_index"] = {
            "prefix": prefix,
            "arrays": _array_specs(arrays),
        }
        self.files.write_file(f"sources/{name}/record.json", json.dumps(full).encode())
        if previous is not None and previous["_index"]["prefix"] != prefix:
            self.files.delete(previous["_index"]["prefix"])

    def _source_record(self, name: str) -> dict[str, Any] | None:
        path = f"sources/{name}/record.json"
        try:
            raw = self.files.read(path)
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            record["_index"]["prefix"]
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptStoreError(
                f"{self.url}/{path}: source record is damaged ({err})."
            ) from err
        return record

    def read_source_index(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(record, arrays)`` saved by :meth:`write_source_index`, or ``None``."""
        record = self._source_record(_check_name(name))
        if record is None:
            return None
        index = record.pop("_index")
        return record, self._read_arrays(index["prefix"], index["arrays"])

    def sources(self) -> list[str]:
        return [n for n in self.files.listdir("sources") if self._source_record(n) is not None]

    # -- feature cache ------------------------------------------------------------------------
    def open_feature_cache(self, key: str) -> FeatureCache | None:
        """The feature cache entry ``key``, or ``None`` if it does not exist."""
        from memstore.features.cache import FeatureCache

        if not self.files.exists(f"features/{key}/values/zarr.json"):
            return None
        import zarr

        group = zarr.open_group(
            store=self._zarr_store, path=f"features/{key}", mode="r+" if not self.read_only else "r"
        )
        return FeatureCache(group, self.read_only)

    def feature_cache(
        self, key: str, n: int, d: int, dtype: str = "float32", attrs: dict | None = None
    ) -> FeatureCache:
        """Open or create the feature cache entry ``key`` of shape ``[n, d]``."""
        from memstore.features.cache import FeatureCache

        check_choice(dtype, "dtype", "Store.feature_cache", ("float32", "float16"))
        if self.read_only:
            cache = self.open_feature_cache(key)
            if cache is None:
                raise ReadOnlyStoreError(f"No feature cache {key!r} and the store is read-only.")
            return cache
        return FeatureCache.open(
            self._zarr_store, f"features/{key}", n, d, dtype, dict(attrs or {}), False
        )

    def feature_caches(self) -> list[str]:
        return self.files.listdir("features")

    # -- maintenance --------------------------------------------------------------------------
    def verify(self) -> list[Problem]:
        """Check every manifest, array checksum and snapshot reference; list debris."""
        from .maintenance import verify_store

        return verify_store(self)

    def gc(self, keep: int = 10, grace_seconds: float = 60.0) -> list[str]:
        """Keep the last ``keep`` commits of each buffer; remove older ones and debris.

        Debris (unreferenced snapshots, temp files) younger than ``grace_seconds`` is left
        alone: it may belong to a writer still committing. Returns the removed paths.
        """
        from .maintenance import gc_store

        self._writable("gc")
        keep = check_int(keep, "keep", "Store.gc", minimum=1)
        return gc_store(self, keep, grace_seconds)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, mode={self.mode!r})"


def _commit_of(manifest: Mapping[str, Any]) -> Commit:
    return Commit(
        seq=int(manifest["seq"]),
        id=str(manifest["id"]),
        time=str(manifest["time"]),
        message=str(manifest.get("message", "")),
        sizes=dict(manifest.get("sizes", {})),
    )


def _group_sizes(group_col: np.ndarray, keys: np.ndarray) -> list[int]:
    uniq, counts = np.unique(group_col, return_counts=True)
    found = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    return [int(found.get(k, 0)) for k in keys.tolist()]

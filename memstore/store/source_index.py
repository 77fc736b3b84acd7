"""Source records: a source's JSON record and index arrays under ``sources/<name>/``.

The arrays go to a fresh prefix ``index-<id>``; the record (``record.json``), written last,
points at them and holds their checksums, so a reader sees the old index or the new one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import CorruptStoreError, InvalidParameterError

from . import checks, layout, snapshots
from .commit import publish_arrays
from .connect import Connection, access_error
from .manifest_fields import check_array_specs

__all__ = ["INDEX_FIELD", "SourceIndexes"]

INDEX_FIELD = "_index"  # the record field pointing at the index arrays


class SourceIndexes:
    """The source records of one store."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def names(self) -> list[str]:
        """Sources with a record (sorted)."""
        files = self.conn.files
        return [n for n in files.listdir(layout.SOURCES) if self.record(n) is not None]

    def record(self, name: str) -> dict[str, Any] | None:
        """The full record of ``name`` (with its index field), or ``None`` if there is none."""
        path = layout.source_record_path(name)
        try:
            raw = self.conn.files.read(path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise access_error(err, self.conn.url, f"read {path}") from err
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not isinstance(record.get(INDEX_FIELD), dict):
                raise ValueError(f"not a JSON object with an {INDEX_FIELD!r} object")
            index = record[INDEX_FIELD]
            if not layout.is_source_index_prefix_of(index.get("prefix"), name):
                raise ValueError(
                    f"its index prefix {index.get('prefix')!r} is not "
                    f"'sources/{name}/index-<8 hex>'"
                )
            check_array_specs(index.get("arrays"), f"{INDEX_FIELD}.arrays")
        except ValueError as err:  # JSON and UTF-8 decoding errors are ValueErrors too
            raise CorruptStoreError(
                f"{self.conn.url}/{path}: source record is damaged ({err})."
            ) from err
        return record

    def index_prefix(self, name: str) -> str | None:
        """The index prefix the record of ``name`` points at (``None``: no record)."""
        record = self.record(name)
        return None if record is None else record[INDEX_FIELD]["prefix"]

    def write(self, name: str, record: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
        """Save ``record`` and ``arrays`` as the index of ``name`` (replacing the previous).

        A damaged previous record is replaced; the index folder it pointed at is left as
        debris (``verify`` lists it, ``gc`` removes it), never followed.
        """
        owner = "Store.write_source_index"
        checks.mapping(record, "record", owner, allow_none=False)
        checks.mapping(arrays, "arrays", owner, allow_none=False)
        if INDEX_FIELD in record:
            raise InvalidParameterError(
                f"The 'record' parameter of {owner} must not hold the key {INDEX_FIELD!r}: "
                "the store writes it (it points at the index arrays)."
            )
        try:
            json.dumps(dict(record))
        except (TypeError, ValueError) as err:
            raise checks.wrong_type("record", owner, "a JSON-able mapping", record) from err
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        try:
            check_array_specs(snapshots.array_specs(arrays), "arrays")
        except ValueError as err:
            raise InvalidParameterError(
                f"The 'arrays' parameter of {owner} must map names to arrays ({err})."
            ) from err
        try:
            previous = self.index_prefix(name)
        except CorruptStoreError:
            previous = None
        prefix = layout.new_source_index_prefix(name)
        publish_arrays(self.conn, prefix, arrays, f"write the index of source {name!r}")
        full = dict(record)
        full[INDEX_FIELD] = {"prefix": prefix, "arrays": snapshots.array_specs(arrays)}
        path = layout.source_record_path(name)
        try:
            self.conn.files.write_file(path, json.dumps(full).encode())
        except OSError as err:
            raise access_error(err, self.conn.url, f"write {path}") from err
        if previous is not None and previous != prefix:
            self.conn.files.delete(previous)

    def debris(self, name: str) -> list[str]:
        """Paths under ``sources/<name>/`` its record does not point at: index folders of a
        re-indexing killed mid-way, temp files. Empty while the record is damaged or missing
        (its folders are evidence: see :meth:`unrecorded`); raises
        :class:`~memstore.errors.CorruptStoreError` while it is damaged."""
        recorded, paths = self.leftovers(name)
        return paths if recorded else []

    def unrecorded(self, name: str) -> list[str]:
        """Paths under ``sources/<name>/`` while it has no ``record.json``: what a deleted
        record (or a first indexing killed before writing it) left. Nothing reads them (the
        record holds their checksums), but restoring the record makes them an index again,
        so they are evidence, not debris. Empty while the record exists; raises
        :class:`~memstore.errors.CorruptStoreError` while it is damaged."""
        recorded, paths = self.leftovers(name)
        return [] if recorded else paths

    def leftovers(self, name: str) -> tuple[bool, list[str]]:
        """(whether ``name`` has a record, the paths under its folder it does not point at):
        :meth:`debris` if it has one, else :meth:`unrecorded`. Cost: one record read and one
        listing; raises :class:`~memstore.errors.CorruptStoreError` while it is damaged."""
        prefix = self.index_prefix(name)
        keep = {"record.json", prefix.rsplit("/", 1)[-1] if prefix else None}
        return prefix is not None, [
            f"{layout.source_dir(name)}/{entry}"
            for entry in self.conn.files.listdir(layout.source_dir(name))
            if entry not in keep
        ]

    def read(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(record, arrays)`` saved by :meth:`write` (checksums verified), or ``None``."""
        record = self.record(name)
        if record is None:
            return None
        index = record.pop(INDEX_FIELD)
        return record, snapshots.read_arrays(self.conn, index["prefix"], index["arrays"])

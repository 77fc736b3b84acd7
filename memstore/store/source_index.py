"""Source records: a source's JSON record and index arrays under ``sources/<name>/``.

The arrays go to a fresh prefix ``index-<id>``; the record (``record.json``), written last,
points at them and holds their checksums, so a reader sees the old index or the new one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import CorruptStoreError

from . import layout, snapshots
from .commit import publish_arrays
from .connect import Connection, access_error

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
            record[INDEX_FIELD]["prefix"]
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptStoreError(
                f"{self.conn.url}/{path}: source record is damaged ({err})."
            ) from err
        return record

    def write(self, name: str, record: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
        """Save ``record`` and ``arrays`` as the index of ``name`` (replacing the previous)."""
        previous = self.record(name)
        prefix = layout.new_source_index_prefix(name)
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        publish_arrays(self.conn, prefix, arrays, f"write the index of source {name!r}")
        full = dict(record)
        full[INDEX_FIELD] = {"prefix": prefix, "arrays": snapshots.array_specs(arrays)}
        path = layout.source_record_path(name)
        try:
            self.conn.files.write_file(path, json.dumps(full).encode())
        except OSError as err:
            raise access_error(err, self.conn.url, f"write {path}") from err
        if previous is not None and previous[INDEX_FIELD]["prefix"] != prefix:
            self.conn.files.delete(previous[INDEX_FIELD]["prefix"])

    def read(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(record, arrays)`` saved by :meth:`write` (checksums verified), or ``None``."""
        record = self.record(name)
        if record is None:
            return None
        index = record.pop(INDEX_FIELD)
        return record, snapshots.read_arrays(self.conn, index["prefix"], index["arrays"])

"""The manifest codec: a buffer's ``state_dict`` <-> (manifest, snapshot arrays), both ways.

A manifest (``buffers/<name>/commits/<seq>.json``) holds every scalar of the state and the
dtype, shape and checksum of each snapshot array; the arrays themselves live in the snapshot.
Every field is described in ``FORMAT.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import CorruptStoreError, FormatVersionError, SourceMismatchError
from memstore.policies import STATE_FORMAT
from memstore.sources.arrays import fingerprint
from memstore.sources.base import fingerprint_matches

from . import layout
from .snapshots import array_specs

__all__ = [
    "REQUIRED_FIELDS",
    "GENERATOR_ARRAY",
    "snapshot_arrays",
    "source_records",
    "encode",
    "to_bytes",
    "parse",
    "decode",
    "check_source_fingerprints",
]

# Fields a reader needs; the others ("buffer", "parent", "message", "strategy", "sources",
# "sizes") are informative or optional.
REQUIRED_FIELDS = frozenset(
    {
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
)
GENERATOR_ARRAY = "generator_state"  # the snapshot array holding the generator's state


def snapshot_arrays(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of ``state`` a snapshot holds: every column, plus the generator state."""
    arrays = dict(state["columns"])
    arrays[GENERATOR_ARRAY] = np.asarray(state["generator_state"], dtype=np.uint8)
    return arrays


def source_records(
    state: Mapping[str, Any], sources: Mapping[str, Any] | None
) -> dict[str, dict[str, str | None]]:
    """``{source name: {"fingerprint": ...}}`` for every source the state refers to
    (``None`` where the dataset was not given). Cost: one fingerprint per given source."""
    records = {}
    for src in state["source_names"]:
        record: dict[str, str | None] = {"fingerprint": None}
        if sources is not None and src in sources:
            record["fingerprint"] = fingerprint(sources[src])
        records[src] = record
    return records


def encode(
    state: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    name: str,
    seq: int,
    parent: int | None,
    snapshot: str,
    message: str,
    sources: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of commit ``seq`` of buffer ``name`` whose snapshot ``arrays`` (from
    :func:`snapshot_arrays`) are stored at ``snapshot``."""
    group_col = state["columns"]["group"]
    keys = state["groups"]["keys"]
    return {
        "memstore_format": layout.FORMAT_VERSION,
        "state_format": STATE_FORMAT,
        "buffer": name,
        "seq": seq,
        "id": layout.snapshot_id(snapshot),
        "parent": parent,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "message": message,
        "snapshot": snapshot,
        "policy": state["policy"],
        "params": state["params"],
        "strategy": state.get("strategy"),
        "num_updates": state["num_updates"],
        "source_names": state["source_names"],
        "sources": dict(sources),
        "groups": {
            "keys": keys.tolist(),
            "max_sizes": state["groups"]["max_sizes"].tolist(),
            "sizes": _group_sizes(group_col, keys),
        },
        "arrays": array_specs(arrays),
        "sizes": {"rows": int(len(group_col)), "groups": int(len(keys))},
    }


def to_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest file's content: indented JSON, keys sorted."""
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def parse(raw: bytes, seq: int, where: str, hint: str = "") -> dict[str, Any]:
    """The manifest of commit ``seq`` from its file content, validated.

    ``where`` names the file in errors; ``hint`` is appended to a damage message.
    Raises :class:`~memstore.errors.FormatVersionError` for a newer format (checked before
    any other field) and :class:`~memstore.errors.CorruptStoreError` for anything damaged.
    """
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        version = manifest.get("memstore_format")
        if isinstance(version, int) and version > layout.FORMAT_VERSION:
            raise FormatVersionError(
                f"{where} was written with a newer memstore format {version}; this memstore "
                f"reads format {layout.FORMAT_VERSION}. Upgrade memstore to load it."
            )
        missing = sorted(REQUIRED_FIELDS - set(manifest))
        if missing:
            raise ValueError(f"missing fields {missing}")
        if (
            manifest["seq"] != seq
            or version != layout.FORMAT_VERSION
            or not layout.is_snapshot_ref_of(manifest["snapshot"], seq)
            or not isinstance(manifest["arrays"], dict)
        ):
            raise ValueError("fields do not match its file name")
    except FormatVersionError:
        raise
    except ValueError as err:  # JSON and UTF-8 decoding errors are ValueErrors too
        raise CorruptStoreError(f"{where}: manifest is damaged ({err}).{hint}") from err
    return manifest


def decode(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The ``state_dict`` a parsed manifest and its (checked) snapshot arrays describe."""
    columns = dict(arrays)
    generator_state = columns.pop(GENERATOR_ARRAY)
    state = {
        "format": manifest["state_format"],
        "policy": manifest["policy"],
        "params": manifest["params"],
        "num_updates": manifest["num_updates"],
        "generator_state": generator_state,
        "source_names": manifest["source_names"],
        "columns": columns,
        "groups": {
            "keys": np.asarray(manifest["groups"]["keys"], dtype=np.int64),
            "max_sizes": np.asarray(manifest["groups"]["max_sizes"], dtype=np.int64),
        },
    }
    if manifest.get("strategy") is not None:
        state["strategy"] = manifest["strategy"]
    return state


def check_source_fingerprints(
    manifest: Mapping[str, Any], sources: Mapping[str, Any], name: str
) -> None:
    """Raise :class:`~memstore.errors.SourceMismatchError` if a given source's fingerprint
    differs from the recorded one (sources not given, or recorded without one, pass)."""
    for src, record in manifest.get("sources", {}).items():
        recorded = record.get("fingerprint")
        if src in sources and recorded is not None:
            if not fingerprint_matches(sources[src], recorded):
                now = fingerprint(sources[src])
                raise SourceMismatchError(
                    f"Source {src!r} differs from the one buffer {name!r} was built "
                    f"from (fingerprint {now} != recorded {recorded}): its ids would "
                    "point at other samples. Pass allow_source_mismatch=True to load "
                    "anyway."
                )


def _group_sizes(group_col: np.ndarray, keys: np.ndarray) -> list[int]:
    uniq, counts = np.unique(group_col, return_counts=True)
    found = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    return [int(found.get(k, 0)) for k in keys.tolist()]

"""The manifest codec: a buffer's ``state_dict`` <-> (manifest, snapshot arrays), both ways.

A manifest (``buffers/<name>/commits/<seq>.json``) holds every scalar of the state and the
dtype, shape and checksum of each snapshot array; the arrays themselves live in the snapshot.
Every field is described in ``FORMAT.md``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.errors import (
    CorruptStoreError,
    FormatVersionError,
    InvalidParameterError,
    InvalidParameterTypeError,
    MemstoreError,
    SourceMismatchError,
)
from memstore.policies import STATE_FORMAT, ExemplarsBuffer, buffer_from_state
from memstore.sources.arrays import fingerprint
from memstore.sources.base import fingerprint_matches

from . import checks, layout
from .manifest_fields import check_fields
from .snapshots import array_specs

__all__ = [
    "REQUIRED_FIELDS",
    "GENERATOR_ARRAY",
    "CHECKSUM_FIELD",
    "LEGACY_FORMAT",
    "snapshot_arrays",
    "source_records",
    "encode",
    "manifest_checksum",
    "to_bytes",
    "parse",
    "decode",
    "rebuild",
    "check_source_fingerprints",
    "checked_fingerprints",
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
CHECKSUM_FIELD = "checksum"  # BLAKE2b of the canonical manifest without this field
LEGACY_FORMAT = 1  # manifests of format 1 carry no checksum


def snapshot_arrays(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of ``state`` a snapshot holds: every column, plus the generator state."""
    arrays = dict(state["columns"])
    arrays[GENERATOR_ARRAY] = np.asarray(state["generator_state"], dtype=np.uint8)
    return arrays


def source_records(
    state: Mapping[str, Any], sources: Mapping[str, Any] | None
) -> dict[str, dict[str, str | None]]:
    """``{source name: {"fingerprint": ...}}`` for every source the state refers to
    (``None`` where the dataset was not given). Cost: one fingerprint per given source.

    Raises :class:`~memstore.errors.InvalidParameterTypeError` if ``sources`` is not a mapping
    with str keys, :class:`~memstore.errors.InvalidParameterError` if it names a source the
    buffer does not hold while leaving out one it holds (a misspelt name, which would silently
    leave that dataset unchecked on load). Every dataset of a stream, a superset of the
    buffer's sources, is accepted.
    """
    sources = checks.sources_mapping(sources, "Store.save")
    held = sorted(state["source_names"])
    if sources is not None:
        unknown = sorted(set(sources) - set(held))
        if unknown and not set(held) <= set(sources):
            raise InvalidParameterError(
                f"The 'sources' parameter of Store.save names sources the buffer does not hold: "
                f"{unknown}. The buffer's source names are {held}; check the spelling (a "
                "misspelt name would leave its dataset unchecked on load)."
            )
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


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """``"blake2b:<32 hex>"`` of the canonical JSON of ``manifest`` without its checksum
    (keys sorted, no spaces): any change of any value of a manifest changes it."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return "blake2b:" + hashlib.blake2b(text, digest_size=16).hexdigest()


def to_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest file's content: indented JSON, keys sorted, with its checksum."""
    full = dict(manifest)
    full[CHECKSUM_FIELD] = manifest_checksum(manifest)
    return json.dumps(full, indent=1, sort_keys=True).encode()


def parse(
    raw: bytes, seq: int, where: str, hint: str = "", legacy_seq: int | None = -1
) -> dict[str, Any]:
    """The manifest of commit ``seq`` from its file content, validated.

    ``where`` names the file in errors; ``hint`` is appended to a damage message.
    ``legacy_seq`` says which commits may be format-1 manifests, which carry no checksum:
    ``None`` in a format-1 store (any), else those up to that seq (written before the store
    was upgraded; ``-1``: none). Every other manifest must hold a valid checksum.
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
                f"reads format {layout.FORMAT_VERSION} and older. Upgrade memstore to load it."
            )
        _check_checksum(manifest, version, seq, legacy_seq)
        missing = sorted(REQUIRED_FIELDS - set(manifest))
        if missing:
            raise ValueError(f"missing fields {missing}")
        if manifest["seq"] != seq or not layout.is_snapshot_ref_of(manifest["snapshot"], seq):
            raise ValueError("fields do not match its file name")
        check_fields(manifest, GENERATOR_ARRAY)
    except FormatVersionError:
        raise
    except ValueError as err:  # JSON and UTF-8 decoding errors are ValueErrors too
        raise CorruptStoreError(f"{where}: manifest is damaged ({err}).{hint}") from err
    return manifest


def _check_checksum(manifest: dict, version: Any, seq: int, legacy_seq: int | None) -> None:
    if type(version) is not int or not LEGACY_FORMAT <= version <= layout.FORMAT_VERSION:
        raise ValueError(f"unknown memstore_format {version!r}")
    recorded = manifest.get(CHECKSUM_FIELD)
    if version == LEGACY_FORMAT and recorded is None:
        if legacy_seq is not None and seq > legacy_seq:
            raise ValueError(
                "it claims format 1 (no checksum), but the store was upgraded from format 1 "
                f"after commit {legacy_seq}, so every later manifest carries a checksum"
            )
        return
    if recorded != manifest_checksum(manifest):
        raise ValueError(
            "its checksum is missing or does not match its content (modified after commit)"
        )


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


def rebuild(state: Mapping[str, Any], selection_strategy: Any, where: str) -> ExemplarsBuffer:
    """The buffer ``state`` describes, with every check of ``load_state_dict``.

    The state is first rebuilt without a strategy (what ``verify`` runs on every commit):
    anything it refuses is damage (:class:`~memstore.errors.CorruptStoreError` naming
    ``where``). Then, if ``selection_strategy`` is given, the buffer is rebuilt with it, and
    its errors (a strategy that does not fit the saved one) are the caller's.
    """
    try:
        buf = buffer_from_state(state)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise CorruptStoreError(
            f"{where}: the commit does not describe a valid buffer ({type(err).__name__}: {err})."
        ) from err
    if selection_strategy is None:
        return buf
    try:
        return buffer_from_state(state, selection_strategy)
    except MemstoreError:  # StrategyMismatchError: a strategy other than the saved one
        raise
    except TypeError as err:
        raise InvalidParameterTypeError(
            f"The 'selection_strategy' parameter of Store.load does not fit the saved buffer: {err}"
        ) from err
    except ValueError as err:
        raise InvalidParameterError(
            f"The 'selection_strategy' parameter of Store.load does not fit the saved buffer: {err}"
        ) from err


def check_source_fingerprints(
    manifest: Mapping[str, Any],
    sources: Mapping[str, Any],
    name: str,
    fingerprints: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`~memstore.errors.SourceMismatchError` if a given source's fingerprint
    differs from the recorded one (sources not given, or recorded without one, pass).
    ``fingerprints``: the ones already computed, by source name (not computed again)."""
    known = fingerprints or {}
    for src, record in manifest.get("sources", {}).items():
        recorded = record.get("fingerprint")
        if src in sources and recorded is not None:
            if not fingerprint_matches(sources[src], recorded, known.get(src)):
                now = known.get(src) or fingerprint(sources[src])
                raise SourceMismatchError(
                    f"Source {src!r} differs from the one buffer {name!r} was built "
                    f"from (fingerprint {now} != recorded {recorded}): its ids would "
                    "point at other samples. Pass allow_source_mismatch=True to load "
                    "anyway."
                )


def checked_fingerprints(
    manifest: Mapping[str, Any], sources: Mapping[str, Any], name: str
) -> dict[str, str]:
    """Each given source's fingerprint, computed once and checked as
    :func:`check_source_fingerprints` checks it. Cost: one fingerprint per source."""
    prints = {src: fingerprint(data) for src, data in sources.items()}
    check_source_fingerprints(manifest, sources, name, prints)
    return prints


def _group_sizes(group_col: np.ndarray, keys: np.ndarray) -> list[int]:
    uniq, counts = np.unique(group_col, return_counts=True)
    found = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    return [int(found.get(k, 0)) for k in keys.tolist()]

"""Run state in a commit: the training state saved beside the memory, in the same snapshot.

``Store.save(..., run_state=)`` writes ``<snapshot>/run_state/structure.json`` (the tree, and
where each tensor's bytes are) and ``<snapshot>/run_state/tensors.safetensors`` (the tensors
this commit is the first to hold) before the snapshot is synced and the manifest published:
the manifest's ``run_state`` field holds the structure's checksum, the structure each
tensor's checksum, so one publish step and one chain of checksums cover memory and run
state. A tensor whose bytes the parent commit already holds (a frozen backbone) is not
written again: the structure points at the parent's copy, and the manifest lists the older
snapshots it reads (``refs``), which gc keeps. Layout: ``FORMAT.md``, "Run state".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from memstore.errors import CorruptStoreError, MemstoreError

from . import checks, layout
from .connect import Connection, access_error
from .history import History
from .run_state_codec import (
    DTYPES,
    KINDS,
    STRUCTURE_FORMAT,
    Leaf,
    decode_tree,
    digest,
    encode_tree,
    leaf_value,
    safetensors_bytes,
)

__all__ = ["FIELD", "PreparedRunState", "prepare", "refs_of", "RunStates"]

FIELD = "run_state"  # the manifest field describing a commit's run state
_Place = tuple[str, int, int]  # (snapshot ref holding the bytes, offset, nbytes)


@dataclass(frozen=True)
class PreparedRunState:
    """A checked run state, ready to write: its tree and array leaves (checksums computed)."""

    tree: Any
    leaves: list[Leaf]


def prepare(value: Any) -> PreparedRunState:
    """Check and encode ``run_state`` before anything is written (TypeError naming the path
    of a value of another type). Cost: one checksum per array, O(total bytes)."""
    if not isinstance(value, Mapping):
        raise checks.wrong_type(
            "run_state",
            "Store.save",
            "None or a mapping (e.g. {'model': ...})",
            type(value).__name__,
        )
    tree, leaves = encode_tree(value)
    return PreparedRunState(tree, leaves)


def refs_of(parsed: Mapping[str, Any]) -> list[str]:
    """The older snapshots (refs) a parsed manifest's run state reads tensors from."""
    field = parsed.get(FIELD)
    return list(field["refs"]) if isinstance(field, Mapping) else []


class RunStates:
    """Reads and writes the run states of one store's commits (see the module docstring)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- writing -------------------------------------------------------------------------------
    def prior(self, history: History, name: str, seq: int | None) -> dict[tuple, _Place]:
        """Where commit ``seq`` (the parent of a save) holds each tensor, by content; empty
        without a parent, a run state, or if it is damaged (then nothing is shared)."""
        if seq is None:
            return {}
        try:
            parsed = history.read(name, seq)
            if parsed is None or parsed.get(FIELD) is None:
                return {}
            structure = self.structure(name, parsed)
        except MemstoreError:
            return {}
        return {
            (e["dtype"], tuple(e["shape"]), e["checksum"]): (e["file"], e["offset"], e["nbytes"])
            for e in structure["leaves"]
        }

    def write(
        self, name: str, snapshot: str, run: PreparedRunState, prior: Mapping[tuple, _Place]
    ) -> dict[str, Any]:
        """Write ``run`` into the (unpublished) snapshot ``snapshot``; the manifest field.

        Leaves whose content ``prior`` (or an earlier leaf) holds are referenced, not written.
        Not synced: the caller syncs the snapshot before publishing it.
        """
        places: dict[tuple, _Place] = dict(prior)
        new: list[Leaf] = []
        pending: dict[tuple, int] = {}
        for leaf in run.leaves:
            if leaf.key not in places and leaf.key not in pending:
                pending[leaf.key] = len(new)
                new.append(leaf)
        written = 0
        if new:
            blob, offsets = safetensors_bytes(new)
            self.conn.files.write_file(
                layout.run_state_path(name, snapshot, layout.RUN_STATE_TENSORS), blob
            )
            written = len(blob)
            for leaf, offset in zip(new, offsets, strict=True):
                places[leaf.key] = (snapshot, offset, leaf.data.nbytes)
        entries = []
        for leaf in run.leaves:
            file, offset, nbytes = places[leaf.key]
            entries.append(
                {
                    "kind": leaf.kind,
                    "dtype": leaf.dtype,
                    "shape": list(leaf.shape),
                    "checksum": leaf.checksum,
                    "file": file,
                    "offset": offset,
                    "nbytes": nbytes,
                }
            )
        structure = {"format": STRUCTURE_FORMAT, "tree": run.tree, "leaves": entries}
        raw = json.dumps(structure, sort_keys=True, separators=(",", ":")).encode()
        self.conn.files.write_file(
            layout.run_state_path(name, snapshot, layout.RUN_STATE_STRUCTURE), raw
        )
        refs = sorted({e["file"] for e in entries} - {snapshot})
        return {
            "structure": digest(raw),
            "refs": refs,
            "leaves": len(entries),
            "bytes": int(sum(leaf.data.nbytes for leaf in run.leaves)),
            "written": written,
        }

    # -- reading -------------------------------------------------------------------------------
    def structure(self, name: str, parsed: Mapping[str, Any]) -> dict[str, Any]:
        """The checked ``structure.json`` of a parsed manifest that has a run state.

        Raises :class:`~memstore.errors.CorruptStoreError` naming the file if it is missing,
        does not match the manifest's checksum, or is not as ``FORMAT.md`` describes.
        """
        snapshot = parsed["snapshot"]
        path = layout.run_state_path(name, snapshot, layout.RUN_STATE_STRUCTURE)
        where = f"{self.conn.url}/{path}"
        try:
            raw = self.conn.files.read(path)
        except FileNotFoundError as err:
            raise CorruptStoreError(
                f"{where} is missing: commit {parsed['seq']} of buffer {name!r} has a run "
                "state, but its structure file was deleted."
            ) from err
        except OSError as err:
            raise access_error(err, self.conn.url, f"read {path}") from err
        if digest(raw) != parsed[FIELD]["structure"]:
            raise CorruptStoreError(
                f"{where}: content does not match the manifest's checksum (damaged or "
                "modified after commit)."
            )
        try:
            structure = json.loads(raw)
            _check_structure(structure, snapshot, set(parsed[FIELD]["refs"]))
        except ValueError as err:
            raise CorruptStoreError(f"{where}: run-state structure is damaged ({err}).") from err
        return structure

    def read(self, name: str, parsed: Mapping[str, Any]) -> dict[str, Any]:
        """The run state of a parsed manifest (``{}`` if the commit has none), every tensor
        checked against its checksum. Cost: reads the run state's bytes once."""
        if parsed.get(FIELD) is None:
            return {}
        structure = self.structure(name, parsed)
        entries = structure["leaves"]
        paths = [layout.run_state_path(name, e["file"], layout.RUN_STATE_TENSORS) for e in entries]
        buffers = [np.empty(e["nbytes"], dtype=np.uint8) for e in entries]
        try:
            got = self.conn.files.readinto_ranges(paths, [e["offset"] for e in entries], buffers)
        except FileNotFoundError as err:
            raise CorruptStoreError(
                f"{self.conn.url}/{err.filename or paths[0]} is missing: commit "
                f"{parsed['seq']} of buffer {name!r} reads run-state tensors from it."
            ) from err
        except OSError as err:
            raise access_error(err, self.conn.url, f"read the run state of {name!r}") from err
        for i, (entry, buf, n) in enumerate(zip(entries, buffers, got, strict=True)):
            if n != entry["nbytes"] or digest(buf) != entry["checksum"]:
                raise CorruptStoreError(
                    f"{self.conn.url}/{paths[i]}: the bytes of "
                    f"{_leaf_path(structure['tree'], i)} do not match their checksum "
                    "(damaged, truncated or modified after commit)."
                )

        def leaf(kind: str, i: int) -> Any:
            if not 0 <= i < len(entries) or entries[i]["kind"] != kind:
                raise ValueError(f"leaf {i} is not a {kind}")
            e = entries[i]
            return leaf_value(kind, e["dtype"], tuple(e["shape"]), buffers[i])

        try:
            return decode_tree(structure["tree"], leaf)
        except ValueError as err:
            path = layout.run_state_path(name, parsed["snapshot"], layout.RUN_STATE_STRUCTURE)
            raise CorruptStoreError(
                f"{self.conn.url}/{path}: run-state structure is damaged ({err})."
            ) from err


def _leaf_path(tree: Any, index: int) -> str:
    """``run_state['model']['fc.weight']``: where leaf ``index`` sits in ``tree``."""

    def find(n: Any, path: str) -> str | None:
        if isinstance(n, list):
            items = enumerate(n)
        elif isinstance(n, dict) and len(n) == 1:
            ((tag, body),) = n.items()
            if tag in KINDS:
                return path if body == index else None
            if tag == "map" and isinstance(body, list):
                items = (p for p in body if isinstance(p, list) and len(p) == 2)
            elif tag == "tuple" and isinstance(body, list):
                items = enumerate(body)
            else:
                return None
        else:
            return None
        for k, child in items:
            found = find(child, f"{path}[{k!r}]")
            if found is not None:
                return found
        return None

    return find(tree, "run_state") or f"tensor {index}"


def _check_structure(structure: Any, snapshot: str, refs: set[str]) -> None:
    """Raise ``ValueError`` unless ``structure`` is a run-state structure of ``snapshot``
    whose tensors live in it or in the manifest's ``refs``."""
    if not isinstance(structure, dict) or structure.get("format") != STRUCTURE_FORMAT:
        raise ValueError(f"not a format-{STRUCTURE_FORMAT} run-state structure")
    leaves = structure.get("leaves")
    if "tree" not in structure or not isinstance(leaves, list):
        raise ValueError("fields 'tree' and 'leaves' are required")
    for i, e in enumerate(leaves):
        if not isinstance(e, dict):
            raise ValueError(f"leaf {i} is not an object")
        shape = e.get("shape")
        if (
            e.get("kind") not in KINDS
            or e.get("dtype") not in DTYPES
            or not isinstance(shape, list)
            or not all(type(n) is int and n >= 0 for n in shape)
            or not isinstance(e.get("checksum"), str)
            or type(e.get("offset")) is not int
            or e["offset"] < 8
        ):
            raise ValueError(f"leaf {i} is not as documented")
        words = np.dtype(e["dtype"] if e["dtype"] != "bfloat16" else "uint16").itemsize
        if e.get("nbytes") != int(np.prod(shape, dtype=np.int64)) * words:
            raise ValueError(f"leaf {i}: nbytes does not fit its dtype and shape")
        if e.get("file") != snapshot and e.get("file") not in refs:
            raise ValueError(f"leaf {i} lives in {e.get('file')!r}, not a snapshot it may read")

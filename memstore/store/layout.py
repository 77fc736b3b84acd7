"""Every path and file-name rule of the store format (see ``FORMAT.md``).

Paths are '/'-separated and relative to the store root, as :mod:`memstore.io` takes them.
Nothing here does I/O.
"""

from __future__ import annotations

import re
import uuid

__all__ = [
    "FORMAT_VERSION",
    "FORMAT_ATTRIBUTE",
    "CHECKSUM_FORMAT",
    "ROOT_METADATA",
    "BUFFERS",
    "SOURCES",
    "FEATURES",
    "PROBES",
    "MANIFEST_NAME",
    "SNAPSHOT_NAME",
    "SNAPSHOT_REF",
    "buffer_dir",
    "commits_dir",
    "snapshots_dir",
    "manifest_path",
    "manifest_seq",
    "head_path",
    "TOMBSTONE_KIND",
    "new_snapshot_ref",
    "snapshot_id",
    "snapshot_seq",
    "snapshot_path",
    "HEAD_NAME",
    "TEMP_PREFIX",
    "is_snapshot_ref_of",
    "is_snapshot_ref_before",
    "RUN_STATE",
    "RUN_STATE_STRUCTURE",
    "RUN_STATE_TENSORS",
    "run_state_path",
    "source_dir",
    "source_record_path",
    "new_source_index_prefix",
    "is_source_index_prefix_of",
    "SOURCE_INDEX_NAME",
    "feature_dir",
    "feature_values_metadata",
    "new_probe_dir",
]

# 3: gc honours run_state.refs; 2: manifest checksums; 1 (no checksums) and 2 are still read
# and upgraded to 3 by a writable open (FORMAT.md, "Compatibility").
FORMAT_VERSION = 3
CHECKSUM_FORMAT = 2  # the first format whose manifests carry a checksum
FORMAT_ATTRIBUTE = "memstore_format"  # attribute of the root group holding FORMAT_VERSION
ROOT_METADATA = "zarr.json"

BUFFERS = "buffers"
SOURCES = "sources"
FEATURES = "features"
PROBES = ".memstore"  # conditional-write probes (removed right after the probe)

MANIFEST_NAME = re.compile(r"^(\d{10})\.json$")  # buffers/<name>/commits/<seq>.json
SNAPSHOT_NAME = re.compile(r"^(\d{10})-([0-9a-f]{8})$")  # buffers/<name>/snapshots/<seq>-<id>
SNAPSHOT_REF = re.compile(r"^snapshots/\d{10}-[0-9a-f]{8}$")  # a manifest's "snapshot" field
SOURCE_INDEX_NAME = re.compile(r"^index-[0-9a-f]{8}$")  # sources/<name>/index-<id>
HEAD_NAME = "head.json"  # buffers/<name>/head.json: the newest seq published (a lower bound)
TOMBSTONE_KIND = "tombstone"  # the "kind" of a pruned commit's file in commits/
TEMP_PREFIX = ".tmp-"  # temp files of an interrupted write (local disk)


def buffer_dir(name: str) -> str:
    return f"{BUFFERS}/{name}"


def commits_dir(name: str) -> str:
    return f"{BUFFERS}/{name}/commits"


def snapshots_dir(name: str) -> str:
    return f"{BUFFERS}/{name}/snapshots"


def manifest_path(name: str, seq: int) -> str:
    """``buffers/<name>/commits/<seq>.json``, ``seq`` zero-padded to 10 digits."""
    return f"{commits_dir(name)}/{seq:010d}.json"


def head_path(name: str) -> str:
    """``buffers/<name>/head.json``: the head marker, written after each publish."""
    return f"{buffer_dir(name)}/{HEAD_NAME}"


def manifest_seq(entry: str) -> int | None:
    """The seq of a file name in ``commits/`` (``None`` if it is not a manifest's name).

    The file is a manifest or, once gc pruned the commit, its tombstone (see ``FORMAT.md``).
    """
    m = MANIFEST_NAME.match(entry)
    return int(m.group(1)) if m else None


def new_snapshot_ref(seq: int) -> str:
    """A fresh, never-reused snapshot reference ``snapshots/<seq>-<8 hex>``."""
    return f"snapshots/{seq:010d}-{uuid.uuid4().hex[:8]}"


def snapshot_id(ref: str) -> str:
    """The 8-hex id of a snapshot reference (the commit's ``id``)."""
    return ref[-8:]


def snapshot_seq(entry: str) -> int | None:
    """The seq of a folder name in ``snapshots/`` (``None`` if it is not a snapshot's name)."""
    m = SNAPSHOT_NAME.match(entry)
    return int(m.group(1)) if m else None


def snapshot_path(name: str, ref: str) -> str:
    """``buffers/<name>/<ref>``: where a manifest's snapshot reference points."""
    return f"{buffer_dir(name)}/{ref}"


def is_snapshot_ref_of(ref: object, seq: int) -> bool:
    """Whether ``ref`` is a well-formed snapshot reference of commit ``seq``."""
    return (
        isinstance(ref, str)
        and bool(SNAPSHOT_REF.match(ref))
        and ref.startswith(f"snapshots/{seq:010d}-")
    )


def is_snapshot_ref_before(ref: object, seq: int) -> bool:
    """Whether ``ref`` is a well-formed snapshot reference of a commit older than ``seq``
    (what a run state may reference: the tensors of an earlier commit)."""
    return (
        isinstance(ref, str)
        and bool(SNAPSHOT_REF.match(ref))
        and int(ref[len("snapshots/") :][:10]) < seq
    )


RUN_STATE = "run_state"  # folder of a snapshot holding the commit's run state
RUN_STATE_STRUCTURE = "structure.json"  # the run state's tree and the place of each tensor
RUN_STATE_TENSORS = "tensors.safetensors"  # the tensors first written by this commit


def run_state_path(name: str, ref: str, file: str = "") -> str:
    """``buffers/<name>/<ref>/run_state[/<file>]``: a snapshot's run-state folder or file."""
    folder = f"{snapshot_path(name, ref)}/{RUN_STATE}"
    return f"{folder}/{file}" if file else folder


def source_dir(name: str) -> str:
    return f"{SOURCES}/{name}"


def source_record_path(name: str) -> str:
    return f"{SOURCES}/{name}/record.json"


def new_source_index_prefix(name: str) -> str:
    """A fresh prefix ``sources/<name>/index-<8 hex>`` for a source's index arrays."""
    return f"{SOURCES}/{name}/index-{uuid.uuid4().hex[:8]}"


def is_source_index_prefix_of(prefix: object, name: str) -> bool:
    """Whether ``prefix`` (read from a source record) is an index prefix of source ``name``:
    ``sources/<name>/index-<8 hex>``, nothing else (never a path out of the store)."""
    if not isinstance(prefix, str) or not prefix.startswith(f"{SOURCES}/{name}/"):
        return False
    return bool(SOURCE_INDEX_NAME.match(prefix[len(SOURCES) + len(name) + 2 :]))


def feature_dir(key: str) -> str:
    return f"{FEATURES}/{key}"


def feature_values_metadata(key: str) -> str:
    """The file whose presence means the feature cache ``key`` exists."""
    return f"{FEATURES}/{key}/values/{ROOT_METADATA}"


def new_probe_dir() -> str:
    return f"{PROBES}/probe-{uuid.uuid4().hex[:12]}"

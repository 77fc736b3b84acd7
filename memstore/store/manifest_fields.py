"""The shape of every manifest field (``FORMAT.md``): a manifest that parses but holds a
field of the wrong type, a renamed key or lists that do not fit together is damaged.

The checksum says a manifest is the one its writer published; these checks say that what it
holds is something the reader can use, so damage never surfaces as a raw ``KeyError`` or
``TypeError`` deep inside a load. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import layout

__all__ = ["check_fields", "check_array_specs", "check_run_state_field"]


def check_fields(manifest: Mapping[str, Any], generator_array: str) -> None:
    """Raise ``ValueError`` naming the first field of ``manifest`` that is not as documented.

    The required fields are assumed present (the caller checks them first); the optional
    ones (``buffer``, ``parent``, ``message``, ``strategy``, ``sources``, ``sizes``) are
    checked when present. Cost: O(number of groups + arrays).
    """
    for key in ("memstore_format", "state_format", "seq"):
        _int(manifest[key], key)
    for key in ("time", "policy"):
        _str(manifest[key], key)
    for key in ("buffer", "message"):
        if key in manifest:
            _str(manifest[key], key)
    if manifest["id"] != layout.snapshot_id(manifest["snapshot"]):
        raise ValueError("field 'id' is not the id of its snapshot")
    if manifest.get("parent") is not None:
        _int(manifest["parent"], "parent", minimum=0)
    _int(manifest["num_updates"], "num_updates", minimum=0)
    _str_keys(manifest["params"], "params")
    _strategy(manifest.get("strategy"))
    names = manifest["source_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("field 'source_names' must be a list of str")
    _sources(manifest.get("sources", {}))
    _groups(manifest["groups"])
    arrays = check_array_specs(manifest["arrays"], "arrays")
    if generator_array not in arrays:
        raise ValueError(f"field 'arrays' lacks {generator_array!r}")
    if manifest.get("run_state") is not None:
        check_run_state_field(manifest["run_state"], manifest["seq"])
    if "sizes" in manifest:
        sizes = _str_keys(manifest["sizes"], "sizes")
        for key in ("rows", "groups"):
            _int(sizes.get(key), f"sizes.{key}", minimum=0)


def check_run_state_field(value: Any, seq: int) -> None:
    """``run_state``: the checksum of the commit's run-state structure, the older snapshots
    it reads tensors from (``refs``: snapshot references of commits before ``seq``) and
    counts (``leaves``, ``bytes``, ``written``); ``ValueError`` otherwise."""
    field = _str_keys(value, "run_state")
    _str(field.get("structure"), "run_state.structure")
    refs = field.get("refs")
    if not isinstance(refs, list) or not all(layout.is_snapshot_ref_before(r, seq) for r in refs):
        raise ValueError("field 'run_state.refs' must list snapshots of older commits")
    for key in ("leaves", "bytes", "written"):
        _int(field.get(key), f"run_state.{key}", minimum=0)


def _int(value: Any, field: str, minimum: int | None = None) -> int:
    if type(value) is not int or (minimum is not None and value < minimum):
        at_least = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"field {field!r} must be an int{at_least}, not {value!r}")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a str, not {type(value).__name__}")
    return value


def _str_keys(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"field {field!r} must be a JSON object, not {type(value).__name__}")
    return value


def _strategy(value: Any) -> None:
    if value is None:
        return
    record = _str_keys(value, "strategy")
    _str(record.get("class"), "strategy.class")
    _str_keys(record.get("params"), "strategy.params")


def _sources(value: Any) -> None:
    for name, record in _str_keys(value, "sources").items():
        fingerprint = _str_keys(record, f"sources.{name}").get("fingerprint")
        if fingerprint is not None:
            _str(fingerprint, f"sources.{name}.fingerprint")


def _groups(value: Any) -> None:
    groups = _str_keys(value, "groups")
    lengths = set()
    for key in ("keys", "max_sizes", "sizes"):
        items = groups.get(key)
        if not isinstance(items, list) or not all(type(v) is int for v in items):
            raise ValueError(f"field 'groups.{key}' must be a list of int")
        lengths.add(len(items))
    if len(lengths) != 1:
        raise ValueError("fields 'groups.keys', 'max_sizes' and 'sizes' differ in length")


def check_array_specs(value: Any, field: str) -> Mapping[str, Any]:
    """``value`` if it maps array names to ``{"dtype": str, "shape": [int], "checksum": str}``
    (a manifest's ``arrays``, a source record's index); ``ValueError`` otherwise."""
    arrays = _str_keys(value, field)
    for name, spec in arrays.items():
        spec = _str_keys(spec, f"{field}.{name}")
        _str(spec.get("dtype"), f"{field}.{name}.dtype")
        _str(spec.get("checksum"), f"{field}.{name}.checksum")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"field '{field}.{name}.shape' must be a list of int >= 0")
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"field {field!r} names an array {name!r} that is not a name")
    return arrays

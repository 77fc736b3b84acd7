"""Shard lists: a brace pattern (``"d/train-{000000..000255}.tar"``, ``{a,b}`` lists) or a list
of paths/URLs, expanded to shard URLs in order."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["expand_spec"]

_OWNER = "ShardSource"  # error messages name the public class
_BRACE = re.compile(r"\{([^{}]*)\}")


def _expand_braces(pattern: str) -> list[str]:
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        if int(hi) < int(lo):
            raise ValueError(f"The 'spec' parameter of {_OWNER} has a descending range {{{body}}}.")
        padded = (len(lo) > 1 and lo[0] == "0") or (len(hi) > 1 and hi[0] == "0")
        width = max(len(lo), len(hi)) if padded else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [out for item in items for out in _expand_braces(head + item + tail)]


def expand_spec(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard URLs of a brace spec (``"d/train-{000000..000255}.tar"``, ``{a,b}`` lists) or of a
    list of paths, in order. Raises ValueError on an empty or duplicated list."""
    if isinstance(spec, (str, os.PathLike)):
        urls = _expand_braces(os.fspath(spec))
    elif isinstance(spec, Sequence) and all(isinstance(u, (str, os.PathLike)) for u in spec):
        urls = [os.fspath(u) for u in spec]
    else:
        raise TypeError(
            f"The 'spec' parameter of {_OWNER} must be a str (brace pattern) or a list of shard "
            f"paths/URLs. Got {type(spec).__name__} instead."
        )
    if not urls or any(not u for u in urls):
        raise ValueError(f"The 'spec' parameter of {_OWNER} names no shards. Got {spec!r} instead.")
    if len(set(urls)) != len(urls):
        dup = next(u for u in urls if urls.count(u) > 1)
        raise ValueError(f"The 'spec' parameter of {_OWNER} lists shard {dup!r} twice.")
    return urls

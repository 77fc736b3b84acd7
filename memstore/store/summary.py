"""The JSON-able summary of one commit (``Store.describe``, ``memstore inspect``, the plots).

Built from what a reader already holds: the commit's parsed manifest, its checked state and
the buffer's log, so a caller summarising every commit reads the log once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore.experiences import PAYLOAD_PREFIX

from .history import Commit, commit_of

__all__ = ["describe_commit"]


def describe_commit(
    name: str, parsed: Mapping[str, Any], state: Mapping[str, Any], commits: list[Commit]
) -> dict[str, Any]:
    """The summary of buffer ``name`` at the commit ``parsed`` describes (``state``: its
    checked state; ``commits``: the buffer's log): policy, sizes, groups, classes, sources,
    payload columns (``{name: {"dtype", "shape"}}``, the shape of one exemplar's value; ``{}``
    without payloads), run state, history. Cost: O(rows log rows) for the class histogram."""
    classes, counts = np.unique(state["columns"]["targets"], return_counts=True)
    groups = parsed["groups"]
    return {
        "buffer": name,
        "commit": commit_of(parsed).__dict__,
        "policy": parsed["policy"],
        "params": parsed["params"],
        "strategy": parsed.get("strategy"),
        "size": parsed["sizes"]["rows"],
        "num_updates": parsed["num_updates"],
        "groups": [
            {"key": k, "max_size": m, "size": n}
            for k, m, n in zip(groups["keys"], groups["max_sizes"], groups["sizes"], strict=True)
        ],
        "classes": {str(c): int(n) for c, n in zip(classes.tolist(), counts.tolist(), strict=True)},
        "sources": parsed.get("sources", {}),
        "payload": {
            key.removeprefix(PAYLOAD_PREFIX): {
                "dtype": str(col.dtype),
                "shape": list(col.shape[1:]),
            }
            for key, col in sorted(state["columns"].items())
            if key.startswith(PAYLOAD_PREFIX)
        },
        "run_state": parsed.get("run_state"),
        "commits": [c.__dict__ for c in commits],
    }

"""``update``: one buffer update over the rows that all ranks hold, as a collective.

Every rank passes the rows it holds (an :class:`~memstore.experiences.Experience` of one
source and one index); every rank ends with the identical buffer, equal to a single-process
``buffer.update`` of the union of the rows in canonical order (ascending id within the
experience). Only ids, targets and task labels cross the wire (and, for feature-based
selection, features — see :mod:`.parametric`), never samples. Payload columns
(``Experience(payload=...)``, e.g. DER logits) travel with their rows: the payload bytes of
every candidate row sent (packed into int64 words beside its metadata, see :mod:`.wire`), so
each rank's buffer, payload included, equals the single-process update of the union. Ranks
must pass the same payload schema (names, dtypes, trailing shapes), checked in the first
metadata step. Ranks must pass disjoint ids: every id is checked once, before any rank filters
its rows (:mod:`.disjoint`), so a repeat is refused even when no copy would reach the union.

Which results do not depend on the number of ranks or the split, and why:

* every policy, either ``draws``: the union is rebuilt in canonical order on every rank, so the
  single update sees the same rows in the same order whatever the split — with
  ``draws="torch"`` one ``torch.rand`` over the canonical order, identical on every rank;
* ``draws="hash"`` (reservoir family) is what makes it *scale*: a row's weight is a function of
  the row, so each rank sends only its top candidates per group (at most the group's quota),
  O(world × max_size) rows per update instead of all ids. With ``draws="torch"`` the draw of a
  row depends on its position among all rows, so every id crosses the wire (8 × 3 bytes per
  row, plus its payload rounded up to 8 bytes);
* random selection (``ParametricBuffer`` default) draws ``randperm`` over the canonical
  contents, so it also needs all ids; herding / closest-to-center see a group's rows in the
  canonical order (old rows, then new in ascending id) on the group's owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from memstore._validation import check_sources_mapping, param_error
from memstore.experiences import ExemplarSet, Experience, check_payload_fits
from memstore.policies import (
    ClassBalancedBuffer,
    ExemplarsBuffer,
    ExperienceBalancedBuffer,
    ParametricBuffer,
    ReservoirSamplingBuffer,
)
from memstore.policies.base import check_known_ids, state_digest
from memstore.policies.reservoir import hash_draws, hash_order

from .comm import CollectiveError, agree, all_gather_rows, rank_and_size
from .disjoint import check_ids_disjoint
from .parametric import feature_update
from .wire import payload_words, wire_schema, words_payload

__all__ = ["update", "local_top", "canonical", "apply_union"]

_OWNER = "memstore.distributed.update"


def _check_args(buffer: Any, experience: Any, sources: Any) -> None:
    if not isinstance(buffer, ExemplarsBuffer):
        raise param_error(
            "buffer", _OWNER, "a memstore buffer", type(buffer).__name__, kind=TypeError
        )
    if not isinstance(experience, Experience):
        raise param_error(
            "experience",
            _OWNER,
            "a memstore.Experience (the rows this rank holds)",
            type(experience).__name__,
            kind=TypeError,
        )
    check_sources_mapping(sources, _OWNER)


def _uses_hash(buffer: ExemplarsBuffer) -> bool:
    return (
        isinstance(buffer, (ReservoirSamplingBuffer, ExperienceBalancedBuffer, ClassBalancedBuffer))
        and buffer.draws == "hash"
    )


def _quotas(buffer: ExemplarsBuffer, keys: list[int], index: int) -> dict[int, int]:
    """The most rows of each group key an update can keep (a bound for local top-k)."""
    if isinstance(buffer, ReservoirSamplingBuffer):
        return {k: buffer.max_size for k in keys}
    held = list(buffer.buffer_groups)
    if isinstance(buffer, ExperienceBalancedBuffer):
        every = sorted({*held, index})
    else:
        every = sorted({*held, *keys})
    lengths = dict(zip(every, buffer.get_group_lengths(len(every)), strict=True))
    # at least one row per new key, so the union sees every key a single process would
    return {
        k: max(1, lengths[index if isinstance(buffer, ExperienceBalancedBuffer) else k])
        for k in keys
    }


def local_top(rows: ExemplarSet, keys: np.ndarray, seed: int, quota: dict[int, int]) -> np.ndarray:
    """Positions of the top ``quota[key]`` rows of each key under the hash order (sorted)."""
    order = hash_order(rows, hash_draws(seed, rows.source, rows.ids, rows.experience))
    by_key = order[np.argsort(keys[order], kind="stable")]
    sorted_keys = keys[by_key]
    starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(by_key)]))
    limit = np.array([quota[int(k)] for k in sorted_keys[starts]], dtype=np.int64)
    limit = np.repeat(limit, np.diff(np.r_[starts, len(by_key)]))
    return np.sort(by_key[np.arange(len(by_key)) - first < limit])


def _group_keys(buffer: ExemplarsBuffer, rows: ExemplarSet) -> np.ndarray:
    if isinstance(buffer, ClassBalancedBuffer):
        return rows.targets
    return np.zeros(len(rows), dtype=np.int64)


def update(
    buffer: ExemplarsBuffer,
    experience: Experience,
    sources: Mapping[str, Any] | None = None,
    group: Any = None,
) -> None:
    """Update ``buffer`` on every rank with the union of the rows all ranks pass (collective).

    Args:
        buffer: the same buffer on every rank (checked by digest).
        experience: the rows this rank holds; every rank gives the same ``source`` and
            ``index``; ids must be disjoint across ranks (checked over every id, see
            :func:`~memstore.distributed.disjoint.check_ids_disjoint`).
        sources: as for ``buffer.update``; feature-based selection reads old exemplars here.
        group: a ``torch.distributed`` process group (default: the world).

    Raises :class:`~memstore.distributed.CollectiveError` on every rank if any rank's input is
    wrong or a rank fails, if ranks pass different payload schemas, or if two ranks pass the
    same id; buffers are then unchanged. Cost per rank: two small metadata gathers; the id
    check (every id sent once, 8 bytes, to the one rank that checks it, plus two small
    messages); and one gather of (ids, targets, task labels, payload bytes) rows — only the
    local top candidates per group with ``draws="hash"``, every row otherwise: 24 bytes plus
    the payload row size rounded up to a multiple of 8, per row sent, received from every rank.
    """
    rank_and_size(group, _OWNER)
    error, meta = None, None
    try:
        _check_args(buffer, experience, sources)
        state = buffer.state_dict()
        index = experience.index if experience.index is not None else state["num_updates"]
        rows = experience.as_exemplars(index)
        check_known_ids(buffer.buffer, rows, type(buffer).__name__)
        check_payload_fits(buffer.buffer, rows, type(buffer).__name__)
        meta = {
            "source": experience.source,
            "index": experience.index,
            "digest": state_digest(state),
            "payload": wire_schema(rows.payload),
            "keys": np.unique(_group_keys(buffer, rows)).tolist(),
        }
    except Exception as err:  # reported to every rank by agree
        error = err
    metas = agree(error, meta, group, _OWNER)
    for what in ("source", "index", "digest", "payload"):
        seen = [m[what] for m in metas]
        if any(s != seen[0] for s in seen):
            raise CollectiveError(
                f"{_OWNER}: ranks disagree on the experience's {what} ({seen}). Every rank "
                "must pass rows of one source and index, with the same payload columns (names, "
                "dtypes, trailing shapes; also a rank without rows), to the same buffer (load it "
                "from one commit on every rank)."
            )
    check_ids_disjoint(rows.ids, group, _OWNER)  # every id, before any rank filters its rows
    if isinstance(buffer, ParametricBuffer) and buffer.selection_strategy.needs_features:
        feature_update(buffer, experience, rows, sources, group)
        return
    keep = np.arange(len(rows))
    if _uses_hash(buffer):
        keys = sorted({k for m in metas for k in m["keys"]})
        quota = _quotas(buffer, keys, index)
        keep = local_top(rows, _group_keys(buffer, rows), buffer.seed, quota)
    sent = rows.take(keep)
    meta_block = np.stack([sent.ids, sent.targets, sent.task_labels], axis=1).astype(np.int64)
    block = np.concatenate([meta_block, payload_words(sent.payload, len(sent))], axis=1)
    counts = agree(None, len(keep), group, _OWNER)
    union = all_gather_rows(block, counts, group, f"{_OWNER} (rows)")
    apply_union(buffer, union, experience, group)


def canonical(union: np.ndarray) -> np.ndarray:
    """Rows [n, 3 + w] of (id, target, task, payload words) sorted by ascending id (one
    source): the order a single-process update of the union sees, whatever the split."""
    return union[np.argsort(union[:, 0], kind="stable")]


def apply_union(buffer: ExemplarsBuffer, union: np.ndarray, experience: Experience, group: Any):
    """``buffer.update`` of the canonical union (rows [n, 3 + w] as :func:`canonical` takes,
    payload words laid out as ``experience.payload``) on every rank; if any rank fails, every
    rank restores its buffer and raises the same error."""
    rows = canonical(union)
    payload = words_payload(rows[:, 3:], experience.payload)
    snapshot = buffer.state_dict()
    error = None
    try:
        buffer.update(
            Experience(
                targets=rows[:, 1],
                ids=rows[:, 0],
                task_labels=rows[:, 2],
                source=experience.source,
                index=experience.index,
                payload=payload,
            )
        )
    except Exception as err:
        error = err
    try:
        agree(error, None, group, _OWNER)
    except CollectiveError:
        if error is None:
            buffer.load_state_dict(snapshot)
        raise

"""Reading model inputs out of a source: the input of one item, and batches of inputs for
feature extraction (shard sources stream them; in-memory arrays gather them in one go)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .base import BatchStream, InputBatchSource, as_source

__all__ = ["item_input", "batch_inputs", "stack_inputs", "input_batches"]

_DICT_INPUT_KEYS = ("input", "inputs", "x", "image", "img", "data")


def item_input(item: Any, input_key: str | None = None) -> Any:
    """The model input of a dataset item: the item, its first element, or a dict entry."""
    if isinstance(item, (tuple, list)):
        return item[0]
    if isinstance(item, dict):
        keys = (input_key,) if input_key is not None else _DICT_INPUT_KEYS
        for key in keys:
            if key in item:
                return item[key]
        raise KeyError(
            f"Cannot find the model input in a dict item with keys {sorted(item)}; "
            f"looked for {list(keys)}. Pass input_key= to the selection strategy."
        )
    return item


def stack_inputs(inputs: list[Any]) -> torch.Tensor:
    """One batch tensor from per-sample inputs (tensors or arrays)."""
    return torch.stack(
        [x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x)) for x in inputs]
    )


def batch_inputs(dataset: Any, keys: np.ndarray, input_key: str | None = None) -> torch.Tensor:
    """The inputs of ``dataset[keys]`` as one batch tensor, by one batched read."""
    source = as_source(dataset)
    if isinstance(source, InputBatchSource):  # in-memory arrays: one gather
        return torch.as_tensor(source.get_inputs(keys))
    items = source.get_many(keys)
    if isinstance(items, torch.Tensor):
        return items
    return stack_inputs([item_input(it, input_key) for it in items])


def input_batches(
    dataset: Any, keys: np.ndarray, batch_size: int, input_key: str | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(positions, inputs)``: batches of the inputs of ``dataset[keys]``.

    Sources that stream (:class:`~memstore.sources.base.BatchStream`, e.g. shard sources) read
    the keys in ascending order and the positions say where each row belongs; others are
    read by key, ``batch_size`` at a time, in the given order.
    """
    source = as_source(dataset)
    if not isinstance(source, BatchStream):
        for start in range(0, len(keys), batch_size):
            batch = keys[start : start + batch_size]
            yield np.arange(start, start + len(batch)), batch_inputs(source, batch, input_key)
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    for ids, inputs in source.iter_batches(ids=sorted_keys, batch_size=batch_size):
        pos = order[np.searchsorted(sorted_keys, np.asarray(ids, dtype=np.int64))]
        if not isinstance(inputs, torch.Tensor):
            inputs = stack_inputs(list(inputs))
        yield pos, inputs

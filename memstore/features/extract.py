"""Running a model up to one layer over samples, for feature-based selection.

A forward hook on ``layer_name`` captures the layer's output; the model runs in eval mode under
``torch.no_grad`` and both the hook and the model's train/eval mode are restored afterwards,
even on error (Avalanche leaves the model in eval mode and never removes its hook).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import numpy as np
import torch

from memstore._validation import check_int
from memstore.sources.inputs import input_batches, item_input, stack_inputs

__all__ = [
    "cached_features",
    "extract_features",
    "iter_features",
    "input_batches",
    "item_input",
    "model_fingerprint",
    "find_layer",
    "stack_inputs",
]


def find_layer(model: torch.nn.Module, layer_name: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if layer_name not in modules:
        valid = [name for name in modules if name]
        raise ValueError(
            f"The 'layer_name' parameter must name a submodule of {type(model).__name__}. "
            f"Got {layer_name!r} instead. Valid names: {valid}."
        )
    return modules[layer_name]


def iter_features(
    model: torch.nn.Module,
    layer_name: str,
    dataset: Any,
    keys: Any,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    input_key: str | None = None,
    progress: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions in keys, features)`` batch by batch; see :func:`extract_features`."""
    batch_size = check_int(batch_size, "batch_size", "extract_features", minimum=1)
    layer = find_layer(model, layer_name)
    keys = np.asarray(keys, dtype=np.int64)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        captured.append(out.detach())

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    try:
        model.eval()
        batches = input_batches(dataset, keys, batch_size, input_key)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches, total=-(-len(keys) // batch_size), desc="features", unit="batch"
            )
        for positions, batch in batches:
            captured.clear()
            with torch.no_grad():
                model(batch.to(device))
            if not captured:
                raise RuntimeError(f"Layer {layer_name!r} was not called by the forward pass.")
            yield positions, captured[-1].reshape(batch.shape[0], -1).float().cpu().numpy()
    finally:
        handle.remove()
        model.train(was_training)


def extract_features(
    model: torch.nn.Module,
    layer_name: str,
    dataset: Any,
    keys: Any,
    **options: Any,
) -> np.ndarray:
    """Features ``[len(keys), d]`` (float32) of ``dataset[key]`` at ``layer_name``.

    A forward hook captures the layer's output (flattened per sample); the model runs in
    eval mode under ``no_grad``, and its mode and hooks are restored afterwards, even on
    error. Options: ``batch_size`` (256), ``device`` ("cpu"), ``input_key`` (for dict items),
    ``progress`` (a tqdm bar). Cost: one forward pass per sample.
    """
    keys = np.asarray(keys, dtype=np.int64)
    out = None
    stream = iter_features(model, layer_name, dataset, keys, **options)
    with closing(stream):  # restores the model and removes the hook even if we stop early
        for positions, feats in stream:
            if out is None:
                out = np.empty((len(keys), feats.shape[1]), dtype=np.float32)
            out[positions] = feats
    return np.empty((0, 0), dtype=np.float32) if out is None else out


def cached_features(
    model: torch.nn.Module,
    layer_name: str,
    dataset: Any,
    keys: Any,
    store: Any,
    *,
    dtype: str = "float32",
    **options: Any,
) -> np.ndarray:
    """Like :func:`extract_features`, through the store's feature cache.

    Only samples missing from the cache are computed, in ascending id order, and written
    chunk by chunk as they complete: an interrupted extraction resumes where it stopped.
    The cache entry is keyed by the source's fingerprint, the model's weights and the layer.
    Every chunk read is checked against its checksums; the rows of a damaged chunk are
    recomputed (a ``UserWarning`` names the chunk) and the chunk rewritten, never returned.
    Concurrent calls on one entry are safe: each chunk has one writer at a time.
    """
    from memstore.sources.arrays import fingerprint

    from .cache import CHUNK_ROWS, cache_key

    keys = np.asarray(keys, dtype=np.int64)
    key = cache_key(fingerprint(dataset), model_fingerprint(model, layer_name), layer_name)
    label = getattr(dataset, "name", None)  # shape: allow optional label of a user dataset
    attrs = {"source": label, "layer": layer_name, "n": len(dataset)}
    cache = store.open_feature_cache(key)
    out: np.ndarray | None = None
    if cache is None:
        todo = np.unique(keys)
    else:
        got = cache.lookup(keys)
        if got.damaged:
            warnings.warn(
                f"The feature cache {key!r} has damaged chunk(s) {got.damaged} "
                f"({got.problems[0][0]}: {got.problems[0][1]}); recomputing their rows.",
                stacklevel=2,
            )
        out, todo = got.features, np.unique(keys[~got.found])
    fresh: np.ndarray | None = None  # rows computed now, as stored: no read-back needed
    pending_ids: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    stream = iter_features(model, layer_name, dataset, todo, **options)
    with closing(stream):
        for positions, feats in stream:
            if cache is None:
                cache = store.feature_cache(key, len(dataset), feats.shape[1], dtype, attrs)
            if fresh is None:
                fresh = np.empty((len(todo), feats.shape[1]), dtype=np.float32)
            fresh[positions] = feats.astype(cache.values.dtype)
            pending_ids.append(todo[positions])
            pending.append(feats)
            ids = np.concatenate(pending_ids)
            complete = ids // CHUNK_ROWS < ids.max() // CHUNK_ROWS  # chunks we moved past
            if complete.any():
                feats = np.concatenate(pending)
                cache.write(ids[complete], feats[complete])
                pending_ids, pending = [ids[~complete]], [feats[~complete]]
    if pending_ids and sum(len(p) for p in pending_ids):
        cache.write(np.concatenate(pending_ids), np.concatenate(pending))
    if cache is None:
        return np.empty((len(keys), 0), dtype=np.float32)
    if fresh is None:
        return out if out is not None else cache.read(keys)
    if out is None:
        out = np.empty((len(keys), fresh.shape[1]), dtype=np.float32)
    where = np.minimum(np.searchsorted(todo, keys), len(todo) - 1)
    computed = todo[where] == keys
    out[computed] = fresh[where[computed]]
    return out


def model_fingerprint(model: torch.nn.Module, layer_name: str) -> str:
    """A short hash of the model's parameters and buffers (keys a feature cache)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(type(model).__qualname__.encode())
    h.update(layer_name.encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

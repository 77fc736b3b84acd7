"""Running a model up to one layer over samples, for feature-based selection.

A forward hook on ``layer_name`` captures the layer's output; the model runs in eval mode under
``torch.no_grad`` and both the hook and the model's train/eval mode are restored afterwards,
even on error (Avalanche leaves the model in eval mode and never removes its hook).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ._validation import check_int

__all__ = ["extract_features", "item_input", "model_fingerprint", "find_layer"]

_DICT_INPUT_KEYS = ("input", "inputs", "x", "image", "img", "data")


def find_layer(model: torch.nn.Module, layer_name: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if layer_name not in modules:
        valid = [name for name in modules if name]
        raise ValueError(
            f"The 'layer_name' parameter must name a submodule of {type(model).__name__}. "
            f"Got {layer_name!r} instead. Valid names: {valid}."
        )
    return modules[layer_name]


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


def _batch_inputs(dataset: Any, keys: np.ndarray, input_key: str | None) -> torch.Tensor:
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(keys.tolist()) if getitems is not None else [dataset[int(k)] for k in keys]
    if isinstance(items, torch.Tensor):
        return items
    inputs = [item_input(it, input_key) for it in items]
    return torch.stack([torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
                        for x in inputs])


def extract_features(
    model: torch.nn.Module,
    layer_name: str,
    dataset: Any,
    keys: Any,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    input_key: str | None = None,
) -> np.ndarray:
    """Features ``[len(keys), d]`` (float32) of ``dataset[key]`` at ``layer_name``.

    Outputs of more than two dimensions are flattened per sample. Cost: one forward pass per
    sample, in batches of ``batch_size`` on ``device``.
    """
    batch_size = check_int(batch_size, "batch_size", "extract_features", minimum=1)
    layer = find_layer(model, layer_name)
    keys = np.asarray(keys, dtype=np.int64)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        captured.append(out.detach())

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    parts = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(keys), batch_size):
                batch = _batch_inputs(dataset, keys[start : start + batch_size], input_key)
                captured.clear()
                model(batch.to(device))
                if not captured:
                    raise RuntimeError(f"Layer {layer_name!r} was not called by the forward pass.")
                out = captured[-1].reshape(batch.shape[0], -1)
                parts.append(out.float().cpu().numpy())
    finally:
        handle.remove()
        model.train(was_training)
    if not parts:
        return np.empty((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


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

"""Features: a model's activations at one layer, extracted in batches and cached resumably."""

from .extract import extract_features

__all__ = ["extract_features"]

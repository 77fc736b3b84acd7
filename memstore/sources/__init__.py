"""Sources: what a sample id points into (arrays, map-style datasets, webdataset shards)."""

from .arrays import ArraySource, fingerprint
from .shards import ShardSource

__all__ = ["ArraySource", "ShardSource", "fingerprint"]

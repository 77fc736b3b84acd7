"""Webdataset tar shards as an id-addressable source, indexed once and read by byte offset,
and the writer that makes such shards. The bytes are described in ``FORMAT.md``."""

from .index import ShardIndex
from .source import ShardSource, expand_spec
from .writer import WrittenShards, shard_spec, write_samples, write_shards, write_synthetic

__all__ = [
    "ShardIndex",
    "ShardSource",
    "WrittenShards",
    "expand_spec",
    "shard_spec",
    "write_samples",
    "write_shards",
    "write_synthetic",
]

"""Webdataset tar shards as an id-addressable source, indexed once and read by byte offset."""

from .source import ShardSource, expand_spec

__all__ = ["ShardSource", "expand_spec"]

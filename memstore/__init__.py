"""memstore: Avalanche's replay buffers and selection strategies, over any dataset, with a
memory that lives in a Zarr store."""

from .errors import (
    BufferNotFoundError,
    ConcurrentCommitError,
    CorruptShardError,
    CorruptStoreError,
    DetachedStrategyError,
    FormatVersionError,
    IdConflictError,
    InvalidParameterError,
    InvalidParameterTypeError,
    MemstoreError,
    MissingSourceError,
    PayloadMismatchError,
    ReadOnlyStoreError,
    SourceMismatchError,
    SourceNotFoundError,
    StoreAccessError,
    StoreExistsError,
    StoreNotFoundError,
    StorePermissionError,
    UnrelatedHistoryError,
    UnsafePathError,
)
from .experiences import ExemplarSet, Experience
from .features import extract_features
from .policies import (
    BalancedExemplarsBuffer,
    ClassBalancedBuffer,
    ExemplarsBuffer,
    ExperienceBalancedBuffer,
    ParametricBuffer,
    ReservoirSamplingBuffer,
    buffer_from_state,
)
from .replay import GroupBalancedSampler, ReplayDataset, TaskLabelledItems
from .rng import rng_state, set_rng_state
from .selection import (
    ClosestToCenterSelectionStrategy,
    ExemplarsSelectionStrategy,
    FeatureBasedExemplarsSelectionStrategy,
    HerdingSelectionStrategy,
    RandomExemplarsSelectionStrategy,
)
from .sources import ArraySource, ShardSource, fingerprint, write_shards
from .store import Commit, Origin, Problem, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "ArraySource",
    "BalancedExemplarsBuffer",
    "BufferNotFoundError",
    "ClassBalancedBuffer",
    "ClosestToCenterSelectionStrategy",
    "CorruptShardError",
    "ConcurrentCommitError",
    "CorruptStoreError",
    "DetachedStrategyError",
    "ExemplarSet",
    "ExemplarsBuffer",
    "ExemplarsSelectionStrategy",
    "Experience",
    "ExperienceBalancedBuffer",
    "FeatureBasedExemplarsSelectionStrategy",
    "FormatVersionError",
    "GroupBalancedSampler",
    "HerdingSelectionStrategy",
    "IdConflictError",
    "MemstoreError",
    "MissingSourceError",
    "ParametricBuffer",
    "PayloadMismatchError",
    "RandomExemplarsSelectionStrategy",
    "ReadOnlyStoreError",
    "ReplayDataset",
    "ReservoirSamplingBuffer",
    "ShardSource",
    "SourceMismatchError",
    "SourceNotFoundError",
    "Commit",
    "Origin",
    "Problem",
    "Store",
    "StoreAccessError",
    "TaskLabelledItems",
    "StoreExistsError",
    "StoreNotFoundError",
    "StorePermissionError",
    "InvalidParameterError",
    "InvalidParameterTypeError",
    "UnrelatedHistoryError",
    "UnsafePathError",
    "buffer_from_state",
    "open_store",
    "rng_state",
    "set_rng_state",
    "extract_features",
    "fingerprint",
    "write_shards",
]

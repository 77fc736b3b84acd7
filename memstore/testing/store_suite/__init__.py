"""A reusable, backend-agnostic test-suite for memstore stores (as zarr-python's
``StoreTests``).

Subclass :class:`StoreTests` (and :class:`ConcurrencyTests`) in a test module and override the
``store_url`` / ``storage_options`` fixtures to point at a backend::

    class TestLocalStore(StoreTests):
        @pytest.fixture
        def store_url(self, tmp_path):
            return str(tmp_path / "m.zarr")

The tests cover exact resume (in this process and in a fresh one), damage, format, bad input,
history, lineage, run state (one mixin per theme, one module each) and racing writers. They
touch the store's files only through fsspec (:mod:`.files`), so the same bodies run against a
local directory and an object store.
"""

from __future__ import annotations

from .base import StoreFixtures
from .concurrency import ConcurrencyTests
from .damage import DamageTests
from .files import flip_byte, fs_root, manifest, put, snapshot_path, tree
from .history import HistoryTests
from .inputs import BadInputTests, FormatTests
from .lineage import LineageTests
from .resume import ResumeTests
from .run_state import RunStateTests

__all__ = [
    "StoreTests",
    "ConcurrencyTests",
    "StoreFixtures",
    "ResumeTests",
    "DamageTests",
    "FormatTests",
    "BadInputTests",
    "HistoryTests",
    "LineageTests",
    "RunStateTests",
    "fs_root",
    "tree",
    "put",
    "flip_byte",
    "manifest",
    "snapshot_path",
]


class StoreTests(
    ResumeTests,
    DamageTests,
    FormatTests,
    BadInputTests,
    HistoryTests,
    LineageTests,
    RunStateTests,
):
    """Store behaviour every backend must show (all themes). Override ``store_url`` (a URL
    where no store exists yet, fresh per test) and, if needed, ``storage_options``."""

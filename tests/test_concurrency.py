"""Concurrent writers on a local directory: the suite's :class:`ConcurrencyTests`."""

from __future__ import annotations

import pytest

from memstore.testing.store_suite import ConcurrencyTests


class TestLocalConcurrency(ConcurrencyTests):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return str(tmp_path / "m.zarr")

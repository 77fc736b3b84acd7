"""The fixture hooks every store test-suite class shares."""

from __future__ import annotations

import pytest

from memstore.testing.store_child import make_sources

__all__ = ["StoreFixtures"]


class StoreFixtures:
    """The fixture hooks of a backend: ``store_url`` (where no store exists yet, fresh per
    test) and ``storage_options`` (fsspec options, ``None`` by default)."""

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("a store test-suite subclass must define store_url")

    @pytest.fixture
    def storage_options(self) -> dict | None:
        return None

    @pytest.fixture
    def sources(self):
        return make_sources()

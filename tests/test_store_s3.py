"""The store tests again, against real S3-protocol servers on loopback (SeaweedFS and moto),
plus what only object storage has: credentials and servers that ignore conditional writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

import memstore
from memstore.testing.reference import assert_state_equal
from memstore.testing.store_child import make_sources, run_stream
from memstore.testing.store_suite import ConcurrencyTests, RunStateTests, StoreTests, fs_root

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_server(seaweedfs_server):
    """Tests here that take ``s3_server`` run on SeaweedFS only."""
    return seaweedfs_server


def on_server(server: str) -> type:
    """A mixin giving the suites' ``storage_options`` / ``store_url`` fixtures: a fresh
    bucket on the server fixture named ``server``."""

    class OnServer:
        @pytest.fixture
        def storage_options(self, request):
            return request.getfixturevalue(server).storage_options()

        @pytest.fixture
        def store_url(self, request):
            found = request.getfixturevalue(server)
            return found.url(found.make_bucket(), "m.zarr")

    return OnServer


OnSeaweedFS, OnMoto = on_server("seaweedfs_server"), on_server("moto_server")


class TestSeaweedFSStore(OnSeaweedFS, StoreTests):
    """The whole store suite runs on SeaweedFS (atomic conditional PUTs, auth enforced);
    moto gets the run-state tests and the round trip below (its whole suite run would double
    the time for little more)."""


class TestSeaweedFSConcurrency(OnSeaweedFS, ConcurrencyTests):
    """Real processes racing on a server whose conditional PUT is atomic. Fewer commits per
    writer than locally: a save takes 1.5-2 s and a load 0.6 s on SeaweedFS here, and the
    writers' commits are serial (set MEMSTORE_S3_COMMITS=30 for the full-size run)."""

    commits = int(os.environ.get("MEMSTORE_S3_COMMITS", "10"))


class TestMotoRunState(OnMoto, RunStateTests):
    """Run state on moto too: ranged reads of a safetensors object, refs across snapshots."""


def test_round_trip_history_verify_gc_on_moto(moto_server):
    sources = make_sources()
    url = moto_server.url(moto_server.make_bucket(), "m.zarr")
    options = moto_server.storage_options()
    store = memstore.open_store(url, storage_options=options)
    states = []
    for steps in (1, 2, 3):
        buf = run_stream("class", steps, sources)  # a fresh stream: on top of the latest
        store.save("b", buf, message=f"after {steps}", overwrite=steps > 1)
        states.append(buf.state_dict())
    again = memstore.open_store(url, mode="r", storage_options=options)
    assert [c.message for c in again.log("b")] == ["after 1", "after 2", "after 3"]
    for seq, state in enumerate(states):
        assert_state_equal(again.load("b", commit=seq).state_dict(), state)
    assert again.verify() == []
    store.gc(keep=1, grace_seconds=0)
    assert [c.seq for c in store.log("b")] == [2] and store.verify() == []


def _small_buffer() -> memstore.ClassBalancedBuffer:
    buf = memstore.ClassBalancedBuffer(10, seed=0)
    buf.update(memstore.Experience(targets=np.arange(30) % 3))
    return buf


def test_missing_credentials_is_a_clear_error(seaweedfs_server, no_aws_env):
    url = seaweedfs_server.url(seaweedfs_server.make_bucket(), "m.zarr")
    options = seaweedfs_server.storage_options(key=None, secret=None)
    with pytest.raises(PermissionError, match="No credentials") as info:
        memstore.open_store(url, storage_options=options)
    assert isinstance(info.value, memstore.StorePermissionError)


def test_wrong_credentials_is_a_clear_error(seaweedfs_server):
    url = seaweedfs_server.url(seaweedfs_server.make_bucket(), "m.zarr")
    with pytest.raises(PermissionError, match="refused") as info:
        memstore.open_store(url, storage_options=seaweedfs_server.storage_options(secret="bad"))
    assert isinstance(info.value, memstore.StorePermissionError)
    fs = fs_root(url, seaweedfs_server.storage_options())[0]
    assert fs.find(url.removeprefix("s3://")) == []  # nothing written


def test_server_ignoring_conditional_writes_is_detected():
    from memstore.testing.s3server import start_moto

    with start_moto(ignore_conditional_writes=True) as server:
        url = server.url(server.make_bucket(), "m.zarr")
        with pytest.raises(memstore.MemstoreError, match="ignores conditional writes"):
            memstore.open_store(url, storage_options=server.storage_options())
        store = memstore.open_store(
            url, storage_options=server.storage_options(), single_writer=True
        )
        assert store.supports_conditional_writes is False
        buf = _small_buffer()
        store.save("b", buf)
        assert store.load("b").buffer.equals(buf.buffer)


def test_store_survives_fsspec_instance_reuse(s3_server):
    """A second Store on the same URL sees commits published by the first (no stale listing)."""
    url = s3_server.url(s3_server.make_bucket(), "m.zarr")
    options = s3_server.storage_options()
    reader = memstore.open_store(url, mode="a", storage_options=options)
    assert reader.buffers() == []
    writer = memstore.open_store(url, storage_options=options)
    writer.save("b", _small_buffer())
    writer.save("b", _small_buffer(), overwrite=True)
    assert reader.buffers() == ["b"] and [c.seq for c in reader.log("b")] == [0, 1]

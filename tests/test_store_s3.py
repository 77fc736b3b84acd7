"""The store tests again, against real S3-protocol servers on loopback (SeaweedFS and moto),
plus what only object storage has: credentials and servers that ignore conditional writes."""

from __future__ import annotations

import numpy as np
import pytest
import test_concurrency
import test_store
from test_store import *  # noqa: F403 - the same test bodies, run with s3:// URLs

import memstore

pytestmark = pytest.mark.s3

# Local-path-only cases (no store_url): they already run in test_store.py.
for _local_only in (
    "test_unknown_url_scheme",
    "test_unwritable_path",
    "test_storage_options_with_a_local_path",
):
    globals().pop(_local_only, None)


@pytest.fixture
def s3_server(seaweedfs_server):
    """The whole store suite runs on SeaweedFS (atomic conditional PUTs, auth enforced);
    moto gets the round trip below (its suite run would double the time for little more)."""
    return seaweedfs_server


@pytest.fixture
def storage_options(s3_server):
    return s3_server.storage_options()


@pytest.fixture
def store_url(s3_server):
    return s3_server.url(s3_server.make_bucket(), "m.zarr")


def test_round_trip_history_verify_gc_on_moto(moto_server, sources):
    url = moto_server.url(moto_server.make_bucket(), "m.zarr")
    options = moto_server.storage_options()
    store = memstore.open_store(url, storage_options=options)
    states = []
    for steps in (1, 2, 3):
        buf = test_store.run_stream("class", steps, sources)
        store.save("b", buf, message=f"after {steps}")
        states.append(buf.state_dict())
    again = memstore.open_store(url, mode="r", storage_options=options)
    assert [c.message for c in again.log("b")] == ["after 1", "after 2", "after 3"]
    for seq, state in enumerate(states):
        test_store.assert_state_equal(again.load("b", commit=seq).state_dict(), state)
    assert again.verify() == []
    store.gc(keep=1, grace_seconds=0)
    assert [c.seq for c in store.log("b")] == [2] and store.verify() == []


@pytest.fixture
def seaweed_url(seaweedfs_server):
    return seaweedfs_server.url(seaweedfs_server.make_bucket(), "m.zarr")


def test_two_writers_and_a_reader_on_seaweedfs(seaweed_url, seaweedfs_server, monkeypatch):
    """Real processes racing on a server whose conditional PUT is atomic (fewer tries than
    locally: SeaweedFS stalls about a second on every same-key collision)."""
    monkeypatch.setattr(test_concurrency, "TRIES", 8)
    test_concurrency.test_two_writers_and_a_reader(seaweed_url, seaweedfs_server.storage_options())


def test_loser_of_a_race_on_seaweedfs(seaweed_url, seaweedfs_server):
    test_concurrency.test_the_loser_of_a_race_gets_concurrent_commit_error(
        seaweed_url, seaweedfs_server.storage_options()
    )


def _small_buffer() -> memstore.ClassBalancedBuffer:
    buf = memstore.ClassBalancedBuffer(10, seed=0)
    buf.update(memstore.Experience(targets=np.arange(30) % 3))
    return buf


def test_missing_credentials_is_a_clear_error(seaweedfs_server, no_aws_env):
    url = seaweedfs_server.url(seaweedfs_server.make_bucket(), "m.zarr")
    options = seaweedfs_server.storage_options(key=None, secret=None)
    with pytest.raises(PermissionError, match="No credentials"):
        memstore.open_store(url, storage_options=options)


def test_wrong_credentials_is_a_clear_error(seaweedfs_server):
    url = seaweedfs_server.url(seaweedfs_server.make_bucket(), "m.zarr")
    with pytest.raises(PermissionError, match="refused"):
        memstore.open_store(url, storage_options=seaweedfs_server.storage_options(secret="bad"))
    fs = test_store.fs_root(url, seaweedfs_server.storage_options())[0]
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
    writer.save("b", _small_buffer())
    assert reader.buffers() == ["b"] and [c.seq for c in reader.log("b")] == [0, 1]

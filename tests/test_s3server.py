"""The loopback S3 servers behave as the store's S3 tests assume (tests/s3server.py)."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
import uuid

import botocore.exceptions
import numpy as np
import pytest

from memstore.testing.s3server import (
    S3Server,
    is_create_conflict,
    isolated_aws_env,
    probe_conditional_put,
    start_moto,
    start_seaweedfs,
)

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
zarr = pytest.importorskip("zarr")

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module", params=["seaweedfs", "moto"])
def server(request, tmp_path_factory):
    srv = (
        start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
        if request.param == "seaweedfs"
        else start_moto()
    )
    yield srv
    srv.stop()


@pytest.fixture
def bucket(server: S3Server) -> str:
    return server.make_bucket()


def _fs(server: S3Server, **kw):
    return fsspec.filesystem("s3", skip_instance_cache=True, **server.storage_options(**kw))


def test_write_read_list_delete(server, bucket):
    fs = _fs(server)
    fs.pipe_file(f"{bucket}/a/1", b"one")
    fs.pipe_file(f"{bucket}/a/2", b"two")
    fs.pipe_file(f"{bucket}/b", b"three")
    assert fs.cat_file(f"{bucket}/a/2") == b"two"
    assert fs.ls(f"{bucket}/a", detail=False) == [f"{bucket}/a/1", f"{bucket}/a/2"]
    assert fs.find(bucket) == [f"{bucket}/a/1", f"{bucket}/a/2", f"{bucket}/b"]
    fs.rm_file(f"{bucket}/a/1")
    assert fs.find(bucket) == [f"{bucket}/a/2", f"{bucket}/b"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{bucket}/a/1")


def test_emptied_prefix_disappears_once_folder_keys_are_deleted(server, bucket):
    """SeaweedFS keeps emptied folders as listed prefixes until their "dir/" keys are deleted."""
    fs, client = _fs(server), server.client()
    fs.pipe_file(f"{bucket}/snap/1/c/0", b"x")
    fs.pipe_file(f"{bucket}/snap/2/zarr.json", b"{}")
    fs.rm(f"{bucket}/snap/1", recursive=True)
    assert fs.find(f"{bucket}/snap") == [f"{bucket}/snap/2/zarr.json"]  # flat listing: exact
    for key in ("snap/1/c/", "snap/1/"):  # deepest first; a no-op on AWS and moto
        client.delete_object(Bucket=bucket, Key=key)
    listed = client.list_objects_v2(Bucket=bucket, Prefix="snap/", Delimiter="/")
    assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == ["snap/2/"]


def test_ranged_reads(server, bucket):
    fs = _fs(server)
    data = bytes(range(256)) * 4
    fs.pipe_file(f"{bucket}/blob", data)
    for start, end in [(10, 20), (0, 1), (1000, 1024), (1000, 5000), (-4, None), (None, 3)]:
        assert fs.cat_file(f"{bucket}/blob", start=start, end=end) == data[start:end]
    with pytest.raises(OSError, match="not satisfiable"):
        fs.cat_file(f"{bucket}/blob", start=2000, end=3000)


def test_create_if_absent_refuses_second_writer(server, bucket):
    fs = _fs(server)
    path = f"{bucket}/commits/0000000001.json"
    fs.pipe_file(path, b"winner", mode="create")
    with pytest.raises(OSError) as info:
        fs.pipe_file(path, b"loser", mode="create")
    assert is_create_conflict(info.value)
    # s3fs maps the 412 to FileExistsError only if the body names the condition (moto does).
    assert isinstance(info.value, FileExistsError) == (server.kind == "moto")
    with pytest.raises(botocore.exceptions.ClientError) as raw:
        server.client().put_object(
            Bucket=bucket, Key=path.split("/", 1)[1], Body=b"x", IfNoneMatch="*"
        )
    assert raw.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert raw.value.response["Error"]["Code"] == "PreconditionFailed"
    assert fs.cat_file(path) == b"winner"


def test_probe_conditional_put_on_fs_and_client(server, bucket):
    assert probe_conditional_put(_fs(server), f"{bucket}/.probe-{uuid.uuid4().hex}")
    assert probe_conditional_put(server.client(), f"{bucket}/.probe-{uuid.uuid4().hex}")
    assert _fs(server).find(bucket) == []  # the probe cleans up


def test_racing_creates_have_exactly_one_winner(server, bucket):
    # Moto checks If-None-Match and stores the object in two steps without a lock, so two
    # simultaneous creates can both succeed (seen in CI: two winners of four). The
    # concurrency suites therefore run on SeaweedFS only (tests/test_store_s3.py); moto serves
    # the single-writer tests.
    if server.kind == "moto":
        pytest.skip("moto's conditional create is not atomic under concurrent requests")
    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    clients = [server.client() for _ in range(4)]

    def attempt(worker: int, key: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            clients[worker].put_object(
                Bucket=bucket, Key=key, Body=b"w%d" % worker, IfNoneMatch="*"
            )
            outcome = "won"
        except botocore.exceptions.ClientError as err:
            outcome = "lost" if is_create_conflict(err) else repr(err)
        with lock:
            results.append((worker, outcome))

    for round_ in range(3):
        key, barrier = f"race/{round_}", threading.Barrier(4)
        results.clear()
        threads = [threading.Thread(target=attempt, args=(w, key, barrier)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [w for w, outcome in results if outcome == "won"]
        assert sorted(o for _, o in results) == ["lost", "lost", "lost", "won"], results
        body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == b"w%d" % winners[0]


def test_zarr_fsspec_store_roundtrip_and_read_only(server, bucket):
    url = server.url(bucket, "store")
    options = server.storage_options()
    root = zarr.open_group(
        zarr.storage.FsspecStore.from_url(url, storage_options=options),
        mode="w-",
        attributes={"memstore_format": 1},
    )
    root.create_array("buffers/x/ids", data=np.arange(1000, dtype="int64"), chunks=(1000,))
    ro_store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
    group = zarr.open_group(ro_store, mode="r")
    assert group.attrs["memstore_format"] == 1
    np.testing.assert_array_equal(group["buffers/x/ids"][:], np.arange(1000))
    assert sorted(name for name, _ in group.members(max_depth=None)) == [
        "buffers",
        "buffers/x",
        "buffers/x/ids",
    ]
    with pytest.raises(ValueError, match="read-only"):
        group["buffers/x/ids"][0] = 7
    assert group["buffers/x/ids"][0] == 0


def test_wrong_or_missing_credentials_are_refused(server, bucket):
    if not server.enforces_auth:
        pytest.skip("this server accepts any credentials (see test_moto_can_enforce_auth)")
    _fs(server).pipe_file(f"{bucket}/x", b"1")
    with pytest.raises(PermissionError):
        _fs(server, secret="wrong").cat_file(f"{bucket}/x")
    with pytest.raises(PermissionError):
        _fs(server, key="AKIAUNKNOWN", secret="wrong").pipe_file(f"{bucket}/y", b"1")
    with isolated_aws_env(), pytest.raises(botocore.exceptions.NoCredentialsError):
        _fs(server, key=None, secret=None).cat_file(f"{bucket}/x")
    assert _fs(server).find(bucket) == [f"{bucket}/x"]


def test_moto_can_enforce_auth():
    with start_moto(enforce_auth=True) as srv:
        name = srv.make_bucket()
        srv.client().put_object(Bucket=name, Key="k", Body=b"1")
        with pytest.raises(botocore.exceptions.ClientError) as info:
            srv.client(secret="wrong").get_object(Bucket=name, Key="k")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_probe_detects_a_server_that_ignores_conditional_writes():
    with start_moto(ignore_conditional_writes=True) as srv:
        name = srv.make_bucket()
        assert not probe_conditional_put(srv.client(), f"{name}/.probe")
        fs = _fs(srv)
        fs.pipe_file(f"{name}/m", b"first", mode="create")
        fs.pipe_file(f"{name}/m", b"second", mode="create")  # silently overwrites
        assert fs.cat_file(f"{name}/m") == b"second"


def test_seaweedfs_stop_leaves_no_process_or_socket(tmp_path):
    srv = start_seaweedfs(tmp_path)
    assert srv.pid is not None and os.getpgid(srv.pid) == srv.pid
    # Its own sockets only: other servers (other test workers) may come and go meanwhile.
    assert len(srv.sockets) == 5 and any(os.path.exists(p) for p in srv.sockets)
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.pid, 0)
    assert not any(os.path.exists(p) for p in srv.sockets)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(srv.endpoint_url, timeout=2)

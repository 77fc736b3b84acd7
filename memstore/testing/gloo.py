"""Process groups for the multi-rank tests and benchmarks: gloo on 127.0.0.1 only."""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist

__all__ = ["free_port", "init_loopback_group"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_loopback_group(rank: int, world: int, port: int, timeout: float = 20.0) -> None:
    """Join a gloo group rendezvousing on 127.0.0.1:``port``; one thread per rank (the ranks
    share this machine's cores). ``timeout`` (seconds) bounds every collective, so a dead rank
    fails the others instead of hanging them."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout),
    )

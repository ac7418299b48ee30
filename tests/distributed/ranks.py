"""Run a function on several gloo ranks spawned from pytest, with a deadline so a hang fails instead of blocking."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT_S = 20  # a rank stuck in a collective raises after this long


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ranks(
    target: Callable[..., Any],
    *,
    world_size: int = 2,
    timeout: float = 60.0,
    init_process_group: bool = True,
    **kwargs: Any,
) -> list[Any]:
    """``target(rank, world_size, **kwargs)`` on every rank; returns each rank's result, rank order.

    ``init_process_group=False``: only set the torchrun environment variables
    (a framework such as Lightning then creates the group itself). Raises
    ``TimeoutError`` (after killing the ranks it started) when they are not all
    done within ``timeout`` seconds.
    """
    with tempfile.TemporaryDirectory() as out:
        context = mp.start_processes(
            _entry,
            args=(target, free_port(), world_size, out, init_process_group, kwargs),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() >= deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
                raise TimeoutError(f"{target.__name__} did not finish on {world_size} ranks within {timeout:.0f} s")
        return [torch.load(Path(out) / f"{rank}.pt", weights_only=False) for rank in range(world_size)]


def _entry(rank: int, target: Callable[..., Any], port: int, world_size: int, out: str, init: bool, kwargs: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if init:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
    else:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": world_size, "RANK": rank, "LOCAL_RANK": rank}
        os.environ.update({key: str(value) for key, value in {**env, "NODE_RANK": 0}.items()})
    try:
        result = target(rank, world_size, **kwargs)
        torch.save(result, Path(out) / f"{rank}.pt")
        if dist.is_initialized():
            dist.barrier()  # leave together: gloo may abort a rank whose peer tears down mid-exchange
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

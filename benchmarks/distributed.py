"""``python -m benchmarks.distributed``: the cost of gradwatch under DDP and FSDP2 on 2 CPU ranks (gloo).

Each rank trains the overhead benchmark's MLP (6×1024 ReLU, global batch 256
split over the ranks) plain and under ``watch()``, alternately in the same
process group (paired runs), sampling every ``--every`` steps; rank 0 prints
the medians over ``--repeats`` pairs. Every run first takes ``--warmup``
untimed steps, so the ratio is the steady-state cost.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradwatch.integrations.pytorch import watch

from .overhead import mlp, table_row


def wrapped(how: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model, x, y = mlp()
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = x[rank::world], y[rank::world]
    if how == "ddp":
        return nn.parallel.DistributedDataParallel(model), x, y
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, nn.Linear):
            fully_shard(module)
    fully_shard(model)
    return model, x, y


def run(how: str, *, gradwatch: bool, steps: int, warmup: int, every: int) -> float:
    """Seconds per step on this rank (after a barrier, so all ranks time the same steps)."""
    model, x, y = wrapped(how)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    watcher = watch(model, optimizer, every_n_steps=every, print_report=False, warn_on=None) if gradwatch else None

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if watcher is not None:
            watcher.step(loss)

    for _ in range(warmup):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    elapsed = time.perf_counter() - start
    if watcher is not None:
        watcher.close()
    return elapsed / steps


def worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(minutes=5))
    try:
        if rank == 0:
            print(
                f"torch {torch.__version__}, {world} ranks × 1 thread (gloo), median of {args.repeats} paired runs × {args.steps} steps, sampling every {args.every} steps"
            )
            print(f"{'configuration':<28} {'base ms/step':>14} {'with ms/step':>16} {'ratio':>7}", flush=True)
        for how in args.how:
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for with_gradwatch in (False, True):
                    times[with_gradwatch].append(run(how, gradwatch=with_gradwatch, steps=args.steps, warmup=args.warmup, every=args.every))
            if rank == 0:
                print(table_row(f"mlp {how} (2 ranks): watch()", times[False], times[True]), flush=True)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--how", nargs="*", default=["ddp", "fsdp2"], choices=["ddp", "fsdp2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(args.ranks, free_port(), args), nprocs=args.ranks)


if __name__ == "__main__":
    main()

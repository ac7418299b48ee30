"""torch.distributed for every PyTorch adapter: who reports, how statistics and decisions are combined.

One place for the collective code shared by ``watch()``, the Lightning callback
and the Hugging Face callback. Every function is a no-op in a single process.
Collectives here run only on sampled steps, and every rank calls them at the
same steps: the sampling schedule depends only on the step number.
"""

from __future__ import annotations

from ._torch import torch


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def is_main() -> bool:
    """Only global rank 0 warns, prints and writes the summary."""
    return rank() == 0


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over all ranks (one all-reduce); ``values`` itself is unchanged."""
    if not active():
        return values
    total = values.clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total / world_size()


def agree(flags: list[float], device: torch.device | None = None) -> list[float]:
    """The element-wise maximum of ``flags`` over all ranks: any rank saying yes (1.0) makes it yes everywhere.

    Used for the decisions every rank must take together ("this sample is
    broken somewhere", "stop training"), so no rank waits alone in a collective.
    """
    if not active():
        return list(flags)
    values = torch.tensor(flags, dtype=torch.float64, device=device or _device())
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
    return values.tolist()


def _device() -> torch.device:
    """The device collectives of the default group expect (NCCL needs CUDA tensors)."""
    backend = torch.distributed.get_backend()
    if backend == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


__all__ = ["active", "agree", "is_main", "mean_across_ranks", "rank", "world_size"]

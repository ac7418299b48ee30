"""Imports PyTorch for the adapters, or fails with the exact install line; the hook wrapper and stacking buffers they share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

try:
    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError('gradwatch\'s PyTorch adapter needs PyTorch: pip install "gradwatch[torch]"') from exc


is_compiling: Callable[[], bool] = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling  # the former from torch 2.3


def norms(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norms along ``dim`` as float32, accumulated in float32 (half precision widened) or float64 (never narrowed)."""
    wide = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    result: torch.Tensor = torch.linalg.vector_norm(tensor, dim=dim, dtype=wide).float()
    return result


def foreach_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The norm of each tensor as float32, in one foreach pass unless a float64 tensor must be accumulated in float64."""
    if all(t.dtype != torch.float64 for t in tensors):
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    return [norms(t.reshape(-1), 0) for t in tensors]


class ModelHook:
    """A hook gradwatch registers on a module of the user's model.

    A module's hooks travel with it into ``torch.save(model)`` and
    ``copy.deepcopy(model)``, where a closure cannot be pickled (the save
    fails) or keeps reporting into this run (an EMA copy, say). A copy gets
    a no-op from the standard library instead: the saved model loads without
    gradwatch and the copy reports nothing.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return getattr, (contextlib.nullcontext(), "__exit__")  # takes any arguments, returns None


class StackBuffers:
    """Stacks like tensors along a new first axis into buffers kept per owner, count and shape (a fresh block
    at every sampled step costs page faults on CPU). ``limit``: buffers kept at most, for shapes that may keep
    changing (the old ones are dropped)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._kept: dict[tuple[Any, ...], torch.Tensor] = {}

    def stack(self, tensors: list[torch.Tensor], *, owner: Any = None) -> torch.Tensor:
        """The tensors stacked (at least two dimensions): a lone one as a view, several copied into a kept buffer. ``owner``: a buffer
        of its own, for a copy that must outlive the next stacking (otherwise buffers are shared scratch)."""
        if tensors[0].dim() == 0:  # scalars (a learnt temperature, say) stack as one-element rows
            tensors = [t.reshape(1) for t in tensors]
        if len(tensors) == 1:
            return tensors[0].unsqueeze(0)
        first = tensors[0]
        key = (owner, len(tensors), first.shape, first.dtype, first.device)
        buffer = self._kept.get(key)
        if buffer is None:
            if self.limit is not None and len(self._kept) >= self.limit:
                self._kept.clear()
            buffer = self._kept[key] = torch.empty((len(tensors), *first.shape), dtype=first.dtype, device=first.device)
        return torch.stack(tensors, out=buffer)


__all__ = ["ModelHook", "StackBuffers", "is_compiling", "register_optimizer_step_pre_hook", "torch"]

"""Imports PyTorch for the adapters, or fails with the exact install line; the hook wrapper they share."""

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


__all__ = ["ModelHook", "is_compiling", "register_optimizer_step_pre_hook", "torch"]

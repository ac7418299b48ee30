"""Which optimizer trains a watched model, for ``watch()``, whose loop may never name it.

The one given, else the first that steps one of the model's parameters; when
the loop moves on to another optimizer of the model (a second training stage),
it is followed once it steps twice with no step of the bound one in between.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from gradwatch.safety import FaultGuard

from ._torch import register_optimizer_step_pre_hook, torch
from .torch_cycle import COLLECTOR

Hook = Callable[[torch.optim.Optimizer, Any, Any], None]


class OptimizerBinding:
    """Calls ``pre`` and ``post`` around each step of the bound optimizer, and ``on_bind(optimizer, moved)``
    when it binds to one (``moved``: the loop left the optimizer bound before)."""

    def __init__(
        self, model: torch.nn.Module, guard: FaultGuard, pre: Hook, post: Hook, on_bind: Callable[[torch.optim.Optimizer, bool], None]
    ) -> None:
        self.model, self.guard = model, guard
        self._pre, self._post, self._on_bind = pre, post, on_bind
        self.optimizer: torch.optim.Optimizer | None = None
        self._other: tuple[torch.optim.Optimizer, int] | None = None  # another optimizer of the model, its steps in a row
        self._trains_model: weakref.WeakKeyDictionary[torch.optim.Optimizer, bool] = weakref.WeakKeyDictionary()
        self._hooks: list[Any] = []
        self._any_hook = register_optimizer_step_pre_hook(self._any_step)

    def bind(self, optimizer: torch.optim.Optimizer, *, moved: bool = False) -> None:
        self.remove(keep_following=True)
        self.optimizer = optimizer
        self._on_bind(optimizer, moved)
        self._hooks = [optimizer.register_step_pre_hook(self._pre_step), optimizer.register_step_post_hook(self._post)]

    def remove(self, *, keep_following: bool = False) -> None:
        """Remove the hooks (``keep_following``: all but the process-wide one)."""
        for handle in self._hooks if keep_following else [self._any_hook, *self._hooks]:
            handle.remove()
        self._hooks = []

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._other = None
        self._pre(optimizer, args, kwargs)

    def _any_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if optimizer is not self.optimizer:  # every optimizer step in the process comes here: kept cheap
            self.guard.run(COLLECTOR, self._follow, optimizer)

    def _follow(self, optimizer: torch.optim.Optimizer) -> None:
        """Another optimizer steps, before its own pre-hooks (so a first binding measures this very step)."""
        if optimizer not in self._trains_model:
            self._trains_model[optimizer] = trains(optimizer, self.model)
        if not self._trains_model[optimizer]:
            return
        if self.optimizer is None:
            self.bind(optimizer)
            return
        streak = self._other[1] + 1 if self._other is not None and self._other[0] is optimizer else 1
        self._other = (optimizer, streak)
        if streak == 2:
            self.bind(optimizer, moved=True)


def hookable(optimizer: Any) -> tuple[torch.optim.Optimizer | None, str | None]:
    """The torch optimizer to hook: the one given or the one inside a wrapper (Lightning's, say); for an
    optimizer class of the user's own (a ``step()`` but no ``torch.optim.Optimizer``): None and its name,
    to be measured like an update by hand. Anything else is a ``TypeError``."""
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return optimizer, None
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        return inner, None
    if callable(getattr(optimizer, "step", None)):
        return None, type(optimizer).__name__
    raise TypeError(f"optimizer must be a torch.optim.Optimizer, an object with a step() method, or None; got {type(optimizer).__name__}")


def trains(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> bool:
    """Whether ``optimizer`` steps any parameter of ``model``."""
    own = {id(p) for p in model.parameters()}
    return any(id(p) in own for group in optimizer.param_groups for p in group["params"])


__all__ = ["OptimizerBinding", "hookable", "trains"]

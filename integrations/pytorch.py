"""Plain PyTorch: ``watch(model, optimizer)`` and a ``Watcher`` that diagnoses the run.

    watcher = watch(model, optimizer, summary_path="gradwatch.json")
    for x, y in data:
        ...; loss.backward(); optimizer.step(); watcher.step(loss)
    report = watcher.close()     # console report + JSON summary

Gradients are read by optimizer step hooks (after backward, before the step),
update sizes across the step, activations by forward hooks. Unsampled steps
cost a few Python calls and one on-device addition for the loss.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import torch.optim.optimizer as optim_hooks

from gradwatch.detectors import Detector
from gradwatch.monitor import Monitor
from gradwatch.report import Report
from gradwatch.safety import FaultGuard

from ._torch import torch
from .torch_facts import model_facts
from .torch_stats import TorchCollector


class Watcher:
    """Watches one model (and the optimizer that trains it) until ``close()``.

    ``optimizer``: the optimizer to hook; ``None`` binds to the first optimizer
    that steps this model's parameters (it may be created after ``watch``).
    ``summary_path``: where the JSON summary is written on ``close()`` and, during
    the run, every ``autosave_every_n_steps`` steps (None: never).
    ``every_n_steps``: measure every n-th optimizer step, plus steps 1, 2, 4, …
    below n. ``warn_on``: lowest severity raised as a live ``GradWatchWarning``
    (None: none). ``print_report``: print the console report on ``close()``.
    ``strict``: re-raise gradwatch's own errors instead of disabling the part.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        summary_path: str | os.PathLike[str] | None = None,
        every_n_steps: int = 20,
        detectors: Sequence[Detector] | None = None,
        history_size: int = 128,
        warn_on: str | None = "warning",
        print_report: bool = True,
        autosave_every_n_steps: int | None = 500,
        strict: bool = False,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        self.guard = FaultGuard(strict=strict)
        self.model = model
        self.print_report = print_report
        self.collector = TorchCollector(model, guard=self.guard)
        self.monitor = Monitor(
            model_facts(model),
            framework="pytorch",
            every_n_steps=every_n_steps,
            detectors=detectors,
            history_size=history_size,
            warn_on=warn_on,
            guard=self.guard,
            summary_path=summary_path,
            autosave_every_n_steps=autosave_every_n_steps,
        )
        self.optimizer: torch.optim.Optimizer | None = None
        self.global_step = 0
        self._pending = False
        self._sampled = False
        self._handles: list[Any] = []
        self._report: Report | None = None
        self.collector.attach()
        if optimizer is not None:
            self._bind(optimizer)
        else:  # bind to the first optimizer that steps this model's parameters
            self._handles.append(optim_hooks.register_optimizer_step_pre_hook(self._global_pre_hook))

    # -- optimizer hooks -------------------------------------------------------------------
    def _bind(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.collector.set_trainable(params)
        trainable = set(self.collector.layer_names)
        self.monitor.facts = model_facts(self.model, trainable, optimizer)
        self._handles.append(optimizer.register_step_pre_hook(self._pre_hook))
        self._handles.append(optimizer.register_step_post_hook(self._post_hook))

    def _global_pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.optimizer is None and self.guard.enabled("pytorch collector"):
            own = {id(p) for p in self.model.parameters()}
            if any(id(p) in own for group in optimizer.param_groups for p in group["params"]):
                self.guard.run("pytorch collector", self._bind, optimizer)
                self._pre_hook(optimizer, args, kwargs)

    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._pending:  # the user did not call step(): flush without a loss
            self._flush()
        self._sampled = self.monitor.should_sample(self.global_step)
        if self._sampled:
            self.guard.run("pytorch collector", self.collector.capture_gradients)

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._sampled:
            self.guard.run("pytorch collector", self.collector.capture_updates)
            self._pending = True
        self.global_step += 1
        self.collector.sampling = self.monitor.should_sample(self.global_step)

    # -- public API ------------------------------------------------------------------------
    def step(self, loss: torch.Tensor | float | None = None) -> None:
        """Mark the end of a training step, with its loss (a tensor is never synced here)."""
        if loss is not None:
            self.guard.run("loss", self.collector.add_loss, loss)
        if self._pending:
            self._flush()

    def _flush(self) -> None:
        self._pending = False
        step = self.global_step - 1
        lr = _lr(self.optimizer)
        stats = self.guard.run("pytorch collector", self.collector.flush, step, lr)
        if stats is not None:
            self.monitor.observe(stats)

    def report(self) -> Report:
        """The diagnosis so far, without closing."""
        return self.monitor.report(self.global_step)

    def close(self) -> Report:
        """Remove every hook, print the console report, write the JSON summary; returns the report."""
        if self._report is not None:
            return self._report
        if self._pending:
            self._flush()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.collector.detach()
        report = self.monitor.save(self.global_step)
        if self.print_report:
            from gradwatch.console import print_report

            self.guard.run("console report", print_report, report)
        self._report = report
        return report

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.monitor.load_state_dict(state["monitor"])
        self.collector.sampling = self.monitor.should_sample(self.global_step)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def watch(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, **options: Any) -> Watcher:
    """Start diagnosing ``model``'s training; ``options`` are ``Watcher``'s keyword arguments."""
    return Watcher(model, optimizer, **options)


def _lr(optimizer: torch.optim.Optimizer | None) -> float | None:
    if optimizer is None or not optimizer.param_groups:
        return None
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (KeyError, TypeError, ValueError):
        return None


__all__ = ["Watcher", "watch"]

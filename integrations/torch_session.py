"""The measurement cycle of one PyTorch model, shared by ``watch()`` and the Lightning callback.

Adapters translate their framework's events into four calls per optimizer
step: ``begin_step`` (before forward), ``before_step`` (gradients final),
``add_loss`` and ``end_step`` (after the optimizer step); the session decides
what to measure and hands samples to the core ``Monitor``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from gradwatch.monitor import Monitor
from gradwatch.report import Report
from gradwatch.safety import FaultGuard
from gradwatch.stats import LayerStats, StepStats

from ._torch import torch
from .torch_facts import model_facts
from .torch_stats import TorchCollector

COLLECTOR = "pytorch collector"


class TorchSession:
    """A ``TorchCollector`` and a ``Monitor`` for one model, driven by optimizer steps."""

    def __init__(self, model: torch.nn.Module, *, framework: str, guard: FaultGuard, **monitor_options: Any) -> None:
        self.model = model
        self.guard = guard
        self.collector = TorchCollector(model, guard=guard)
        self.monitor = Monitor(model_facts(model), framework=framework, guard=guard, **monitor_options)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.skipped_steps = 0
        self._handles: list[Any] = []
        self._sampled = False  # this optimizer step is being measured
        self._stepped = False  # ... and its optimizer.step() really ran (an AMP scaler may skip it)
        self.collector.attach()

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Watch the parameters these optimizers train and learn their settings."""
        self.optimizers = list(optimizers)
        params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
        self.collector.set_trainable(params)
        first = self.optimizers[0] if self.optimizers else None
        self.monitor.facts = model_facts(self.model, set(self.collector.layer_names), first)
        self._handles += [optimizer.register_step_post_hook(self._after_step) for optimizer in self.optimizers]

    @property
    def pending(self) -> bool:
        """A sampled step's gradients were read and ``end_step`` has not run yet."""
        return self._sampled

    def begin_step(self, step: int) -> None:
        """Before the forward pass of optimizer step ``step``: arm the activation hooks if it is sampled."""
        self.collector.sampling = self.monitor.should_sample(step)

    def before_step(self, step: int, *, scale: float | None = None) -> None:
        """After backward, before ``optimizer.step()``: read gradients if ``step`` is sampled."""
        if self._sampled:  # several optimizers in one step: the first one's gradients are the sample
            return
        self._sampled = self.monitor.should_sample(step)
        self._stepped = False
        if self._sampled:
            self.guard.run(COLLECTOR, self.collector.capture_gradients, scale=scale)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._sampled and not self._stepped:
            self._stepped = True
            self.guard.run(COLLECTOR, self.collector.capture_updates)

    def add_loss(self, loss: torch.Tensor | float) -> None:
        self.guard.run("loss", self.collector.add_loss, loss)

    def end_step(
        self,
        step: int,
        *,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        lr: float | None = None,
        grad_scale: float | None = None,
    ) -> StepStats | None:
        """After the optimizer step: bring a sampled step to the host and diagnose it.

        ``lr``: the learning rate the step used, where the adapter knows it
        better than the optimizer's current one (a scheduler may have moved on).
        ``grad_scale``: multiply the measured gradient norms by it (undoes a
        clipping whose coefficient became known only after the gradients were read).
        """
        if not self._sampled:
            return None
        self._sampled = False
        if not self._stepped:  # the optimizer step was skipped: not evidence of anything
            self.skipped_steps += 1
            self.collector.discard()
            return None
        if lr is None and self.optimizers:
            lr = _lr(self.optimizers[0])
        stats = self.guard.run(COLLECTOR, self.collector.flush, step, lr, reduce)
        if stats is not None and grad_scale is not None:
            stats = replace(stats, layers=tuple(_scaled_grad(layer, grad_scale) for layer in stats.layers))
        if stats is not None:
            self.monitor.observe(stats)
        return stats

    def close(self, steps: int, *, print_report: bool) -> Report:
        """Remove every hook, write the summary, print the console report."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.collector.detach()
        if self.skipped_steps:
            self.monitor.notes.append(f"{self.skipped_steps} sampled step(s) skipped by the AMP grad scaler were ignored")
        report = self.monitor.save(steps)
        if print_report:
            from gradwatch.console import print_report as show

            self.guard.run("console report", show, report)
        return report


def _scaled_grad(layer: LayerStats, factor: float) -> LayerStats:
    return replace(layer, grad_norm=layer.grad_norm * factor) if layer.grad_norm is not None else layer


def _lr(optimizer: torch.optim.Optimizer) -> float | None:
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None

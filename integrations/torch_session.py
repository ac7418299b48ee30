"""The measurement cycle of one PyTorch model, shared by ``watch()`` and the Lightning callback.

Adapters translate their framework's events into four calls per optimizer
step: ``begin_step`` (before forward), ``before_step`` (gradients final),
``add_loss`` and ``end_step`` (after the optimizer step); the session decides
what to measure and hands samples to the core ``Monitor``. Loops that update
the weights by hand have no optimizer step to hook: ``arm_backward`` has the
backward pass itself deliver the gradients, and ``after_manual_update`` marks
the update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from gradwatch.monitor import Monitor
from gradwatch.report import MIN_SAMPLES_TO_CLEAR, Report
from gradwatch.safety import FaultGuard
from gradwatch.stats import StepStats

from ._torch import torch
from .torch_facts import loss_kind, model_facts
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
        self._backward_hook: Any = None
        self._loss_kind: str | None = None
        self.last_observed: int | None = None
        self.collector.attach()

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Watch the parameters these optimizers train and learn their settings."""
        self.optimizers = list(optimizers)
        params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
        self.collector.set_trainable(params)
        first = self.optimizers[0] if self.optimizers else None
        self.monitor.facts = replace(model_facts(self.model, set(self.collector.layer_names), first), loss=self._known_loss())
        self._handles += [optimizer.register_step_post_hook(self._after_step) for optimizer in self.optimizers]

    def begin_step(self, step: int) -> None:
        """Before the forward pass of optimizer step ``step``: arm the activation hooks if it is sampled."""
        self.collector.sampling = self.monitor.should_sample(step)

    def before_step(self, step: int, *, scale: float | None = None, grads: list[Any] | None = None) -> None:
        """After backward, before ``optimizer.step()``: read gradients if ``step`` is sampled."""
        if self._sampled:  # several optimizers in one step: the first one's gradients are the sample
            return
        self._sampled = self.monitor.should_sample(step)
        self._stepped = False
        if self._sampled:
            self.guard.run(COLLECTOR, self.collector.capture_gradients, scale=scale, grads=grads)

    def arm_backward(self, step: int, *, full: bool) -> None:
        """If ``step`` is sampled, have its backward pass hand the gradients over as it produces them.

        ``full``: take the whole sample from them (no optimizer step will be seen:
        the loop updates the weights by hand); otherwise only the total norm
        before any clipping the training code applies.
        """
        self.disarm()
        if not self.monitor.should_sample(step) or not self.collector.params or not self.guard.enabled(COLLECTOR):
            return

        def received(grads: Any) -> None:
            if full:
                self.before_step(step, grads=list(grads))
            else:
                self.collector.capture_backward_total(list(grads))

        hook = torch.autograd.graph.register_multi_grad_hook
        self._backward_hook = hook(self.collector.params, lambda grads: self.guard.run(COLLECTOR, received, grads))

    def disarm(self) -> None:
        """Remove the backward hook of ``arm_backward``, if any."""
        if self._backward_hook is not None:
            self._backward_hook.remove()
            self._backward_hook = None

    def after_manual_update(self) -> None:
        """The training code changed the weights itself: measure the update as if an optimizer had stepped."""
        self._after_step(None, (), {})

    def _after_step(self, optimizer: torch.optim.Optimizer | None, args: Any, kwargs: Any) -> None:
        if self._sampled and not self._stepped:
            self._stepped = True
            self.guard.run(COLLECTOR, self.collector.capture_updates)
            if not self.collector.has_gradients:  # a closure optimizer (LBFGS) made them inside step()
                self.guard.run(COLLECTOR, self.collector.capture_gradients, weights=False)

    def _known_loss(self) -> str | None:
        return self._loss_kind if self._loss_kind != "unknown" else None

    def add_loss(self, loss: torch.Tensor | float) -> None:
        if self._loss_kind is None and isinstance(loss, torch.Tensor) and loss.grad_fn is not None:
            self._loss_kind = self.guard.run("loss", loss_kind, loss) or "unknown"
            if self._loss_kind != "unknown":
                self.monitor.facts = replace(self.monitor.facts, loss=self._loss_kind)
        self.guard.run("loss", self.collector.add_loss, loss)

    def end_step(self, step: int, *, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepStats | None:
        """After the optimizer step: bring a sampled step to the host and diagnose it."""
        if not self._sampled:
            return None
        self._sampled = False
        if not self._stepped:  # the optimizer step was skipped: not evidence of anything
            self.skipped_steps += 1
            self.collector.discard()
            return None
        return self._observe(step, reduce)

    def final_sample(self, steps: int) -> None:
        """One last look when the run's last step was not sampled: weights, loss, gradients left in ``.grad``.

        It is kept when it shows NaN/Inf (a run that stopped itself on a NaN loss)
        or when the run is too short to judge without it; otherwise the last
        regular sample, with its activations, stays the latest evidence.
        """
        last = steps - 1
        if last < 0 or (self.last_observed is not None and self.last_observed >= last):
            return
        self._sampled = False
        self.guard.run(COLLECTOR, self.collector.capture_gradients)
        self._observe(last, None, keep=lambda stats: not stats.finite or self.monitor.samples < MIN_SAMPLES_TO_CLEAR)

    def _observe(
        self,
        step: int,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None,
        keep: Callable[[StepStats], bool] | None = None,
    ) -> StepStats | None:
        lr = _lr(self.optimizers[0]) if self.optimizers else None
        stats = self.guard.run(COLLECTOR, self.collector.flush, step, lr, reduce)
        if stats is not None and (keep is None or keep(stats)):
            self.last_observed = step
            self.monitor.observe(stats)
        return stats

    def close(self, steps: int, *, print_report: bool) -> Report:
        """Remove every hook, write the summary, print the console report."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.disarm()
        self.collector.detach()
        if self.skipped_steps:
            self.monitor.notes.append(f"{self.skipped_steps} sampled step(s) skipped by the AMP grad scaler were ignored")
        report = self.monitor.save(steps)
        if print_report:
            from gradwatch.console import print_report as show

            self.guard.run("console report", show, report)
        return report


def _lr(optimizer: torch.optim.Optimizer) -> float | None:
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None

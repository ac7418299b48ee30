"""Everyday mistakes in the training code, named from direct evidence (``report.MISTAKES``).

Each detector reads what the adapter saw of the training loop itself (what
``.grad`` held before backward, modules left in eval mode, parameters no
optimizer steps), the learning rate, or where the loss settled, and names the
mistake rather than the symptom it causes. Evidence must hold on
``min_consecutive`` sampled steps in a row; a sample that did not measure it
leaves the streak as it is.
"""

from __future__ import annotations

import math
import statistics
from typing import ClassVar

from ..facts import ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from .base import Detector, check_count, check_fraction, check_positive, fmt
from .loss import classes


class _Streak(Detector):
    """A mistake seen on ``min_consecutive`` samples in a row: ``evidence`` says whether a sample shows it
    (None: not measured on this sample)."""

    state: ClassVar[tuple[str, ...]] = ("streak",)

    def __init__(self, *, min_consecutive: int = 2) -> None:
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.streak = 0

    def seen(self, shown: bool | None) -> bool:
        """Count a sample's evidence; True once it has held long enough."""
        if shown is not None:
            self.streak = self.streak + 1 if shown else 0
        return bool(shown) and self.streak >= self.min_consecutive


class GradientsNotCleared(_Streak):
    """``.grad`` still holds earlier gradients when a step's first backward begins: no ``zero_grad()`` between
    optimizer steps (intended accumulation clears once per optimizer step, so it is never flagged)."""

    symptom = "gradients_not_cleared"

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        stale = sample.stale_grad if finite(sample.stale_grad) else None
        if not self.seen(None if stale is None else stale > 1e-6):
            return None
        return self.finding(
            sample,
            "warning",
            [],
            f"gradients are never cleared: when step {sample.step}'s backward began, .grad still held {fmt(stale)}× the gradient "
            "that backward added, left from earlier steps, so every optimizer step applies the sum of all past gradients "
            "(zero_grad() is missing from the loop)",
            stale_grad=stale,
        )


class EvalModeTraining(_Streak):
    """BatchNorm or Dropout layers in eval mode while the optimizer steps (``model.eval()`` left on)."""

    symptom = "eval_mode_training"

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if not self.seen(bool(sample.eval_modules)):
            return None
        names = sample.eval_modules
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return self.finding(
            sample,
            "warning",
            list(names),
            f"the model trains in eval mode: {shown} behave as at inference while the optimizer steps (BatchNorm keeps "
            "its frozen running statistics, Dropout drops nothing); model.eval() was left on, model.train() not called again",
        )


class ParamsNotInOptimizer(_Streak):
    """Parameters that get gradients but belong to no optimizer and never change (a layer added after the
    optimizer was built)."""

    symptom = "params_not_in_optimizer"

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if not self.seen(bool(sample.orphan_layers)):
            return None
        names = sample.orphan_layers
        return self.finding(
            sample,
            "warning",
            list(names),
            f"{', '.join(names[:3])}{' …' if len(names) > 3 else ''} get gradients but their parameters are in no optimizer "
            "param group, so they never change (added to the model after the optimizer was built?)",
        )


class LearningRateCollapse(Detector):
    """The learning rate fell below ``floor`` of its peak and the run has spent at least as many steps there as
    it took to fall: a schedule that ends the run early (per-epoch schedule stepped per batch). A schedule
    that reaches zero at the run's end is never flagged."""

    symptom = "lr_schedule_collapse"
    state = ("peak", "peak_step", "fallen_at", "fallen_lr")

    def __init__(self, *, floor: float = 1e-3) -> None:
        self.floor = check_fraction("floor", floor)
        self.peak: float | None = None
        self.peak_step = 0
        self.fallen_at: int | None = None
        self.fallen_lr: float | None = None

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        lr = sample.lr
        if lr is None or not math.isfinite(lr) or lr < 0:
            return None
        if self.peak is None or lr > self.peak:
            self.peak, self.peak_step, self.fallen_at = lr, sample.step, None
            return None
        if lr > self.peak * self.floor:
            self.fallen_at = None
            return None
        if self.fallen_at is None:
            self.fallen_at, self.fallen_lr = sample.step, lr
        falling = max(self.fallen_at - self.peak_step, 1)
        if sample.step - self.fallen_at < falling or self.peak <= 0:
            return None
        per_step = (max(self.fallen_lr or 0.0, 1e-300) / self.peak) ** (1 / falling)
        return self.finding(
            sample,
            "warning",
            [],
            f"the learning-rate schedule fell from {fmt(self.peak)} at step {self.peak_step} to {fmt(self.fallen_lr)} by step "
            f"{self.fallen_at} (×{fmt(per_step)} per step) and has stayed negligible for {sample.step - self.fallen_at} steps: "
            "the weights barely move for the rest of the run (a scheduler meant per epoch stepped every batch?)",
            peak_lr=self.peak,
            lr=lr,
            fallen_at=self.fallen_at,
            per_step=per_step,
        )


class ChanceLevelLoss(Detector):
    """A classification loss that stays at the chance level ln(classes) while the weights keep moving: nothing
    in the inputs predicts the labels (inputs and labels no longer paired, or a label column of noise).

    Judged from ``min_step`` on, over at least ``min_samples`` sampled losses: the median of the latest three
    within ``tolerance`` of ln(classes) and no sample after the first below ``1 - tolerance`` of it, while
    the median relative update is at least ``min_update`` (smaller steps are stagnation, not this)."""

    symptom = "chance_level_loss"
    state = ("losses", "updates")

    def __init__(self, *, min_step: int = 100, min_samples: int = 6, tolerance: float = 0.05, min_update: float = 1e-5) -> None:
        self.min_step = check_count("min_step", min_step)
        self.min_samples = check_count("min_samples", min_samples)
        self.tolerance = check_fraction("tolerance", tolerance)
        self.min_update = check_positive("min_update", min_update)
        self.losses: list[float] = []
        self.updates: list[float] = []

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        count = classes(facts)
        if count is None or not finite(sample.loss):
            return None
        self.losses.append(float(sample.loss or 0.0))
        moved = [layer.relative_update for layer in sample.layers if finite(layer.relative_update)]
        if moved:
            self.updates.append(statistics.median(moved))
        chance = math.log(count)
        recent = statistics.median(self.losses[-3:])
        never_below = min(self.losses[1:], default=chance) >= (1 - self.tolerance) * chance
        moving = not self.updates or statistics.median(self.updates[-3:]) >= self.min_update
        if sample.step < self.min_step or len(self.losses) < self.min_samples:
            return None
        if not (abs(recent - chance) <= self.tolerance * chance and never_below and moving):
            return None
        update = f" while the weights keep moving (median |ΔW|/|W| {fmt(statistics.median(self.updates[-3:]))} per step)" if self.updates else ""
        return self.finding(
            sample,
            "warning",
            [],
            f"the loss has stayed at the chance level for {count} classes, ln {count} = {fmt(chance)} (now {fmt(recent)}), "
            f"through step {sample.step}{update}: nothing in the inputs predicts the labels; are inputs and labels still paired "
            "(shuffled apart, a view() where permute() was meant, the wrong label column)?",
            chance=chance,
            loss=recent,
            classes=count,
        )


__all__ = ["ChanceLevelLoss", "EvalModeTraining", "GradientsNotCleared", "LearningRateCollapse", "ParamsNotInOptimizer"]

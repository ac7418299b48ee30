"""Everyday mistakes in the training code, named from direct evidence (each declares itself a mistake).

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
from ..symptoms import Symptom
from .base import Detector, check_count, check_fraction, check_positive, fmt
from .loss import LossTrack, chance_level, classes


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

    declares = Symptom(
        "gradients_not_cleared", remedies={"clear_gradients": 1.0}, mistake=True, as_cause="gradients are never cleared: zero_grad() is missing"
    )

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

    declares = Symptom("eval_mode_training", remedies={"train_mode": 1.0}, mistake=True, as_cause="the model trains in eval mode")

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if not self.seen(bool(sample.eval_modules)):
            return None
        names = sample.eval_modules
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return self.finding(
            sample,
            "warning",
            list(names),
            f"the model trains in eval mode: {shown} {'behaves' if len(names) == 1 else 'behave'} as at inference while the optimizer steps (BatchNorm keeps "
            "its frozen running statistics, Dropout drops nothing); model.eval() was left on, model.train() not called again",
        )


class ParamsNotInOptimizer(_Streak):
    """Parameters that get gradients but belong to no optimizer and never change (a layer added after the
    optimizer was built)."""

    declares = Symptom("params_not_in_optimizer", remedies={"add_to_optimizer": 1.0}, mistake=True)

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if not self.seen(bool(sample.orphan_layers)):
            return None
        names = sample.orphan_layers
        return self.finding(
            sample,
            "warning",
            list(names),
            f"{', '.join(names[:3])}{' …' if len(names) > 3 else ''} {'gets' if len(names) == 1 else 'get'} gradients but "
            f"{'its' if len(names) == 1 else 'their'} parameters are in no optimizer param group, so they never change "
            "(added to the model after the optimizer was built?)",
        )


NEAR_ZERO = 0.005  # a learning rate this share of its peak or less is a trough (a cyclic schedule's floor is rarely this low)
CLIMB_STEPS = 3  # ... left by a climb over at least this many steps back to half the peak: a cycle, not a restart
MAX_PERIOD = 500  # cycles of at most this many steps on average are a schedule run through once per batch


class LrCycles:
    """Counts, from the learning rate of every optimizer step (fed by the adapter, no device involved), the
    times it fell to ``NEAR_ZERO`` of its peak and climbed back to half the peak over ``CLIMB_STEPS`` steps or
    more: what a cosine schedule sized in epochs does when stepped every batch. A warm restart (one step back
    up) and a warmup (no fall before it) are no cycle."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.climbing: int | None = None  # steps climbed since the latest trough (None: not in a trough)
        self.previous = math.inf
        self.count = 0

    def see(self, lr: float) -> None:
        if not math.isfinite(lr) or lr < 0:
            return
        if lr <= NEAR_ZERO * self.peak:
            self.climbing = 0
        elif self.climbing is not None:
            self.climbing = self.climbing + 1 if lr > self.previous else 0
            if lr >= 0.5 * self.peak:
                self.count += self.climbing >= CLIMB_STEPS
                self.climbing = None
        self.peak, self.previous = max(self.peak, lr), lr


class LearningRateCollapse(Detector):
    """The learning rate fell below ``floor`` of its peak and the run has spent at least as many steps there as
    it took to fall: a schedule that ends the run early (per-epoch schedule stepped per batch). A schedule
    that reaches zero at the run's end is never flagged. Or the learning rate has cycled (``LrCycles``) at least
    ``cycles`` times, every ``MAX_PERIOD`` steps or faster: a cosine schedule sized in epochs stepped per batch."""

    declares = Symptom(
        "lr_schedule_collapse",
        remedies={"fix_schedule": 1.0},
        mistake=True,
        supersedes=("raise_lr",),
        as_cause="the learning-rate schedule collapsed early",
    )
    state = ("peak", "peak_step", "fallen_at", "fallen_lr")

    def __init__(self, *, floor: float = 1e-3, cycles: int = 2) -> None:
        self.floor = check_fraction("floor", floor)
        self.cycles = check_count("cycles", cycles)
        self.peak: float | None = None
        self.peak_step = 0
        self.fallen_at: int | None = None
        self.fallen_lr: float | None = None

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        cycles = sample.lr_cycles or 0
        if cycles >= self.cycles and (sample.step + 1) / cycles <= MAX_PERIOD:
            return self.finding(
                sample,
                "warning",
                [],
                f"the learning rate fell to near zero and climbed back {cycles} times in the first {sample.step + 1} steps: "
                "a schedule meant to run its course once, sized in epochs (CosineAnnealingLR's T_max, say), is stepped "
                "every batch",
                cycles=cycles,
            )
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
    """A classification loss that stays flat at the chance level ln(classes) while the weights take normal-size
    steps: nothing in the inputs predicts the labels (inputs and labels no longer paired, a label column of noise).

    Judged from ``min_step`` on, over at least ``min_samples`` sampled losses: the median of the latest three
    within ``tolerance`` of ln(classes), no sample after the first below ``1 - tolerance`` of it, no fall of
    ``min_fall`` of it or more since the middle of the run so far (a slow start still falls), and a median
    relative update of at least ``min_update`` (a healthy step's size; smaller steps explain a slow start).
    """

    declares = Symptom("chance_level_loss", remedies={"pair_inputs_and_labels": 1.0}, mistake=True, as_cause="the loss sits at the chance level")
    state = ("losses", "updates")

    def __init__(
        self, *, min_step: int = 150, min_samples: int = 8, tolerance: float = 0.05, min_fall: float = 0.02, min_update: float = 1e-3
    ) -> None:
        self.min_step = check_count("min_step", min_step)
        self.min_samples = check_count("min_samples", min_samples)
        self.tolerance = check_fraction("tolerance", tolerance)
        self.min_fall = check_fraction("min_fall", min_fall)
        self.min_update = check_positive("min_update", min_update)
        self.losses: list[tuple[int, float]] = []  # (step, loss)
        self.updates: list[float] = []

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        count = classes(facts)
        if count is None or sample.loss is None or not math.isfinite(sample.loss):
            return None
        self.losses.append((sample.step, sample.loss))
        moved = [layer.relative_update for layer in sample.layers if finite(layer.relative_update)]
        if moved:
            self.updates.append(statistics.median(moved))
        if sample.step < self.min_step or len(self.losses) < self.min_samples:
            return None
        if facts.init_far_off:  # an output scaled to nothing (or to everything) sits at chance too: init_scale names it
            return None
        chance = math.log(count)
        recent = statistics.median(loss for _, loss in self.losses[-3:])
        middle = [loss for step, loss in self.losses if sample.step / 2 <= step < 3 * sample.step / 4] or [recent]
        update = statistics.median(self.updates[-3:]) if self.updates else None
        at_chance = abs(recent - chance) <= self.tolerance * chance and min(loss for _, loss in self.losses[1:]) >= (1 - self.tolerance) * chance
        flat = statistics.median(middle) - recent < self.min_fall * chance
        if not (at_chance and flat and update is not None and update >= self.min_update):
            return None
        return self.finding(
            sample,
            "warning",
            [],
            f"the loss has stayed at the chance level for {count} classes, ln {count} = {fmt(chance)} (now {fmt(recent)}), "
            f"through step {sample.step} while the weights take normal-size steps (median |ΔW|/|W| {fmt(update)}): the model "
            "has learnt nothing that relates inputs to labels; check that inputs and labels are still paired (shuffled apart, "
            "a reshape where a transpose was meant, the wrong label column)",
            chance=chance,
            loss=recent,
            classes=count,
            relative_update=update,
        )


class FrozenModel(Detector):
    """Nearly the whole model frozen (``ModelFacts.mostly_frozen``: at most 5% of the weights train) while the loss has improved by less than
    ``min_improvement`` from ``min_step`` on: the layers that would have to adapt cannot."""

    declares = Symptom("frozen_model", remedies={"unfreeze": 1.0}, mistake=True)
    state = ("losses",)

    def __init__(self, *, min_step: int = 100, min_improvement: float = 0.3) -> None:
        self.min_step = check_count("min_step", min_step)
        self.min_improvement = check_fraction("min_improvement", min_improvement)
        self.losses = LossTrack()

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if not facts.mostly_frozen:
            return None
        if finite(sample.loss):
            self.losses.add(sample.loss or 0.0)
        improvement = self.losses.improvement(chance_level(facts))
        if sample.step < self.min_step or improvement is None or improvement >= self.min_improvement:
            return None
        trainable = [layer.name for layer in facts.trainable_layers]
        return self.finding(
            sample,
            "warning",
            trainable,
            f"only {len(trainable)} of the model's {facts.depth} layers train ({', '.join(trainable[:3])}{' …' if len(trainable) > 3 else ''}; "
            f"the rest are frozen) and the loss has fallen {fmt(100 * max(improvement, 0.0))}% by step {sample.step}: the frozen "
            "layers cannot adapt to this task (requires_grad=False or trainable=False on more than was meant?)",
            improvement=improvement,
            trainable_layers=len(trainable),
        )


__all__ = ["ChanceLevelLoss", "EvalModeTraining", "FrozenModel", "GradientsNotCleared", "LearningRateCollapse", "ParamsNotInOptimizer"]

"""``early_stagnation``: the loss has not moved since the start while the weights barely change."""

from __future__ import annotations

import statistics

from ..facts import ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from .base import Detector, check_count, check_fraction, check_positive, fmt


class EarlyStagnation(Detector):
    """Flags a run that has not improved its loss by ``min_improvement`` since its first sample.

    Counted samples: step ≥ ``min_steps`` is not required to count, but a
    finding needs ``patience`` consecutive samples where the loss improvement
    over the first loss stays under ``min_improvement`` (relative), the median
    relative update ``|ΔW|/|W|`` is under ``max_relative_update`` (TheDeepChecker
    calls below 1e-4 too slow) and the learning rate is not rising (a warmup
    is not stagnation). Once the run has improved, the detector retires: a late
    plateau after converging is not early stagnation.
    """

    symptom = "early_stagnation"
    state = ("first_loss", "best_loss", "streak", "previous_lr", "retired")

    def __init__(
        self,
        *,
        min_improvement: float = 0.05,
        max_relative_update: float = 1e-4,
        patience: int = 4,
        min_steps: int = 40,
    ) -> None:
        self.min_improvement = check_fraction("min_improvement", min_improvement)
        self.max_relative_update = check_positive("max_relative_update", max_relative_update)
        self.patience = check_count("patience", patience)
        self.min_steps = check_count("min_steps", min_steps)
        self.first_loss: float | None = None
        self.best_loss: float | None = None
        self.previous_lr: float | None = None
        self.streak = 0
        self.retired = False

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if self.retired or not finite(sample.loss):
            return None
        loss: float = sample.loss  # type: ignore[assignment]
        if self.first_loss is None:
            self.first_loss = self.best_loss = loss
        self.best_loss = min(self.best_loss, loss)  # type: ignore[type-var]
        improvement = (self.first_loss - self.best_loss) / max(abs(self.first_loss), 1e-12)
        if improvement >= self.min_improvement or abs(self.first_loss) < 1e-8:
            self.retired = True
            return None

        warming_up = finite(sample.lr) and finite(self.previous_lr) and sample.lr > self.previous_lr  # type: ignore[operator]
        self.previous_lr = sample.lr
        updates = [s.relative_update for s in sample.layers if finite(s.relative_update)]
        median_update = statistics.median(updates) if updates else None
        if warming_up or median_update is None or median_update >= self.max_relative_update:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.patience or sample.step < self.min_steps:
            return None
        lr = f" at learning rate {fmt(sample.lr)}" if finite(sample.lr) else ""
        return self.finding(
            sample,
            "warning",
            [],
            f"loss {fmt(loss)} is within {fmt(100 * improvement)}% of its first value {fmt(self.first_loss)} "
            f"after {sample.step} steps; median relative update {fmt(median_update)} per step{lr}",
            first_loss=self.first_loss,
            loss=loss,
            improvement=improvement,
            median_relative_update=median_update,
            lr=sample.lr,
            samples_in_a_row=self.streak,
        )

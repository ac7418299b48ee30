"""``exploding_gradients``: updates as large as the weights, or gradients far above where they started."""

from __future__ import annotations

import math
import statistics

from ..facts import ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from .base import Detector, check_count, check_positive, fmt


class ExplodingGradients(Detector):
    """Flags steps that rewrite the weights, or a gradient norm that keeps growing.

    Rules (either, on ``min_consecutive`` sampled steps in a row):
    some layer's relative update ``|ΔW|/|W|`` exceeds ``max_relative_update``
    (an update as large as the weights themselves; healthy is about 1e-3), or
    the total gradient norm exceeds ``max_growth`` times its median over the
    first ``baseline_samples`` samples. Ten times either limit is critical.
    """

    symptom = "exploding_gradients"
    state = ("streak", "baseline")

    def __init__(
        self,
        *,
        max_relative_update: float = 1.0,
        max_growth: float = 100.0,
        baseline_samples: int = 3,
        min_consecutive: int = 2,
    ) -> None:
        self.max_relative_update = check_positive("max_relative_update", max_relative_update)
        self.max_growth = check_positive("max_growth", max_growth)
        self.baseline_samples = check_count("baseline_samples", baseline_samples)
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.streak = 0
        self.baseline: list[float] = []

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        grads = [s.grad_norm for s in sample.layers if finite(s.grad_norm)]
        if not grads:
            return None
        total = math.sqrt(sum(g * g for g in grads))
        if len(self.baseline) < self.baseline_samples:
            self.baseline.append(total)
            reference = None
        else:
            reference = statistics.median(self.baseline)
        growth = total / reference if reference else None

        updates = {s.name: s.relative_update for s in sample.layers if finite(s.relative_update)}
        big_updates = {n: u for n, u in updates.items() if u > self.max_relative_update}  # type: ignore[operator]
        growing = growth is not None and growth > self.max_growth
        if not big_updates and not growing:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.min_consecutive:
            return None

        worst_update = max(big_updates.values(), default=None)
        critical = (worst_update or 0.0) > 10 * self.max_relative_update or (growth or 0.0) > 10 * self.max_growth
        parts = []
        if big_updates:
            name = max(big_updates, key=big_updates.__getitem__)
            parts.append(f"{name} changes by {fmt(worst_update)}× its own norm in one step")
        if growing:
            parts.append(f"total gradient norm {fmt(total)} is {fmt(growth)}× its early level {fmt(reference)}")
        layers = list(big_updates) or [s.name for s in sample.layers]
        return self.finding(
            sample,
            "critical" if critical else "warning",
            layers,
            "; ".join(parts),
            grad_norm_total=total,
            grad_norm_baseline=reference,
            growth=growth,
            relative_update=updates,
            samples_in_a_row=self.streak,
        )

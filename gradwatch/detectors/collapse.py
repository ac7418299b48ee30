"""``weight_collapse``: a layer's weights shrink to a small fraction of where they started."""

from __future__ import annotations

from ..facts import ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from .base import Detector, check_count, check_fraction, fmt


class WeightCollapse(Detector):
    """Flags layers whose weight norm fell below ``min_fraction`` of its starting level.

    The starting level is the largest norm over the first ``baseline_samples``
    samples (the first sample is taken after one update, which a huge
    regularizer may already have wiped out). The fall must hold on
    ``min_consecutive`` sampled steps in a row; below
    ``min_fraction ** 2`` it is critical. Ordinary weight decay shrinks weights
    by a few percent over a run and stays far from the default 10%. Layers
    that start at (almost) zero are skipped.
    """

    symptom = "weight_collapse"
    state = ("initial", "streak", "samples")

    def __init__(
        self, *, min_fraction: float = 0.1, min_consecutive: int = 2, baseline_samples: int = 3, min_initial_norm: float = 1e-6
    ) -> None:
        self.min_fraction = check_fraction("min_fraction", min_fraction)
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.baseline_samples = check_count("baseline_samples", baseline_samples)
        self.samples = 0
        self.min_initial_norm = min_initial_norm
        self.initial: dict[str, float] = {}
        self.streak = 0

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        fractions: dict[str, float] = {}
        self.samples += 1
        for layer in sample.layers:
            if not finite(layer.weight_norm):
                continue
            start = self.initial.setdefault(layer.name, layer.weight_norm)  # type: ignore[arg-type]
            if self.samples <= self.baseline_samples:
                start = self.initial[layer.name] = max(start, layer.weight_norm)  # type: ignore[type-var]
            if start > self.min_initial_norm:
                fractions[layer.name] = layer.weight_norm / start  # type: ignore[operator]
        collapsed = {name: f for name, f in fractions.items() if f < self.min_fraction}
        if not collapsed:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.min_consecutive:
            return None
        worst = min(collapsed, key=collapsed.__getitem__)
        severity = "critical" if collapsed[worst] < self.min_fraction**2 else "warning"
        return self.finding(
            sample,
            severity,
            list(collapsed),
            f"{len(collapsed)} of {len(fractions)} layers kept under {fmt(self.min_fraction)} of their initial "
            f"weight norm; {worst} is at {fmt(collapsed[worst])}× (norm {fmt(self.initial[worst] * collapsed[worst])} "
            f"from {fmt(self.initial[worst])})",
            fraction_of_initial=fractions,
            samples_in_a_row=self.streak,
        )

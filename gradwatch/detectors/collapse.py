"""``weight_collapse``: a layer's weights shrink to a small fraction of where they started."""

from __future__ import annotations

from ..facts import ModelFacts
from ..report import Finding, Severity
from ..stats import StepStats, finite
from ..symptoms import Symptom
from .base import Detector, check_count, check_fraction, fmt

WEIGHT_COLLAPSE = Symptom("weight_collapse", remedies={"reduce_weight_decay": 1.0, "lower_lr": 0.4}, names_causes=False)


class WeightCollapse(Detector):
    """Flags layers whose weight norm fell below ``min_fraction`` of its starting level.

    The starting level is the largest norm over the first ``baseline_samples``
    samples (the first sample is taken after one update, which a huge
    regularizer may already have wiped out). The fall must hold on
    ``min_consecutive`` sampled steps in a row; below
    ``min_fraction ** 2`` it is critical. Ordinary weight decay shrinks weights
    by a few percent over a run and stays far from the default 10%. Layers
    that start at (almost) zero are skipped.

    A collapse under way is flagged before it is complete when the model has
    a pull towards zero (weight decay or an L2/L1 regularizer in its facts):
    every layer below ``shrinking_fraction`` of its start, each smaller than
    at the previous sample, on ``min_consecutive`` samples in a row.
    """

    declares = WEIGHT_COLLAPSE
    state = ("initial", "streak", "samples", "previous", "shrink_streak")

    def __init__(
        self,
        *,
        min_fraction: float = 0.1,
        shrinking_fraction: float = 0.5,
        min_consecutive: int = 2,
        baseline_samples: int = 3,
        min_initial_norm: float = 1e-6,
    ) -> None:
        self.min_fraction = check_fraction("min_fraction", min_fraction)
        self.shrinking_fraction = check_fraction("shrinking_fraction", shrinking_fraction)
        self.previous: dict[str, float] = {}
        self.shrink_streak = 0
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
            start = self.initial.setdefault(layer.name, layer.weight_norm)
            if self.samples <= self.baseline_samples:
                start = self.initial[layer.name] = max(start, layer.weight_norm)
            if start > self.min_initial_norm:
                fractions[layer.name] = layer.weight_norm / start
        collapsed = {name: f for name, f in fractions.items() if f < self.min_fraction}
        norms = {name: fraction * self.initial[name] for name, fraction in fractions.items()}
        pulled = bool(facts.regularized) or bool(facts.weight_decay)
        shrinking = (
            pulled
            and self.samples > self.baseline_samples
            and bool(fractions)
            and all(f < self.shrinking_fraction for f in fractions.values())
            and all(name in self.previous and norm < self.previous[name] for name, norm in norms.items())
        )
        self.previous = norms
        self.shrink_streak = self.shrink_streak + 1 if shrinking else 0
        if not collapsed and self.shrink_streak >= self.min_consecutive:
            worst = min(fractions, key=fractions.__getitem__)
            return self.finding(
                sample,
                "warning",
                list(fractions),
                f"every layer's weights keep shrinking under the model's pull towards zero; all are under "
                f"{fmt(self.shrinking_fraction)} of their initial norm, {worst} at {fmt(fractions[worst])}×",
                fraction_of_initial=fractions,
                samples_in_a_row=self.shrink_streak,
            )
        if not collapsed:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.min_consecutive:
            return None
        worst = min(collapsed, key=collapsed.__getitem__)
        severity: Severity = "critical" if collapsed[worst] < self.min_fraction**2 else "warning"
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

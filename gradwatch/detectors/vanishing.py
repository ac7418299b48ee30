"""``vanishing_gradients``: the bottom of the network gets orders of magnitude less gradient than the top."""

from __future__ import annotations

import math

from ..facts import SATURATING, ModelFacts
from ..report import Finding
from ..stats import StepStats, finite, ratio
from .base import Detector, check_count, check_fraction, fmt


class VanishingGradients(Detector):
    """Flags a sustained collapse of the relative gradient from top to bottom.

    Rule: ``(|g|/|W|)`` of the first trainable layer is below ``max_ratio``
    times that of the last one on ``min_consecutive`` sampled steps in a row,
    in a model with at least ``min_layers`` trainable layers. When update sizes
    are known, the bottom must also barely move (``|ΔW|/|W|`` ratio below
    ``max_ratio``); if an adaptive optimizer compensates, the finding is only
    ``info``. Below ``max_ratio ** 2`` it is critical. Layers whose gradient is
    exactly zero are dead, not vanishing (see ``dead_relu``) and are skipped.
    Defaults after AUTOTRAINER's first/last gradient-norm ratio of 1e-3.
    """

    symptom = "vanishing_gradients"
    state = ("streak",)

    def __init__(self, *, max_ratio: float = 1e-3, min_consecutive: int = 3, min_layers: int = 3) -> None:
        self.max_ratio = check_fraction("max_ratio", max_ratio)
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.min_layers = check_count("min_layers", min_layers)
        self.streak = 0

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        layers = [s for s in sample.layers if finite(s.relative_grad) and s.grad_norm]
        if len(layers) < self.min_layers:
            return None
        bottom, top = layers[0], layers[-1]
        grad_ratio = ratio(bottom.relative_grad, top.relative_grad)
        if grad_ratio is None or grad_ratio >= self.max_ratio:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.min_consecutive:
            return None

        update_ratio = ratio(bottom.relative_update, top.relative_update)
        compensated = update_ratio is not None and update_ratio >= self.max_ratio
        severity = "info" if compensated else "critical" if grad_ratio < self.max_ratio**2 else "warning"
        top_grad = top.relative_grad or 0.0
        affected = [s.name for s in layers[:-1] if (s.relative_grad or 0.0) < self.max_ratio * top_grad]
        gain = grad_ratio ** (1.0 / (len(layers) - 1))
        message = (
            f"relative gradient |g|/|W| of {bottom.name} is {fmt(bottom.relative_grad)} vs "
            f"{fmt(top_grad)} at {top.name} (ratio {fmt(grad_ratio)}, about ×{fmt(gain)} per layer going down)"
        )
        if compensated:
            message += f"; the optimizer still moves {bottom.name} (update ratio {fmt(update_ratio)})"
        elif update_ratio is not None:
            message += f"; {bottom.name} moves {fmt(bottom.relative_update)} per step vs {fmt(top.relative_update)}"
        return self.finding(
            sample,
            severity,
            affected,
            message,
            bottom=bottom.name,
            top=top.name,
            grad_ratio=grad_ratio,
            update_ratio=update_ratio,
            gain_per_layer=gain,
            relative_grad={s.name: s.relative_grad for s in layers},
            relative_update={s.name: s.relative_update for s in layers},
            saturated_share=_saturation(sample, facts),
            samples_in_a_row=self.streak,
        )


def _saturation(sample: StepStats, facts: ModelFacts) -> dict[str, float]:
    """Mechanism evidence: share of saturated sigmoid/tanh outputs per activation."""
    return {
        a.name: a.saturated_share
        for a in sample.activations
        if a.kind in SATURATING and a.saturated_share is not None and math.isfinite(a.saturated_share)
    }



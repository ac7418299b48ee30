"""One detector per symptom: pure rules over sampled steps plus a little state."""

from __future__ import annotations

from .base import Detector
from .collapse import WeightCollapse
from .dead_relu import DeadReLU
from .exploding import ExplodingGradients
from .nonfinite import NonFinite
from .stagnation import EarlyStagnation
from .vanishing import VanishingGradients


def default_detectors() -> list[Detector]:
    """A fresh detector for each of the six symptoms, with default thresholds."""
    return [NonFinite(), ExplodingGradients(), VanishingGradients(), DeadReLU(), WeightCollapse(), EarlyStagnation()]


__all__ = [
    "DeadReLU",
    "Detector",
    "EarlyStagnation",
    "ExplodingGradients",
    "NonFinite",
    "VanishingGradients",
    "WeightCollapse",
    "default_detectors",
]

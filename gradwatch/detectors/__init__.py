"""One detector per symptom or mistake: pure rules over sampled steps plus a little state."""

from __future__ import annotations

from .base import Detector
from .collapse import WeightCollapse
from .dead_relu import DeadReLU
from .exploding import ExplodingGradients
from .mistakes import ChanceLevelLoss, EvalModeTraining, FrozenModel, GradientsNotCleared, LearningRateCollapse, ParamsNotInOptimizer
from .nonfinite import NonFinite
from .spike import DivergenceForecast, LossSpike
from .stagnation import EarlyStagnation
from .vanishing import VanishingGradients


def default_detectors() -> list[Detector]:
    """A fresh detector for each symptom and each mistake seen from the training loop, with default thresholds."""
    symptoms: list[Detector] = [NonFinite(), ExplodingGradients(), VanishingGradients(), DeadReLU(), WeightCollapse(), EarlyStagnation()]
    symptoms += [LossSpike(), DivergenceForecast()]
    mistakes = [GradientsNotCleared(), EvalModeTraining(), ParamsNotInOptimizer(), LearningRateCollapse(), ChanceLevelLoss(), FrozenModel()]
    return symptoms + mistakes


__all__ = [
    "ChanceLevelLoss",
    "DeadReLU",
    "Detector",
    "DivergenceForecast",
    "EarlyStagnation",
    "EvalModeTraining",
    "ExplodingGradients",
    "FrozenModel",
    "GradientsNotCleared",
    "LearningRateCollapse",
    "LossSpike",
    "NonFinite",
    "ParamsNotInOptimizer",
    "VanishingGradients",
    "WeightCollapse",
    "default_detectors",
]

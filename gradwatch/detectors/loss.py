"""The loss as evidence: sampled losses are single noisy batches, so both ends of a run are medians."""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..facts import MULTICLASS, ModelFacts

AT_CHANCE = 0.95  # a loss above this share of the chance level has learnt nothing


def classes(facts: ModelFacts) -> int | None:
    """The number of classes of a classification loss over the output layer's units, where the facts tell."""
    units = facts.layers[-1].units if facts.layers else None
    multiclass = (facts.loss or "").removesuffix("_from_logits") in MULTICLASS
    return units if multiclass and units is not None and units >= 2 else None


def chance_level(facts: ModelFacts) -> float | None:
    """The loss of a classifier that predicts nothing from its inputs: ln(classes)."""
    count = classes(facts)
    return math.log(count) if count is not None else None


class LossTrack:
    """The median of the first ``early`` sampled losses and of the latest ``recent`` ones.

    The two ends are compared only once they no longer overlap (``ready``).
    """

    def __init__(self, *, early: int = 3, recent: int = 4) -> None:
        self.early, self.recent = early, recent
        self.early_losses: list[float] = []
        self.recent_losses: list[float] = []
        self.count = 0

    @property
    def ready(self) -> bool:
        return self.count >= self.early + self.recent

    def add(self, loss: float) -> None:
        self.count += 1
        if len(self.early_losses) < self.early:
            self.early_losses.append(loss)
        self.recent_losses = [*self.recent_losses, loss][-self.recent :]

    @property
    def start(self) -> float | None:
        return statistics.median(self.early_losses) if self.early_losses else None

    @property
    def now(self) -> float | None:
        return statistics.median(self.recent_losses) if self.recent_losses else None

    def improvement(self, chance: float | None = None) -> float | None:
        """How much of its early level the loss has lost (0.3: 30% lower; negative: higher). A loss that came
        down only to the ``chance`` level (a classifier's ln(classes)) has not improved: 0 at most."""
        start, now = self.start, self.now
        if start is None or now is None or not self.ready or abs(start) < 1e-12:
            return None
        gained = (start - now) / abs(start)
        return min(gained, 0.0) if chance is not None and now >= AT_CHANCE * chance else gained

    def state_dict(self) -> dict[str, Any]:
        return {"early_losses": list(self.early_losses), "recent_losses": list(self.recent_losses), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.early_losses = list(state.get("early_losses", []))
        self.recent_losses = list(state.get("recent_losses", []))
        self.count = int(state.get("count", len(self.early_losses)))

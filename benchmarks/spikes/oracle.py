"""The oracle: labels a run from its per-step loss alone, without gradwatch.

Rules (all on the per-step training cross-entropy):

- **reference level**: the trailing mean of the last ``REFERENCE_WINDOW`` (20) losses (of all there are, in
  the first 20 steps); its running minimum starts at step 0. The untrained loss of the first steps is the
  highest a healthy run sees, so it only ever makes the minimum harder to double; a run that blows up in its
  first steps is still caught (a burn-in would have set the minimum after the blow-up).
- **current level**: the trailing median of the last ``CURRENT_WINDOW`` (5) losses, so one noisy batch
  never counts, while a real jump is seen at most 2 steps late.
- **diverged**: the loss is NaN/Inf, or the current level is at least ``DIVERGED_RATIO`` (2x) the running
  minimum and does not come back below ``RECOVERED_RATIO`` (1.25x) that minimum before the run ends. The
  divergence step is the first step of that last, unrecovered excursion (or the first non-finite step).
- **spiked** (and recovered): the current level reached ``SPIKE_RATIO`` (1.4x) the running minimum at
  least once and the run did not diverge; ``spike_steps`` lists where each excursion started.
- **stable**: neither.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

BURN_IN = 0
REFERENCE_WINDOW = 20
CURRENT_WINDOW = 5
DIVERGED_RATIO = 2.0
SPIKE_RATIO = 1.4
RECOVERED_RATIO = 1.25

STABLE, SPIKED, DIVERGED = "stable", "spiked", "diverged"


@dataclass
class Verdict:
    """The oracle's label for one run; ``step`` is the divergence step (None unless diverged)."""

    label: str
    step: int | None = None
    spike_steps: list[int] = field(default_factory=list)
    min_step: int | None = None  # where the running minimum stood when the run diverged (or at the end)
    nonfinite: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "step": self.step, "spike_steps": self.spike_steps, "min_step": self.min_step, "nonfinite": self.nonfinite}


def levels(losses: Sequence[float]) -> tuple[list[float], list[float]]:
    """(current level, running minimum of the reference level) per step; the minimum is inf before ``BURN_IN``."""
    current, minimum = [], []
    best = math.inf
    for step in range(len(losses)):
        window = losses[max(0, step - REFERENCE_WINDOW + 1) : step + 1]
        if step >= BURN_IN:
            best = min(best, sum(window) / len(window))
        minimum.append(best)
        current.append(statistics.median(losses[max(0, step - CURRENT_WINDOW + 1) : step + 1]))
    return current, minimum


def label(losses: Sequence[float]) -> Verdict:
    """Label a run from its per-step loss (a non-finite value ends the trace)."""
    finite: list[float] = []
    for value in losses:
        if not math.isfinite(value):
            break
        finite.append(value)
    current, minimum = levels(finite)
    excursions: list[tuple[int, float, bool, bool]] = []  # (start, minimum before it, reached 2x, recovered)
    inside = False
    for step, (level, best) in enumerate(zip(current, minimum)):
        if not math.isfinite(best):
            continue
        if not inside and level >= SPIKE_RATIO * best:
            inside = True
            excursions.append((step, best, level >= DIVERGED_RATIO * best, False))
        elif inside:
            start, before, doubled, _ = excursions[-1]
            if level >= DIVERGED_RATIO * before:
                excursions[-1] = (start, before, True, False)
            if level < RECOVERED_RATIO * before:
                excursions[-1] = (start, before, doubled or level >= DIVERGED_RATIO * before, True)
                inside = False
    spikes = [start for start, _, _, _ in excursions]
    if len(finite) < len(losses):  # non-finite loss: diverged there, or where its unrecovered excursion began
        start = len(finite)
        if excursions and not excursions[-1][3]:
            start = excursions[-1][0]
            spikes = spikes[:-1]
        return Verdict(DIVERGED, start, spikes, _argmin_before(finite, start), nonfinite=True)
    if excursions and excursions[-1][2] and not excursions[-1][3]:
        start = excursions[-1][0]
        return Verdict(DIVERGED, start, spikes[:-1], _argmin_before(finite, start))
    if spikes:
        return Verdict(SPIKED, None, spikes, _argmin_before(finite, len(finite)))
    return Verdict(STABLE, None, [], _argmin_before(finite, len(finite)))


def _argmin_before(losses: Sequence[float], end: int) -> int | None:
    """The step (after burn-in, before ``end``) where the reference level was lowest."""
    _, minimum = levels(losses[:end])
    finite = [(value, step) for step, value in enumerate(minimum) if math.isfinite(value)]
    if not finite:
        return None
    best = finite[-1][0]
    return next(step for value, step in finite if value == best)


def diverged_for_good(losses: Sequence[float], patience: int) -> bool:
    """True once the current level has stayed at or above 2x the running minimum for ``patience`` steps.

    The runner stops such a run early (as a user would); the oracle then sees an unrecovered excursion.
    """
    if len(losses) < BURN_IN + patience:
        return False
    if not all(math.isfinite(value) for value in losses):
        return True
    current, minimum = levels(losses)
    return all(current[-k] >= DIVERGED_RATIO * minimum[-1] for k in range(1, patience + 1))

"""``early_stagnation``: the loss does not move — from the start, or because every gradient is zero."""

from __future__ import annotations

import math
import statistics

from ..causes import output_cannot_fit
from ..facts import UNIT_LAYERS, ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from ..symptoms import Symptom, Variant
from .base import Detector, check_count, check_fraction, check_positive, counted, fmt
from .spike import DIVERGED

UNITS_APART = 0.1  # a units' spread above this: the units differ for good, and collectors stop reading them
BIG_STEPS = 1e-2  # a median |ΔW|/|W| per step this large is ten times the healthy 1e-3: the rate is too high, not too low

EARLY_STAGNATION = Symptom(
    "early_stagnation",
    remedies={"raise_lr": 1.0, "normalization": 0.6, "matched_init": 0.6, "relu_family": 0.6},
    variants=(
        Variant("copies", lambda evidence: "unit_spread" in evidence, {"random_init": 1.0, "matched_init": 0.5}),
        Variant("big_steps", lambda evidence: (evidence.get("median_relative_update") or 0.0) >= BIG_STEPS, {"lower_lr": 1.0, "normalization": 0.5}),
    ),
)


class EarlyStagnation(Detector):
    """Flags a run whose loss cannot or does not move.

    Frozen: every measured layer's gradient is exactly zero on
    ``frozen_samples`` samples in a row, or the loss has been the same number
    (to 1e-6) on every sample since the first, more than ``frozen_samples``
    of them, with no learning-rate warmup under way. Nothing learns, whatever the step count, so this is judged from
    the first samples on (short and full-batch runs included) and at any time
    later (the session names the cause where the model's facts show it, e.g.
    an output that is constant by construction).

    Slow: the loss has not improved by ``min_improvement`` since its start.
    Losses are noisy (one batch each), so neither end is a single sample: the
    start is the median loss sampled before ``min_steps``, the present the
    median of the last ``patience`` samples. It comes at step ``min_steps`` at
    the earliest, never while the learning rate rises (a warmup), and needs
    ``patience`` samples in a row with tiny steps (median ``|ΔW|/|W|`` under
    ``max_relative_update``; TheDeepChecker calls below 1e-4 too slow) or tiny
    gradients (median ``|g|/|W|`` under ``max_relative_grad``): an adaptive
    optimizer keeps moving the weights on a vanishing gradient, and moving
    weights are not progress. Slow starters with real gradients are left
    alone, unless the output layer cannot fit the loss, or the weights have
    shrunk below ``shrunk_fraction`` of their start (a pull to zero winning
    over the data): then nothing will take off. A run that improved once is still stuck when its gradients die
    (median ``|g|/|W|`` under ``max_relative_grad`` on ``patience`` samples)
    while the loss stays above ``1 - stuck_improvement`` of its start; a run
    that converged has a loss far below its start, and a late plateau after
    converging is not stagnation; nor is a loss risen to ``DIVERGED`` times its
    lowest sample: that run diverged, and its gradients died of it.

    Copies: the units of a hidden layer that trains (its update is not zero)
    or gets no gradient at all stay copies of each other (``unit_spread``
    under ``max_unit_spread``), or its weights are all zero and get no
    gradient, on ``frozen_samples`` samples in a row after the first step.
    Units that start equal (a constant initialisation) get equal gradients
    and never diverge: each layer works as one unit, whatever the loss does.
    The limit sits between copies (rounding apart, about 1e-7) and units that
    start equal but diverge, fed by a random layer above (1e-3 and growing).
    """

    declares = EARLY_STAGNATION
    state = (
        "early_losses",
        "recent_losses",
        "streak",
        "previous_lr",
        "retired",
        "frozen_streak",
        "first_loss",
        "constant_samples",
        "first_weight",
        "copies_streak",
        "lowest_loss",
    )

    def __init__(
        self,
        *,
        min_improvement: float = 0.05,
        max_relative_update: float = 1e-4,
        max_relative_grad: float = 1e-4,
        stuck_improvement: float = 0.5,
        shrunk_fraction: float = 0.5,
        patience: int = 4,
        min_steps: int = 40,
        frozen_samples: int = 2,
        max_unit_spread: float = 1e-5,
    ) -> None:
        self.min_improvement = check_fraction("min_improvement", min_improvement)
        self.max_relative_update = check_positive("max_relative_update", max_relative_update)
        self.max_relative_grad = check_positive("max_relative_grad", max_relative_grad)
        self.stuck_improvement = check_fraction("stuck_improvement", stuck_improvement)
        self.shrunk_fraction = check_fraction("shrunk_fraction", shrunk_fraction)
        self.first_weight: float | None = None
        self.patience = check_count("patience", patience)
        self.min_steps = check_count("min_steps", min_steps)
        self.frozen_samples = check_count("frozen_samples", frozen_samples)
        self.max_unit_spread = check_fraction("max_unit_spread", max_unit_spread)
        self.copies_streak = 0
        self.early_losses: list[float] = []  # sampled before min_steps: at most min_steps values
        self.recent_losses: list[float] = []  # the last `patience`
        self.lowest_loss: float | None = None
        self.previous_lr: float | None = None
        self.streak = 0  # samples in a row with tiny steps or tiny gradients
        self.retired = False
        self.frozen_streak = 0
        self.first_loss = 0.0
        self.constant_samples = 0  # samples whose loss equals the first one; -1 once it moved

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        frozen = self._frozen(sample, facts)
        copies = self._copies(sample, facts)
        slow = self._slow(sample, output_cannot_fit(facts, sample.loss))
        return frozen or copies or slow

    def _copies(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        kinds = facts.kinds
        copied = {
            s.name: s.unit_spread if s.unit_spread is not None else 0.0
            for s in sample.layers[:-1]  # not the output layer
            if (s.unit_spread is not None and s.unit_spread < self.max_unit_spread and (s.update_norm or s.grad_norm == 0))
            or (s.weight_norm == 0 and s.grad_norm == 0 and kinds.get(s.name) in UNIT_LAYERS)  # all zero, nothing moves it
        }
        self.copies_streak = self.copies_streak + 1 if copied and sample.step > 0 else 0
        if self.copies_streak < self.frozen_samples:
            return None
        worst = max(copied, key=copied.__getitem__)
        return self.finding(
            sample,
            "warning",
            list(copied),
            f"the units of {counted(len(copied), 'hidden layer')} stay copies of each other (or all zero, with no gradient) "
            f"after {sample.step} steps: the most apart, in {worst}, differ by {fmt(copied[worst])} of their size "
            "(random units by about 0.9); units that start equal (a constant initialisation) get equal gradients "
            "and never diverge, so each layer works as a single unit",
            unit_spread=copied,
            samples_in_a_row=self.copies_streak,
        )

    def _frozen(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        grads = [s.grad_norm for s in sample.layers if s.grad_norm is not None]
        zero = bool(grads) and not any(grads)
        self._track_constant_loss(sample)
        constant = self.constant_samples > self.frozen_samples
        self.frozen_streak = self.frozen_streak + 1 if zero or constant else 0
        if self.frozen_streak < self.frozen_samples and not constant:
            return None
        loss = f" at loss {fmt(sample.loss)}" if finite(sample.loss) else ""
        what = (
            f"every gradient of all {len(grads)} layers is exactly zero"
            if zero
            else f"the loss has been exactly {fmt(self.first_loss)} on all {self.constant_samples} samples since the start"
        )
        return self.finding(
            sample,
            "warning",
            [s.name for s in sample.layers if s.grad_norm is not None],
            f"{what}{loss if zero else ''}: nothing learns; the loss does not depend on the weights "
            "(a constant, saturated or dead output, or a detached graph)",
            all_gradients_zero=zero,
            constant_loss=constant,
            loss=sample.loss,
            samples_in_a_row=self.frozen_streak,
        )

    def _track_constant_loss(self, sample: StepStats) -> None:
        """Count the samples whose loss equals the first one; once it moves (or warms up), never again."""
        if self.constant_samples < 0:
            return
        warming_up = finite(sample.lr) and finite(self.previous_lr) and sample.lr > self.previous_lr
        if not finite(sample.loss) or warming_up:
            self.constant_samples = -1
        elif self.constant_samples == 0:
            self.first_loss, self.constant_samples = sample.loss, 1
        elif abs(sample.loss - self.first_loss) <= 1e-6 * max(abs(self.first_loss), 1.0):
            self.constant_samples += 1
        else:
            self.constant_samples = -1

    def _slow(self, sample: StepStats, cannot_fit: bool) -> Finding | None:
        if not finite(sample.loss):
            return None
        loss: float = sample.loss
        if sample.step < self.min_steps or not self.early_losses:
            self.early_losses.append(loss)
        self.recent_losses = [*self.recent_losses, loss][-self.patience :]

        warming_up = finite(sample.lr) and finite(self.previous_lr) and sample.lr > self.previous_lr
        self.previous_lr = sample.lr
        updates = [s.relative_update for s in sample.layers if finite(s.relative_update)]
        grads = [s.relative_grad for s in sample.layers if finite(s.relative_grad)]
        median_update = statistics.median(updates) if updates else None
        median_grad = statistics.median(grads) if grads else None
        tiny_steps = median_update is not None and median_update < self.max_relative_update
        tiny_grads = median_grad is not None and median_grad < self.max_relative_grad
        weights = [s.weight_norm for s in sample.layers if finite(s.weight_norm)]
        total_weight = math.sqrt(sum(w * w for w in weights)) if weights else None
        if self.first_weight is None:
            self.first_weight = total_weight
        first = self.first_weight
        shrunk = total_weight is not None and first is not None and total_weight < self.shrunk_fraction * first
        start, now = statistics.median(self.early_losses), statistics.median(self.recent_losses)
        improvement = (start - now) / max(abs(start), 1e-12)
        self.lowest_loss = min(loss, self.lowest_loss if self.lowest_loss is not None else loss)
        if self.retired:  # it improved once: still stuck if the gradient died while the loss stayed high, short of diverging
            diverged = self.lowest_loss > 0 and now >= DIVERGED * self.lowest_loss
            slow = not warming_up and tiny_grads and improvement < self.stuck_improvement and not diverged
        else:
            slow = not warming_up and (tiny_steps or tiny_grads or cannot_fit or shrunk)
        self.streak = self.streak + 1 if slow else 0
        if sample.step < self.min_steps:
            return None
        if not self.retired and (improvement >= self.min_improvement or abs(start) < 1e-8):
            self.retired = True
            self.streak = 0
            return None
        if self.streak < self.patience:
            return None
        lr = f" at learning rate {fmt(sample.lr)}" if finite(sample.lr) else ""
        if median_update is not None and median_update >= BIG_STEPS:
            lr += ": steps this large on a gradient this small are a rate too high for the loss to settle, not too low"
        moved = f"only {fmt(100 * improvement)}% below" if improvement > 0 else "no lower than" if improvement == 0 else "above"
        return self.finding(
            sample,
            "warning",
            [],
            f"loss {fmt(now)} (median of the last {len(self.recent_losses)} samples) is {moved} its early median "
            f"{fmt(start)} after {sample.step} steps; median relative update {fmt(median_update)} per step, "
            f"median relative gradient {fmt(median_grad)}{lr}",
            early_loss=start,
            loss=now,
            improvement=improvement,
            median_relative_update=median_update,
            median_relative_grad=median_grad,
            lr=sample.lr,
            samples_in_a_row=self.streak,
        )

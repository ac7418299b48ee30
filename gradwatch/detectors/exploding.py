"""``exploding_gradients``: steps as large as the weights, gradients far above their start, a climbing loss."""

from __future__ import annotations

import statistics

from ..facts import QUASI_NEWTON, ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from ..symptoms import Symptom
from .base import Detector, check_count, check_positive, fmt
from .loss import LossTrack

FALLING = 0.9  # a loss under this share of its early level is falling: the run learns despite large gradients
FEW_ROWS = 8  # a loss over fewer rows than this is one noisy draw: its lowest early value is no level to climb from


EXPLODING_GRADIENTS = Symptom(
    "exploding_gradients",
    remedies={"gradient_clipping": 1.0, "lower_lr": 0.9, "matched_init": 0.8, "normalization": 0.7, "gated_rnn": 0.6},
)


class ExplodingGradients(Detector):
    """Flags steps that rewrite the weights, gradients that blow up, or a loss that climbs far above its start.

    Rules (any of them, on ``min_consecutive`` sampled steps in a row):

    - some layer's relative update ``|ΔW|/|W|`` (``|W|`` before the step)
      exceeds ``max_relative_update``: the step is as large as the layer
      (not for quasi-Newton optimizers such as L-BFGS, whose steps are that
      large by design);
    - the total gradient norm exceeds ``max_growth`` times its early level
      (see below); the norm before the training code's own clipping is
      used where the adapter measured it, so clipping cannot hide the growth;
      not while the loss falls below ``FALLING`` of its early level (large
      targets under MSE grow the gradients of a run that learns well);
    - the loss (median of the two latest samples) climbs above
      ``max_loss_growth`` times its early level.

    A value's early level is its lowest over the first ``baseline_samples``
    samples (the lowest: a run may blow up in its first steps), or their mean
    where an early batch had fewer than ``FEW_ROWS`` rows (the loss and
    gradient of one row may be near 0 by chance).

    Ten times a limit is critical. Healthy training keeps ``|ΔW|/|W|`` near
    1e-3. Gradients large against the weights are no rule of their own: a loss
    summed over the batch, or regression targets in the thousands, give such
    gradients to runs that learn well under an adaptive optimizer.
    """

    declares = EXPLODING_GRADIENTS
    state = ("streak", "baseline", "losses", "peak_update", "few_rows")

    def __init__(
        self,
        *,
        max_relative_update: float = 1.0,
        max_growth: float = 100.0,
        max_loss_growth: float = 10.0,
        baseline_samples: int = 3,
        min_consecutive: int = 2,
    ) -> None:
        self.max_relative_update = check_positive("max_relative_update", max_relative_update)
        self.max_growth = check_positive("max_growth", max_growth)
        self.max_loss_growth = check_positive("max_loss_growth", max_loss_growth)
        self.baseline_samples = check_count("baseline_samples", baseline_samples)
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.streak = 0
        self.baseline: list[float] = []
        self.losses = LossTrack(early=baseline_samples, recent=2)  # early: the loss the run starts from
        self.peak_update: dict[str, float] = {}  # the largest relative update seen: {layer: |ΔW|/|W|}, sizes the advice
        self.few_rows = False  # an early loss came from a batch of fewer than FEW_ROWS rows

    def _early_level(self, values: list[float]) -> float:
        return statistics.fmean(values) if self.few_rows else min(values)

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if finite(sample.loss):
            in_early = len(self.losses.early_losses) < self.losses.early
            self.few_rows |= in_early and sample.batch_rows is not None and sample.batch_rows < FEW_ROWS
            self.losses.add(sample.loss)
        total = sample.grad_norm
        unclipped = sample.grad_norm_unclipped if finite(sample.grad_norm_unclipped) else total
        growth = None
        if unclipped is not None:
            if len(self.baseline) < self.baseline_samples:
                self.baseline.append(unclipped)
            reference = self._early_level(self.baseline)
            growth = unclipped / reference if reference > 0 and len(self.baseline) > 1 else None

        updates = {s.name: s.relative_update for s in sample.layers if finite(s.relative_update)}
        judge_updates = facts.optimizer not in QUASI_NEWTON
        if updates and max(updates.values()) > max(self.peak_update.values(), default=0.0):
            self.peak_update = dict([max(updates.items(), key=lambda item: item[1])])
        big_updates = {n: u for n, u in updates.items() if u > self.max_relative_update and judge_updates}
        least_grad = min((s.relative_grad for s in sample.layers if finite(s.relative_grad)), default=None)  # evidence
        early = self.losses.early_losses
        start = self._early_level(early) if early else None
        now = self.losses.now
        loss_growth = now / start if self.losses.count > 1 and start and start > 0 and now is not None else None
        climbing = loss_growth is not None and loss_growth > self.max_loss_growth
        falling = loss_growth is not None and loss_growth < FALLING  # large gradients are not hurting this run
        growing = not falling and growth is not None and growth > self.max_growth
        if not (big_updates or growing or climbing):
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.min_consecutive:
            return None

        worst_update = max(big_updates.values(), default=None)
        critical = (  # ten times a limit that fired
            (worst_update or 0.0) > 10 * self.max_relative_update
            or (growing and (growth or 0.0) > 10 * self.max_growth)
            or (loss_growth or 0.0) > 10 * self.max_loss_growth
        )
        parts = []
        if big_updates:
            name = max(big_updates, key=big_updates.__getitem__)
            parts.append(f"{name} changes by {fmt(worst_update)}× its own norm in one step")
        if growing:
            parts.append(f"total gradient norm {fmt(unclipped)} is {fmt(growth)}× its early level {fmt(self._early_level(self.baseline))}")
        if climbing:
            parts.append(f"the loss climbed to {fmt(now)}, {fmt(loss_growth)}× its early {fmt(start)}")
        clipped = sample.clipped
        if clipped:
            parts.append(f"the training code clips the gradient norm from {fmt(unclipped)} to {fmt(total)}")
        layers = list(big_updates) or [s.name for s in sample.layers]
        return self.finding(
            sample,
            "critical" if critical else "warning",
            layers,
            "; ".join(parts),
            grad_norm_total=total,
            grad_norm_unclipped=unclipped if clipped else None,
            grad_norm_baseline=self._early_level(self.baseline) if self.baseline else None,
            growth=growth,
            relative_update=updates,
            peak_update=self.peak_update,
            min_relative_grad=least_grad,
            loss=now,
            loss_growth=loss_growth,
            samples_in_a_row=self.streak,
        )

"""``vanishing_gradients``: the gradient dies out going down the layers, or back through time."""

from __future__ import annotations

import math
from itertools import takewhile

from ..facts import SATURATING, ModelFacts
from ..report import Finding, Severity
from ..stats import SequenceStats, StepStats, finite, ratio
from ..symptoms import Symptom, Variant
from .base import Detector, check_count, check_fraction, counted, fmt
from .loss import LossTrack, chance_level

VANISHING_GRADIENTS = Symptom(
    "vanishing_gradients",
    remedies={
        "gated_rnn": 1.0,
        "relu_family": 1.0,
        "skip_connections": 0.9,
        "normalization": 0.8,
        "matched_init": 0.8,
        "layerwise_pretraining": 1.0,
    },
    variants=(
        Variant(
            "time",
            lambda evidence: evidence.get("axis") == "time",
            {"gated_rnn": 1.0, "truncated_bptt": 1.0, "recurrent_init": 1.0, "gradient_clipping": 0.3},
        ),
    ),
)


class VanishingGradients(Detector):
    """Flags a sustained collapse of the gradient across depth or across time.

    Depth: ``(|g|/|W|)`` of the first trainable layer is below ``max_ratio``
    times that of the last one on ``min_consecutive`` sampled steps in a row,
    in a model with at least ``min_layers`` trainable layers. When update sizes
    are known the bottom must also barely move (``|ΔW|/|W|`` ratio below
    ``max_ratio``); if an adaptive optimizer compensates, the finding is only
    ``info`` unless the loss is seen stuck. Below ``max_ratio ** 2`` it is critical. Bottom layers whose
    gradient is exactly zero count as vanished (ratio 0) when the activation
    of the highest of them is a sigmoid/tanh: saturated, it passes nothing
    down; otherwise they are dead or starved, not vanishing (see ``dead_relu``).
    Time: for a recurrent layer over at least ``min_time_steps`` steps, the
    gradient reaching its first input step is below ``max_ratio`` times the
    largest per-step gradient, on ``min_consecutive`` samples in a row. That
    decay is a warning only once the loss is seen stuck (less than
    ``min_improvement`` below its early level); while the loss improves, the
    layer learns from the recent steps and the decay is ``info``.
    Defaults after AUTOTRAINER's first/last gradient-norm ratio of 1e-3.
    """

    declares = VANISHING_GRADIENTS
    state = ("streak", "time_streak", "losses")

    def __init__(
        self,
        *,
        max_ratio: float = 1e-3,
        min_consecutive: int = 3,
        min_layers: int = 3,
        min_time_steps: int = 10,
        min_improvement: float = 0.1,
    ) -> None:
        self.max_ratio = check_fraction("max_ratio", max_ratio)
        self.min_improvement = check_fraction("min_improvement", min_improvement)
        self.losses = LossTrack()
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.min_layers = check_count("min_layers", min_layers)
        self.min_time_steps = check_count("min_time_steps", min_time_steps)
        self.streak = 0
        self.time_streak = 0
        self.chance: float | None = None  # the classifier's chance level: a loss that only reaches it has not improved

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if finite(sample.loss):
            self.losses.add(sample.loss)
        self.chance = chance_level(facts)
        depth = self._depth(sample, facts)
        time = self._time(sample)
        if depth is None:
            return time
        if time is not None:  # both: one finding, time evidence added to the depth one
            depth.layers += tuple(name for name in time.layers if name not in depth.layers)
            depth.message += f"; through time: {time.message}"
            depth.evidence.update(axis="depth+time", time=time.evidence)
        return depth

    def _depth(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        measured = [s for s in sample.layers if finite(s.relative_grad)]
        flowing = [s for s in measured if s.grad_norm]
        zero_block = list(takewhile(lambda s: s.grad_norm == 0, measured))
        saturated_above = _activation(facts, zero_block[-1].name) if zero_block and flowing else None
        starved = zero_block if saturated_above in SATURATING else []
        layers = starved + flowing
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
        improvement = self.losses.improvement(self.chance)
        # an adaptive optimizer may still move the bottom layers: only the loss tells whether that helps
        compensated = update_ratio is not None and update_ratio >= self.max_ratio and (improvement is None or improvement >= self.min_improvement)
        severity: Severity = "info" if compensated else "critical" if grad_ratio < self.max_ratio**2 else "warning"
        top_grad = top.relative_grad or 0.0
        affected = [s.name for s in layers[:-1] if (s.relative_grad or 0.0) < self.max_ratio * top_grad]
        gain = grad_ratio ** (1.0 / (len(layers) - 1))
        message = (
            f"relative gradient |g|/|W| of {bottom.name} is {fmt(bottom.relative_grad)} vs "
            f"{fmt(top_grad)} at {top.name} (ratio {fmt(grad_ratio)}, about ×{fmt(gain)} per layer going down)"
        )
        if starved:
            message += (
                f"; the gradient of {counted(len(starved), 'bottom layer')} is exactly zero: the saturated {saturated_above} "
                f"after {starved[-1].name} passes nothing down"
            )
        if compensated:
            message += f"; the optimizer still moves {bottom.name} (update ratio {fmt(update_ratio)})"
        elif update_ratio is not None and update_ratio >= self.max_ratio:
            message += f"; the optimizer still moves {bottom.name} (update ratio {fmt(update_ratio)}) but the loss is stuck"
        elif update_ratio is not None:
            message += f"; {bottom.name} moves {fmt(bottom.relative_update)} per step vs {fmt(top.relative_update)}"
        gains = {upper.name: ratio(lower.grad_norm, upper.grad_norm) for lower, upper in zip(layers, layers[1:])}
        return self.finding(
            sample,
            severity,
            affected,
            message,
            axis="depth",
            bottom=bottom.name,
            top=top.name,
            grad_ratio=grad_ratio,
            update_ratio=update_ratio,
            gain_per_layer=gain,
            gain_into_layer_below=gains,
            relative_grad={s.name: s.relative_grad for s in layers},
            relative_update={s.name: s.relative_update for s in layers},
            saturated_share=_saturation(sample),
            zero_gradient_layers=[s.name for s in starved],
            samples_in_a_row=self.streak,
        )

    def _time(self, sample: StepStats) -> Finding | None:
        measured = [(seq, _collapse(seq)) for seq in sample.sequences if len(seq.grad_by_step) >= self.min_time_steps]
        profiles = [(seq, r) for seq, r in measured if r is not None]
        if not profiles:
            return None
        sick = [(seq, r) for seq, r in profiles if r < self.max_ratio]
        if not sick:
            self.time_streak = 0
            return None
        self.time_streak += 1
        if self.time_streak < self.min_consecutive:
            return None
        seq, worst = min(sick, key=lambda pair: pair[1])
        values = seq.grad_by_step
        steps, peak_at = len(values), values.index(max(values))
        reached = next(t for t, v in enumerate(values) if v > 0)  # earliest step with any gradient at all
        per_step = (values[reached] / values[peak_at]) ** (1.0 / max(peak_at - reached, 1))
        horizon = _horizon(values, self.max_ratio)
        start = (
            f"no gradient at all (below float range) reaches the first {reached} of {steps} time steps of {seq.name}"
            if reached
            else f"the gradient reaching the first of {steps} time steps of {seq.name} is {fmt(worst)}× its peak"
        )
        improvement = self.losses.improvement(self.chance)
        stuck = improvement is not None and improvement < self.min_improvement
        severity: Severity
        if improvement is not None and stuck:
            severity = "critical" if worst < self.max_ratio**2 else "warning"
            progress = f"; the loss is stuck ({fmt(100 * improvement)}% below its early level)"
        else:
            severity = "info"
            progress = "" if improvement is None else f"; the loss still improves ({fmt(100 * improvement)}% below its early level)"
        return self.finding(
            sample,
            severity,
            [s.name for s, _ in sick],
            f"{start} (about ×{fmt(per_step)} per step back); only the last {horizon} steps get more than {fmt(self.max_ratio)} of it{progress}",
            axis="time",
            layer=seq.name,
            time_steps=steps,
            first_over_peak=worst,
            decay_per_step=per_step,
            effective_horizon=horizon,
            grad_by_step=list(seq.grad_by_step),
            loss_improvement=improvement,
            samples_in_a_row=self.time_streak,
        )


def _activation(facts: ModelFacts, name: str) -> str | None:
    layer = facts.layer(name)
    return layer.activation if layer is not None else None


def _collapse(seq: SequenceStats) -> float | None:
    """First-step gradient over the largest per-step gradient, when measurable."""
    values = seq.grad_by_step
    if not all(math.isfinite(v) for v in values):
        return None
    return ratio(values[0], max(values))


def _horizon(values: tuple[float, ...], share: float) -> int:
    """How many of the last steps receive at least ``share`` of the peak gradient."""
    floor = share * max(values)
    steps = 0
    for value in reversed(values):
        if value < floor:
            break
        steps += 1
    return steps


def _saturation(sample: StepStats) -> dict[str, float]:
    """Mechanism evidence: share of saturated sigmoid/tanh outputs per activation."""
    return {a.name: a.saturated_share for a in sample.activations if a.kind in SATURATING and finite(a.saturated_share)}

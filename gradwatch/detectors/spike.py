"""``loss_spike`` and ``divergence_forecast``: a loss that jumps above its recent level, and the signs that come before.

Both read sampled steps only. A layer's gradient and update norms are judged
against that layer's own recent history (a jump of ``LAYER_JUMP`` times its
median), never against other layers or a fixed size. The forecast's
precursors follow published accounts of small transformers trained at too
high a learning rate:

- attention logits that grow until attention is one-hot (Wortsman et al.
  2023, "Small-scale proxies for large-scale Transformer training
  instabilities"; Zhai et al. 2023, attention entropy collapse): fixed by
  qk-layernorm;
- output logits that drift, their log-partition far from 0 (Wortsman et al.
  2023): fixed by z-loss;
- a layer's update or gradient norm that jumps far above its own history
  before the loss does (OLMo 2; public logs of large runs), and Adam's
  second-moment estimate far below the gradient it meets (Molybog et al.
  2023): fixed by warmup, a lower peak learning rate, clipping, a smaller
  epsilon;
- the total gradient norm climbing while the loss stalls and the learning
  rate rises (gradient-norm growth before loss spikes: OLMo 2): a rate past
  what the model trains at.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..facts import ModelFacts
from ..report import Finding
from ..stats import LayerStats, StepStats, finite
from ..symptoms import Symptom, Variant
from .base import Detector, check_count, check_positive, fmt

LAYER_JUMP = 10.0  # a layer's gradient or update norm this many times the median of its own recent samples: a jump
HISTORY = 8  # sampled values kept per series (the recent level is their median)
MIN_HISTORY = 4  # values a series needs before a jump is judged against it
SPIKE_RISE = 0.5  # a sampled loss this share above its recent level (and far outside its noise) is a spike
NOISE_WIDTH = 6.0  # ... and above the level by this many times the loss's median change from one sample to the next
RECOVERED = 0.1  # a spike has recovered once the loss is back within this share of the level before it
LOOK_BACK = 3  # a loss spike's first layer jump is looked for on its own sample and the two before
LOGITS_DRIFT = 10.0  # an output log-partition this many nats further from 0 than at the start: z-loss comes first
ONE_HOT_LOGIT = 30.0  # attention logits this far apart put all but e^-30 of a row's weight on one key
DIVERGED = 2.0  # a loss at this many times its running minimum (or NaN) has diverged (the oracle)
LEVEL_STEPS = 20  # the loss's level is judged on blocks of consecutive samples that span at least this many steps
CREEP = 1.08  # a block's loss this many times the best block's, while the learning rate rose since ...
LR_ROSE = 1.1  # ... by this factor: the run is past the largest learning rate it trains at
CLIMB_STEPS = 10  # the gradient norm's level: the median of the total norms of this many consecutive optimizer steps
CLIMB = 2.0  # a level this many times its lowest, while the learning rate rose ``LR_ROSE`` times since and the loss stalls


def _attention_seen(evidence: Any) -> bool:
    return bool(evidence.get("attention"))


def _logits_drifted(evidence: Any) -> bool:
    partition = evidence.get("output_log_partition")
    return bool(partition) and abs(partition[1] - partition[0]) > LOGITS_DRIFT and abs(partition[1]) > abs(partition[0])


LOSS_SPIKE = Symptom(
    "loss_spike",
    remedies={"warmup": 1.0, "gradient_clipping": 0.9, "lower_lr": 0.8, "skip_batch": 0.7},
    variants=(  # the mechanism the evidence shows decides what comes first
        Variant("attention", _attention_seen, {"qk_norm": 1.1, "warmup": 1.0, "gradient_clipping": 0.9, "lower_lr": 0.8, "skip_batch": 0.7}),
        Variant("logits", _logits_drifted, {"z_loss": 1.4, "warmup": 1.0, "gradient_clipping": 0.9, "lower_lr": 0.8, "skip_batch": 0.7}),
    ),
)
DIVERGENCE_FORECAST = Symptom(
    "divergence_forecast",
    remedies={"lower_lr": 1.0, "warmup": 0.9, "gradient_clipping": 0.9, "skip_batch": 0.5},
    variants=(  # the sign that raised the warning first: a warmup past the rate the model trains at is fixed by its peak
        Variant(
            "past_best_lr",
            lambda evidence: evidence.get("mechanism") in ("past_best_lr", "gradient_climb"),
            {"lower_lr": 1.1, "gradient_clipping": 0.8},
        ),
        Variant("attention", _attention_seen, {"qk_norm": 1.1, "lower_lr": 1.0, "warmup": 0.9, "gradient_clipping": 0.8}),
        Variant("adam", lambda evidence: "adam_moments" in evidence.get("mechanisms", ()), {"adam_epsilon": 1.2, "warmup": 1.0, "lower_lr": 0.9}),
        Variant("logits", _logits_drifted, {"z_loss": 1.2, "lower_lr": 1.0, "warmup": 0.9, "gradient_clipping": 0.8}),
    ),
)


def _median(values: Any) -> float:
    return float(statistics.median(values))


@dataclass
class Jump:
    """A layer series that jumped: which layer, which norm, how many times its own recent median, at which step."""

    layer: str
    norm: str  # "update" or "gradient"
    factor: float
    step: int

    def text(self) -> str:
        return f"{self.layer}'s {self.norm} norm jumped to {fmt(self.factor)}× its own recent level at step {self.step}"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "norm": self.norm, "factor": self.factor, "step": self.step}


class LayerJumps:
    """Each layer's gradient and update norms against their own recent history (the median of ``HISTORY`` samples).

    ``add`` returns the jumps of this sample, the largest first; a jump is not
    added to the history it is judged against, so a lasting rise keeps showing
    until it is ``HISTORY`` samples old.
    """

    def __init__(self, jump: float = LAYER_JUMP) -> None:
        self.jump = jump
        self.series: dict[str, deque[float]] = {}

    def add(self, sample: StepStats) -> list[Jump]:
        jumps, every_series, jump = [], self.series, self.jump  # runs over every layer of every sample: kept lean
        for layer in sample.layers:
            for norm, value in (("update", layer.update_norm), ("gradient", layer.grad_norm)):
                if value is None or not 0 < value < math.inf:
                    continue
                key = f"{norm}:{layer.name}"
                series = every_series.get(key)
                if series is None:
                    series = every_series[key] = deque(maxlen=HISTORY)
                elif len(series) >= MIN_HISTORY and value >= jump * min(series):  # else below ``jump`` × the median
                    factor = value / _median(series)
                    if factor >= jump:
                        jumps.append(Jump(layer.name, norm, factor, sample.step))
                        continue
                series.append(value)
        return sorted(jumps, key=lambda j: -j.factor)

    def state_dict(self) -> dict[str, Any]:
        return {key: list(values) for key, values in self.series.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.series = {key: deque(values, maxlen=HISTORY) for key, values in state.items()}


class LossLevel:
    """The recent level of the sampled loss (median of ``HISTORY`` samples) and its noise (median change between samples)."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=HISTORY)
        self.lowest: float | None = None

    @property
    def ready(self) -> bool:
        return len(self.recent) >= MIN_HISTORY

    def level(self) -> float:
        return _median(self.recent)

    def noise(self) -> float:
        """The median change from one sample to the next: the loss's noise, blind to a steady fall."""
        values = list(self.recent)
        return _median(abs(b - a) for a, b in zip(values, values[1:]))

    def above(self, loss: float) -> float | None:
        """How far ``loss`` sits above the recent level, as a share of it, when it is a spike (else None)."""
        if not self.ready:
            return None
        level = self.level()
        if level <= 0:
            return None
        rise = loss - level
        return rise / level if rise > SPIKE_RISE * level and rise > NOISE_WIDTH * self.noise() else None

    def add(self, loss: float) -> None:
        self.recent.append(loss)
        self.lowest = loss if self.lowest is None else min(self.lowest, loss)

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "lowest": self.lowest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(state.get("recent", []), maxlen=HISTORY)
        self.lowest = state.get("lowest")


class LossBlocks:
    """The sampled loss in blocks of at least ``LEVEL_STEPS`` steps: each block's mean and the learning rate at its end.

    A sample's loss is the mean over the steps since the previous sample, so a
    block weighs each sample by the steps it covers; blocks of about the same
    length keep the level comparable whatever the sampling interval.
    """

    def __init__(self) -> None:
        self.recent: deque[tuple[float, float]] = deque(maxlen=HISTORY)  # (mean loss, learning rate) of the latest blocks
        self.best: tuple[float, float] | None = None  # the lowest block before the latest one
        self._open = (0.0, 0)  # the block being filled: loss summed over its steps, steps
        self._last_step: int | None = None

    def add(self, loss: float, lr: float | None, step: int) -> tuple[float, float] | None:
        """Add a sample; returns the block (mean loss, learning rate) this sample completes, if any."""
        covered = step - self._last_step if self._last_step is not None else 1
        self._last_step = step
        total, steps = self._open[0] + loss * covered, self._open[1] + covered
        if steps < LEVEL_STEPS:
            self._open = (total, steps)
            return None
        self._open = (0.0, 0)
        if not finite(lr):
            return None
        if self.recent and (self.best is None or self.recent[-1][0] < self.best[0]):
            self.best = self.recent[-1]
        self.recent.append((total / steps, lr))
        return self.recent[-1]

    def noise(self) -> float:
        """The median change of the block means from one block to the next."""
        means = [mean for mean, _ in self.recent]
        return _median(abs(b - a) for a, b in zip(means, means[1:])) if len(means) > 1 else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "best": self.best, "open": self._open, "last_step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(((float(mean), float(lr)) for mean, lr in state.get("recent", [])), maxlen=HISTORY)
        best = state.get("best")
        self.best = (float(best[0]), float(best[1])) if best is not None else None
        total, steps = state.get("open", (0.0, 0))
        self._open = (float(total), int(steps))
        self._last_step = state.get("last_step")


class GradientClimb:
    """The total gradient norm of every optimizer step: its level (the median of the latest ``CLIMB_STEPS``) and
    the lowest level so far, with the learning rate of the sample that brought it."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=CLIMB_STEPS)
        self.lowest: tuple[float, float] | None = None  # (level, learning rate)
        self.layer_lowest: dict[str, float] = {}  # each layer's lowest sampled gradient norm, from step LEVEL_STEPS on

    def add(self, norms: Sequence[float], lr: float | None, step: int) -> float | None:
        """Add the norms of the steps up to ``step`` that a sample brought (at learning rate ``lr``); the level now,
        once it has ``CLIMB_STEPS`` finite norms behind it. The first ``LEVEL_STEPS`` steps are left out: a fresh
        initialisation's gradients swing most while it settles."""
        recent, first = self.recent, step - len(norms) + 1
        for at, norm in enumerate(norms, first):
            if at < LEVEL_STEPS or not 0 < norm < math.inf:  # settling, a step an AMP scaler skipped, or no gradient
                continue
            recent.append(norm)
            if len(recent) == CLIMB_STEPS and finite(lr):
                level = _median(recent)
                if self.lowest is None or level < self.lowest[0]:
                    self.lowest = (level, lr)
        return _median(recent) if len(recent) == CLIMB_STEPS else None

    def steepest(self, sample: StepStats) -> tuple[str, float] | None:
        """The layer whose sampled gradient norm stands highest against its own lowest, and that factor (each
        layer's lowest is kept here, from step ``LEVEL_STEPS`` on)."""
        if sample.step < LEVEL_STEPS:
            return None
        lowest, steepest = self.layer_lowest, None
        for layer in sample.layers:
            norm = layer.grad_norm
            if norm is None or not 0 < norm < math.inf:
                continue
            low = lowest[layer.name] = min(norm, lowest.get(layer.name, norm))
            if steepest is None or norm / low > steepest[1]:
                steepest = (layer.name, norm / low)
        return steepest

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "lowest": self.lowest, "layer_lowest": self.layer_lowest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(state.get("recent", []), maxlen=CLIMB_STEPS)
        self.layer_lowest = dict(state.get("layer_lowest", {}))
        lowest = state.get("lowest")
        self.lowest = (float(lowest[0]), float(lowest[1])) if lowest is not None else None


class LossSpike(Detector):
    """Flags a transient loss spike: a sampled loss well above its recent level, then (or not) back down.

    A spike is a sampled loss more than ``SPIKE_RISE`` (50%) above the median of
    the previous ``HISTORY`` samples and more than ``NOISE_WIDTH`` times their
    median change between samples above it. The finding names the step, the layer
    whose update or gradient norm jumped first against its own history (on this
    sample or the two before), and whether the loss came back within
    ``RECOVERED`` of its level. Severity: ``info`` while it may still recover
    and once it has (large runs live with a few such spikes, and a healthy run
    must stay quiet); ``warning`` when the loss is still up ``patience`` samples
    later, or after ``repeats`` spikes. A spike that keeps rising to ``DIVERGED``
    times the lowest loss is a divergence, not a spike: it stays ``info`` and
    says so, the run's ``nonfinite`` or ``exploding_gradients`` finding (and the
    ``divergence_forecast`` before it) carries the alarm.
    """

    declares = LOSS_SPIKE
    state = ("level", "jumps", "recent_jumps", "spike", "spikes", "start_partition")

    def __init__(self, *, patience: int = 3, repeats: int = 3) -> None:
        self.patience = check_count("patience", patience)
        self.repeats = check_count("repeats", repeats)
        self.level = LossLevel()
        self.jumps = LayerJumps()
        self.recent_jumps: list[list[dict[str, Any]]] = []  # the layer jumps of each of the latest ``LOOK_BACK`` samples
        self.spike: dict[str, Any] | None = None  # the spike under way: step, level, peak, first jump, samples since
        self.spikes = 0
        self.start_partition: float | None = None

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if self.start_partition is None and finite(sample.output_log_partition):
            self.start_partition = sample.output_log_partition
        self.recent_jumps = [*self.recent_jumps, [j.to_dict() for j in self.jumps.add(sample)]][-LOOK_BACK:]
        loss = sample.loss
        if not finite(loss):
            return None
        spike = self.spike
        if spike is None:
            rise = self.level.above(loss)
            if rise is None:
                self.level.add(loss)
                return None
            self.spikes += 1
            first = next((jumps[0] for jumps in self.recent_jumps if jumps), None)  # the earliest sample's largest
            spike = self.spike = {"step": sample.step, "level": self.level.level(), "peak": loss, "first_jump": first, "samples": 0}
        spike["samples"] += 1
        spike["peak"] = max(spike["peak"], loss)
        recovered = loss <= spike["level"] * (1 + RECOVERED)
        if recovered:
            self.spike = None
            self.level.add(loss)
        lowest = self.level.lowest
        if not recovered and lowest is not None and lowest > 0 and loss >= DIVERGED * lowest:
            spike["diverged"] = True  # no transient spike: the run diverges (nonfinite, exploding_gradients, the forecast)
        if spike.get("diverged"):
            return self._finding(sample, spike, loss, recovered, "info")
        lasting = not recovered and spike["samples"] > self.patience
        return self._finding(sample, spike, loss, recovered, "warning" if lasting or self.spikes >= self.repeats else "info")

    def _finding(self, sample: StepStats, spike: dict[str, Any], loss: float, recovered: bool, severity: Any) -> Finding:
        level, peak = spike["level"], spike["peak"]
        parts = [f"the loss jumped from its recent level {fmt(level)} to {fmt(peak)} ({fmt(peak / level)}×) at step {spike['step']}"]
        first = spike["first_jump"]
        if first is not None:
            parts.append(Jump(**first).text() + (", first" if first["step"] <= spike["step"] else ""))
        if recovered:
            parts.append(f"it came back to {fmt(loss)} by step {sample.step}")
        elif spike.get("diverged"):
            parts.append(f"it kept rising, to {fmt(loss)} at step {sample.step}: the run diverges rather than spikes")
        else:
            parts.append(f"at step {sample.step} it is still {fmt(loss)}")
        if self.spikes > 1:
            parts.append(f"spike {self.spikes} of this run")
        layers = [first["layer"]] if first is not None else []
        return self.finding(
            sample,
            severity,
            layers,
            "; ".join(parts),
            spike_step=spike["step"],
            loss_level=level,
            loss_peak=peak,
            rise=peak / level,
            loss=loss,
            recovered=recovered,
            diverged=bool(spike.get("diverged")),
            attention=_attention(sample),
            output_log_partition=_partition(self.start_partition, sample),
            spikes=self.spikes,
            first_jump=first,
            lr=sample.lr,
        )


@dataclass
class Precursor:
    """One sign that a run is heading for divergence: its mechanism, where, the number and its reference."""

    mechanism: str  # "update_jump", "adam_moments", "loss_spike", "past_best_lr", "gradient_climb"
    where: str | None
    value: float
    text: str
    trained_lr: float | None = None  # the learning rate the run still trained well at, where the sign knows it

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "where": self.where, "value": self.value, "text": self.text, "trained_lr": self.trained_lr}


class DivergenceForecast(Detector):
    """Warns, at a sampled step, that the run is likely to diverge; once it does, says how many steps ahead.

    Precursors (any one raises the warning; see the module's docstring for the
    published grounding):

    - ``update_jump``: a layer's update or gradient norm jumps ``LAYER_JUMP`` times its
      own recent level while the loss rises ``SPIKE_RISE`` above its own;
    - ``loss_spike``: the loss rose ``SPIKE_RISE`` above its recent level;
    - ``past_best_lr``: the loss creeps up from its best (``CREEP`` times it,
      in blocks of ``LEVEL_STEPS`` steps, above the blocks' noise) while the
      learning rate keeps rising (``LR_ROSE`` times its value at the best): a
      warmup past the largest rate the model trains at, the learning-rate range
      test's sign (Smith 2017); a run at a constant rate never shows it;
    - ``gradient_climb``: the total gradient norm of every optimizer step (its
      median over ``CLIMB_STEPS`` steps, read on the device at each step and
      brought over with the sample) ``CLIMB`` times its lowest, while the
      sampled loss has stopped improving (no lower than its lowest) and the
      learning rate rose ``LR_ROSE`` times since that lowest. In the issue-28
      sweep's runs that diverge, the gradient norm turns up 40-60 steps before
      the loss does, where a stable run's falls; single sampled steps are too
      noisy to see it, a median of every step is not. Where the adapter
      cannot read every step's gradients (Keras on JAX), it is not measured.

    Named beside a precursor, never raising the warning alone:

    - ``adam_moments``: a layer's gradient RMS is ``moment_jump`` times the RMS
      of Adam's bias-corrected second-moment estimate (the step Adam takes
      leaves its usual size), judged from the ``MIN_HISTORY``-th sample that
      holds the moments on (before, the estimate rests on the first few
      gradients, which grow fast at the start of training). Alone, on the
      issue-28 sweep's held-out seeds 200-201, it raised one false alarm (a
      qk-normed key projection at step 80 of a stable run) and, on 62
      diverging runs of three seed sets, no warning in time that the other
      signs did not raise.

    Large attention logits and a growing output log-partition are not
    precursors of their own: in small character-level GPTs without
    qk-layernorm attention logits grow into the hundreds in runs that train
    to the end (the issue-28 sweep's model at learning rates 1e-2 to 1e-1),
    and a classifier's log-partition grows by ten nats as it grows confident
    (healthy cases of the mistakes clinic). The finding names them when the
    warning is raised: attention above ``ONE_HOT_LOGIT`` (module, head,
    entropy) as the mechanism seen, and the log-partition against its start.

    A run has diverged when a sample holds NaN or infinity or its loss is
    ``DIVERGED`` times its lowest sampled loss (the issue's oracle). The finding
    then keeps the step it was raised at, gains ``diverged_step`` and
    ``lead_steps`` (the sampled step that saw the divergence minus that step) and
    a sentence saying so.
    """

    declares = DIVERGENCE_FORECAST
    state = ("level", "blocks", "climb", "jumps", "start_partition", "raised", "diverged_at", "moments_seen")
    sees_nonfinite = True

    def __init__(self, *, moment_jump: float = 30.0) -> None:
        self.moment_jump = check_positive("moment_jump", moment_jump)
        self.moments_seen = 0  # samples that held Adam's moments
        self.level = LossLevel()
        self.blocks = LossBlocks()
        self.climb = GradientClimb()
        self.jumps = LayerJumps()
        self.start_partition: float | None = None
        self.raised: dict[str, Any] | None = None  # the warning: step, loss then, precursors, attention then
        self.diverged_at: int | None = None

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if self.diverged_at is not None:
            return None
        loss = sample.loss
        lowest = self.level.lowest
        if not sample.finite or (finite(loss) and lowest is not None and lowest > 0 and loss >= DIVERGED * lowest):
            self.diverged_at = sample.step
            return self._diverged(sample) if self.raised is not None else None
        signs = self._precursors(sample)
        if finite(loss):
            self.level.add(loss)
        if not signs or self.raised is not None:
            return None
        self.raised = {
            "step": sample.step,
            "loss": loss,
            "signs": [s.to_dict() for s in signs],
            "attention": _attention(sample),
            "log_partition": _partition(self.start_partition, sample),
        }
        return self._warning(sample)

    def _precursors(self, sample: StepStats) -> list[Precursor]:
        signs = []
        partition = sample.output_log_partition
        if finite(partition) and self.start_partition is None:
            self.start_partition = partition
        jumps = self.jumps.add(sample)
        rise = self.level.above(sample.loss) if finite(sample.loss) else None
        if jumps and rise is not None:
            signs.append(Precursor("update_jump", jumps[0].layer, jumps[0].factor, jumps[0].text() + f" as the loss rose {fmt(1 + rise)}×"))
        if rise is not None and not jumps:
            text = f"the loss rose to {fmt(sample.loss)}, {fmt(1 + rise)}× its recent level {fmt(self.level.level())}"
            signs.append(Precursor("loss_spike", None, 1 + rise, text))
        signs += [sign for sign in (self._past_best_lr(sample), self._gradient_climb(sample)) if sign is not None]
        moments = self._adam_moments(sample)
        return signs + [moments] if signs and moments is not None else signs  # Adam's moments corroborate, never raise alone

    def _adam_moments(self, sample: StepStats) -> Precursor | None:
        """The layer whose gradient RMS stands ``moment_jump`` times above the RMS of Adam's second-moment
        estimate, once the estimate has ``MIN_HISTORY`` samples behind it."""
        worst = _moment_outlier(sample.layers)
        settled = worst is not None and self.moments_seen >= MIN_HISTORY
        self.moments_seen += worst is not None
        if worst is None or not settled or worst[1] <= self.moment_jump:
            return None
        layer, factor = worst
        text = f"{layer}'s gradient RMS is {fmt(factor)}× the RMS of Adam's second-moment estimate (its step leaves its usual size)"
        return Precursor("adam_moments", layer, factor, text)

    def _past_best_lr(self, sample: StepStats) -> Precursor | None:
        """The loss creeps up from its best while the learning rate keeps rising (a warmup past the largest
        rate the model trains at): the loss of a block of ``LEVEL_STEPS`` steps ``CREEP`` times the best
        block's and above it by more than the blocks' noise, the learning rate ``LR_ROSE`` times what it was then."""
        if not finite(sample.loss):
            return None
        block = self.blocks.add(sample.loss, sample.lr, sample.step)
        best = self.blocks.best
        if block is None or best is None or len(self.blocks.recent) < 3:  # a best among at least two blocks
            return None
        (loss, lr), (best_loss, best_lr) = block, best
        if best_loss <= 0 or loss < CREEP * best_loss or loss - best_loss <= self.blocks.noise() or lr < LR_ROSE * best_lr:
            return None
        text = (
            f"the loss crept up to {fmt(loss)}, {fmt(loss / best_loss)}× its best {fmt(best_loss)}, while the learning rate "
            f"rose from {fmt(best_lr)} to {fmt(lr)}: the rate has likely passed the largest this model trains at, and a run whose rate keeps rising diverges"
        )
        return Precursor("past_best_lr", None, loss / best_loss, text, best_lr)

    def _gradient_climb(self, sample: StepStats) -> Precursor | None:
        """The gradient norm grows while the loss has stopped improving and the learning rate keeps rising: the
        level of the last ``CLIMB_STEPS`` steps' norms ``CLIMB`` times its lowest, the rate ``LR_ROSE`` times what it
        was then, the sampled loss no lower than its lowest."""
        level = self.climb.add(sample.step_grad_norms, sample.lr, sample.step)
        steepest = self.climb.steepest(sample)
        lowest, loss, best = self.climb.lowest, sample.loss, self.level.lowest
        if level is None or lowest is None or not finite(loss) or not finite(sample.lr) or best is None or best <= 0:
            return None
        low, low_lr = lowest
        if level < CLIMB * low or sample.lr < LR_ROSE * low_lr or loss < best:
            return None
        text = (
            f"the gradient norm climbed to {fmt(level)}, {fmt(level / low)}× its lowest {fmt(low)} (medians of {CLIMB_STEPS} steps), as the "
            f"learning rate rose from {fmt(low_lr)} to {fmt(sample.lr)} and the loss stopped improving (best {fmt(best)}): past the largest "
            "rate a model trains at, its gradient grows before its loss does"
        )
        where = None
        if steepest is not None and steepest[1] >= CLIMB:
            where = steepest[0]
            text += f"; most in {where}, whose sampled gradient norm is {fmt(steepest[1])}× its lowest"
        return Precursor("gradient_climb", where, level / low, text, low_lr)

    def _warning(self, sample: StepStats) -> Finding:
        raised = self.raised or {}
        signs = [Precursor(**s) for s in raised["signs"]]
        attention = raised.get("attention")
        parts = [s.text for s in signs]
        if attention:
            head = f" head {attention['head']}" if attention["head"] is not None else ""
            entropy = f", lowest mean attention entropy {fmt(attention['entropy'])} nats" if attention["entropy"] is not None else ""
            parts.append(f"attention logits stand at {fmt(attention['logit'])} in {attention['layer']}{head} (attention near one-hot{entropy})")
        partition = raised.get("log_partition")
        if partition:
            parts.append(f"the output log-partition is {fmt(partition[1])} (it started at {fmt(partition[0])})")
        layers = [s.where for s in signs if s.where] + ([attention["layer"]] if attention and attention["layer"] else [])
        trained = [s.trained_lr for s in signs if s.trained_lr is not None]
        return self.finding(
            sample,
            "warning",
            list(dict.fromkeys(layers)),
            f"likely to diverge (seen at step {raised['step']}): " + "; ".join(parts),
            raised_step=raised["step"],
            mechanism=signs[0].mechanism,
            mechanisms=[s.mechanism for s in signs],
            where=signs[0].where,
            signs=raised["signs"],
            trained_lr=min(trained, default=None),
            attention=attention,
            output_log_partition=partition,
            loss=raised["loss"],
        )

    def _diverged(self, sample: StepStats) -> Finding:
        raised = self.raised or {}
        found = self._warning(sample)
        lead = sample.step - raised["step"]
        how = "NaN or infinity" if not sample.finite else f"the loss at {fmt(sample.loss)}, {DIVERGED:g}× its lowest {fmt(self.level.lowest)}"
        found.message += f". The run diverged by step {sample.step} ({how}): this warning came {lead} steps ahead"
        found.first_step = raised["step"]
        found.evidence.update(diverged_step=sample.step, lead_steps=lead, loss=sample.loss)
        return found


def _partition(start: float | None, sample: StepStats) -> list[float] | None:
    """The output log-partition at the start and now, where both were measured."""
    now = sample.output_log_partition
    return [start, now] if start is not None and finite(now) else None


def _attention(sample: StepStats) -> dict[str, Any] | None:
    """The sample's largest attention logit, where, and the lowest attention entropy, when attention is near one-hot."""
    logit = sample.attention_logit_max
    if not finite(logit) or logit < ONE_HOT_LOGIT:
        return None
    entropy = sample.attention_entropy_min if finite(sample.attention_entropy_min) else None
    return {"logit": logit, "layer": sample.attention_layer, "head": sample.attention_head, "entropy": entropy}


def _moment_outlier(layers: tuple[LayerStats, ...]) -> tuple[str, float] | None:
    """The layer whose gradient RMS is largest against the RMS of Adam's second-moment estimate, and that factor."""
    ratios = [
        (layer.name, layer.grad_norm / math.sqrt(layer.size) / layer.moment_rms)
        for layer in layers
        if finite(layer.grad_norm) and layer.size and finite(layer.moment_rms) and layer.moment_rms > 0
    ]
    return max(ratios, key=lambda item: item[1], default=None)

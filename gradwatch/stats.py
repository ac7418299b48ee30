"""Plain records of floats that adapters hand to the core, one per sampled step.

``None`` means "not measured"; a measured NaN or infinity is real evidence
(of the ``nonfinite`` symptom), never a placeholder. Treat the records as
read-only (``dataclasses.replace`` makes a changed copy): the per-layer ones are
built by the hundreds per sample and skip a frozen dataclass's slower
construction, so their derived fields would not follow an assignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeGuard

CLIPPED = 0.99  # a step's total gradient norm below this share of the norm backward produced: the loop clipped it


@dataclass(slots=True)
class LayerStats:
    """Statistics of one trainable layer (all the parameters it owns directly).

    Norms are L2 over the layer's trainable parameters. ``zero_grad_rows`` is
    the share of output units whose whole gradient row is exactly zero, a
    dead-unit signal that needs no activation hook (it also covers ``F.relu``),
    over the training rows in ``zero_grad_window`` (several sampled batches).
    ``unit_spread`` says how far the layer's units (output features or
    channels) are from being copies of each other: the spread of their
    weights about the mean unit, over their size, read on a few units (about
    0.9 when random, 0 when they have the same weights, as a constant
    initialisation leaves them; not measured when those weights are all zero).
    ``size`` is the number of trainable elements (for RMS values: ``grad_norm / sqrt(size)``).
    ``moment_rms`` is the RMS of an Adam-type optimizer's second-moment estimate
    (``sqrt(mean(exp_avg_sq))``, read before the step, so it has not yet seen this
    step's gradient): the gradient scale the optimizer divides by.
    """

    name: str
    grad_norm: float | None = None
    weight_norm: float | None = None
    update_norm: float | None = None
    zero_grad_rows: float | None = None
    zero_grad_window: int | None = None
    unit_spread: float | None = None
    size: int | None = None
    moment_rms: float | None = None

    relative_grad: float | None = field(init=False, repr=False, compare=False)
    """``|g| / |W|``: the gradient on the scale of the weights it moves."""
    relative_update: float | None = field(init=False, repr=False, compare=False)
    """``|ΔW| / |W|`` across the optimizer step, ``|W|`` before it (healthy is about 1e-3)."""
    finite: bool = field(init=False, repr=False, compare=False)
    """False when a measured gradient, weight or update norm is NaN or infinite."""

    def __post_init__(self) -> None:  # derived once: the detectors read them for every layer of every sample
        grad, weight, update = self.grad_norm, self.weight_norm, self.update_norm
        self.relative_grad = ratio(grad, weight)
        self.relative_update = ratio(update, weight)
        self.finite = (
            (grad is None or math.isfinite(grad)) and (weight is None or math.isfinite(weight)) and (update is None or math.isfinite(update))
        )


@dataclass(slots=True)
class ActivationStats:
    """Output statistics of one activation module on one training batch.

    ``dead_share``: share of units (features or channels) never positive over
    the ``window`` training rows seen (several sampled batches), for ReLU units;
    a window of None is complete without a count (e.g. the whole training set
    in full-batch training).
    ``saturated_share``: share of outputs in the flat tails of a sigmoid or
    tanh on the batch, where the local derivative is below about 0.01.
    """

    name: str
    kind: str
    dead_share: float | None = None
    saturated_share: float | None = None
    window: int | None = None


@dataclass(frozen=True, slots=True)
class SequenceStats:
    """How much gradient reaches each time step of a recurrent layer's input.

    ``grad_by_step[t]`` is the norm of the loss gradient with respect to the
    layer's input at time step ``t`` (over batch and features), first to last.
    """

    name: str
    grad_by_step: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class StepStats:
    """Everything measured at one sampled optimizer step (0-based ``step``).

    ``loss`` is the mean loss the user reported since the previous sample;
    ``batch_rows``, the rows of the sampled step's batch (a loss over a few
    rows is noisy: one row may give a loss near 0 by chance).
    Layer weight norms are taken before the optimizer step, so ``|ΔW|/|W|``
    compares a step with the weights it changed. ``grad_norm_unclipped`` is
    the total gradient norm as backward produced it, before any clipping the
    training code applies; ``input_mean_abs`` and ``input_std`` describe the
    first layer's input (unscaled features are a cause of their own).

    Evidence of mistakes in the training code, where the adapter can see it:
    ``stale_grad``, the gradient already in ``.grad`` when this step's first
    backward began, relative to the gradient that backward produced (0 when
    cleared); ``eval_modules``, layers that behave differently in training
    (BatchNorm, Dropout) found in eval mode during the step;
    ``orphan_layers``, layers whose parameters get gradients but are in no
    optimizer's param groups and have never changed; ``lr_cycles``, the times
    the learning rate has so far fallen near zero and climbed smoothly back
    (read at every optimizer step, see ``detectors.mistakes.LrCycles``).

    Precursors of a loss spike or a divergence, where the adapter can read them:
    ``output_log_partition``, the mean over positions of ``logsumexp`` of the
    model's output logits (z-loss keeps it near 0; it drifts where output
    logits diverge); ``attention_logit_max``, the largest pre-softmax attention
    logit of the sampled forward, in ``attention_layer`` (head
    ``attention_head``), and ``attention_entropy_min``, the lowest mean entropy
    (nats) of one attention's rows (near 0: one-hot attention);
    ``adam_eps``, the epsilon of an Adam-type optimizer (see ``LayerStats.moment_rms``);
    ``step_grad_norms``, the total gradient norm of every optimizer step since
    the previous sample, this one last (read on the device at each step, brought
    over with the sample).
    """

    step: int
    layers: tuple[LayerStats, ...] = ()
    activations: tuple[ActivationStats, ...] = ()
    loss: float | None = None
    lr: float | None = None
    sequences: tuple[SequenceStats, ...] = ()
    grad_norm_unclipped: float | None = None
    input_mean_abs: float | None = None
    input_std: float | None = None
    stale_grad: float | None = None
    eval_modules: tuple[str, ...] = ()
    orphan_layers: tuple[str, ...] = ()
    lr_cycles: int | None = None
    output_log_partition: float | None = None
    attention_logit_max: float | None = None
    attention_layer: str | None = None
    attention_head: int | None = None
    attention_entropy_min: float | None = None
    adam_eps: float | None = None
    step_grad_norms: tuple[float, ...] = ()
    batch_rows: int | None = None

    finite: bool = field(init=False, repr=False, compare=False)
    """False when the loss or any layer's norms hold NaN or infinity."""

    def __post_init__(self) -> None:
        finite = (self.loss is None or math.isfinite(self.loss)) and all(layer.finite for layer in self.layers)
        object.__setattr__(self, "finite", finite)

    @property
    def grad_norm(self) -> float | None:
        """The total gradient norm the optimizer stepped with (over the layers measured), where measured."""
        grads = [layer.grad_norm for layer in self.layers if finite(layer.grad_norm)]
        return math.sqrt(sum(g * g for g in grads)) if grads else None

    @property
    def clipped(self) -> bool:
        """The training code scaled the gradients down between backward and the optimizer step: it clips them."""
        total, unclipped = self.grad_norm, self.grad_norm_unclipped
        return total is not None and finite(unclipped) and total < CLIPPED * unclipped

    def scalars(self, *, per_layer: bool = False) -> dict[str, float]:
        """A few numbers for experiment loggers, keyed ``gradwatch/...`` (measured values only)."""
        grads = [layer.grad_norm for layer in self.layers if layer.grad_norm is not None]
        updates = [u for u in (layer.relative_update for layer in self.layers) if u is not None]
        flowing = [layer.relative_grad for layer in self.layers if finite(layer.relative_grad)]
        dead = [a.dead_share for a in self.activations if finite(a.dead_share)]
        out = {
            "gradwatch/grad_norm": math.sqrt(sum(g * g for g in grads)) if grads else None,
            "gradwatch/max_relative_update": max(updates, default=None),
            "gradwatch/flow_bottom_over_top": ratio(flowing[0], flowing[-1]) if len(flowing) > 1 else None,
            "gradwatch/max_dead_share": max(dead, default=None),
        }
        if per_layer:
            for layer in self.layers:
                key = logger_key(layer.name)
                out[f"gradwatch/grad_norm/{key}"] = layer.grad_norm
                out[f"gradwatch/relative_update/{key}"] = layer.relative_update
        return {k: v for k, v in out.items() if v is not None}


def logger_key(name: str) -> str:
    """A layer name as experiment loggers take it (TensorBoard tags allow no brackets): ``net[0].fc`` is ``net.0.fc``."""
    return name.replace("[", ".").replace("]", "").removeprefix("model.")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` when both are finite and the denominator positive."""
    if numerator is None or denominator is None:
        return None
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0.0:
        return None
    return numerator / denominator


def finite(value: float | None) -> TypeGuard[float]:
    """True for a measured, finite number: a value that can serve as evidence."""
    return value is not None and math.isfinite(value)

"""What a sampled step measures on the device, declared once for every collector.

A collector measures some of the ``MEASURES`` on a sampled step, packs them
into one flat device vector in the declaration's order (``Layout``), brings
that vector to the host in a single transfer and splits it back into named
parts. Squared norms are packed squared (they add up across parameters and
ranks) and come back through a square root.

Adding a measurement: declare it here, fill it in each collector that can
measure it (one that cannot leaves its field ``None``), and read it in the
detector named in ``needed_by``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

Per = Literal["step", "layer", "weight", "unit", "activation", "time step", "attention head"]
T = TypeVar("T")


@dataclass(frozen=True)
class Measure:
    """One packed measurement: ``name`` in the packed vector, the field it ``fills``, and what it holds a value
    (or a few) ``per``: the step, each layer, each row-judged weight, unit, probed activation, time step of
    a recurrent input, or attention head. ``needed_by``: the symptom ids of the detectors that read it."""

    name: str
    per: Per
    fills: str
    needed_by: tuple[str, ...] = ()
    squared: bool = False


MEASURES: tuple[Measure, ...] = (
    Measure(
        "grad",
        "layer",
        "LayerStats.grad_norm",
        ("vanishing_gradients", "exploding_gradients", "dead_relu", "nonfinite", "early_stagnation", "divergence_forecast"),
        squared=True,
    ),
    Measure(
        "weight",
        "layer",
        "LayerStats.weight_norm",
        ("weight_collapse", "nonfinite", "early_stagnation", "vanishing_gradients", "exploding_gradients", "chance_level_loss"),
        squared=True,
    ),
    Measure(
        "update",
        "layer",
        "LayerStats.update_norm",
        ("nonfinite", "early_stagnation", "vanishing_gradients", "exploding_gradients", "divergence_forecast", "chance_level_loss"),
        squared=True,
    ),
    Measure("raw_grad", "step", "StepStats.grad_norm_unclipped", ("exploding_gradients",), squared=True),
    Measure("moments", "layer", "LayerStats.moment_rms", ("divergence_forecast",)),  # summed exp_avg_sq
    Measure("spread", "weight", "LayerStats.unit_spread", ("early_stagnation",)),
    Measure("rows", "weight", "LayerStats.zero_grad_rows", ("dead_relu",)),  # rows never with gradient, then rows
    Measure("unit_grads", "unit", "LayerStats.zero_grad_rows", ("dead_relu",)),  # squared gradient column norms
    Measure("dead", "activation", "ActivationStats.dead_share", ("dead_relu",)),
    Measure("saturated", "activation", "ActivationStats.saturated_share", ("vanishing_gradients",)),
    Measure("sequences", "time step", "SequenceStats.grad_by_step", ("vanishing_gradients",)),
    Measure("inputs", "step", "StepStats.input_mean_abs"),  # and input_std: read for the unscaled-inputs cause
    Measure("log_partition", "step", "StepStats.output_log_partition", ("loss_spike", "divergence_forecast")),
    Measure("attention_maxima", "attention head", "StepStats.attention_logit_max", ("loss_spike", "divergence_forecast")),
    Measure("attention_entropies", "attention head", "StepStats.attention_entropy_min", ("loss_spike", "divergence_forecast")),
    Measure("stale", "step", "StepStats.stale_grad", ("gradients_not_cleared",)),  # left-over .grad / fresh gradient
    Measure("step_grads", "step", "StepStats.step_grad_norms", ("divergence_forecast",), squared=True),  # each step's since the last sample
    Measure(  # the sum and count of the losses since the previous sample
        "loss",
        "step",
        "StepStats.loss",
        (
            "loss_spike",
            "divergence_forecast",
            "nonfinite",
            "early_stagnation",
            "vanishing_gradients",
            "exploding_gradients",
            "chance_level_loss",
            "frozen_model",
        ),
    ),
)
BY_NAME = {measure.name: measure for measure in MEASURES}


class Layout:
    """Where each part a collector measured lies in one flat vector: in ``MEASURES``' order, end to end.

    ``lengths``: each measured part's number of values (parts of length 0 are left out).
    """

    def __init__(self, lengths: Mapping[str, int]) -> None:
        unknown = sorted(set(lengths) - BY_NAME.keys())
        if unknown:
            raise ValueError(f"undeclared measurements: {', '.join(unknown)} (declare them in gradwatch.measures)")
        self.lengths = {m.name: lengths[m.name] for m in MEASURES if lengths.get(m.name)}
        self.size = sum(self.lengths.values())

    def arrange(self, parts: Mapping[str, T]) -> list[T]:
        """The parts in the layout's order, to be concatenated."""
        return [parts[name] for name in self.lengths]

    def split(self, flat: Sequence[float]) -> dict[str, list[float]]:
        """A host copy of the packed vector as named parts, squared norms through their square root
        (a NaN or infinity stays: evidence; a negative square reads NaN)."""
        if len(flat) != self.size:
            raise ValueError(f"{len(flat)} values for a layout of {self.size}")
        parts, start = {}, 0
        for name, length in self.lengths.items():
            chunk = flat[start : start + length]
            start += length
            parts[name] = [math.sqrt(v) if v >= 0.0 else math.nan for v in chunk] if BY_NAME[name].squared else list(chunk)
        return parts

    def __repr__(self) -> str:
        return f"Layout({self.lengths})"

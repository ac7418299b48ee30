"""Root causes behind a symptom, named from the model's facts and the measured input scale.

A symptom says what goes wrong; a cause says why, with the specific fix. Each
rule here looks at the facts (output layer, loss) or at the input statistics
and either names a cause or stays silent.
"""

from __future__ import annotations

from dataclasses import dataclass

from .detectors.base import fmt
from .facts import ModelFacts
from .report import Remedy

# Mean |x| or std of the first layer's input above this: features in the hundreds or thousands.
UNSCALED_INPUT = 50.0
MULTICLASS = ("categorical_crossentropy", "sparse_categorical_crossentropy", "cross_entropy")
CROSS_ENTROPY = (*MULTICLASS, "binary_crossentropy", "binary_cross_entropy_with_logits")
REGRESSION = ("mean_squared_error", "mean_absolute_error", "mse_loss", "l1_loss")
PROBABILITY_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")  # Keras, without logits


@dataclass(frozen=True)
class Cause:
    """A likely root cause: what was found, in words with its numbers, and the fix for it."""

    id: str
    text: str
    remedy: Remedy
    blocks_learning: bool = False


def find_causes(facts: ModelFacts, input_scale: tuple[float, float] | None = None, loss: float | None = None) -> list[Cause]:
    """Every cause the facts, the latest input statistics and the latest loss point to."""
    return [cause for cause in (_unscaled_inputs(input_scale), _output_mismatch(facts, loss)) if cause is not None]


def _unscaled_inputs(scale: tuple[float, float] | None) -> Cause | None:
    if scale is None or max(scale) <= UNSCALED_INPUT:
        return None
    mean_abs, std = scale
    return Cause(
        "unscaled_inputs",
        f"the model's input is not scaled: mean |x| {fmt(mean_abs)}, std {fmt(std)} (standardised data has about 1)",
        Remedy(
            "standardize_inputs",
            "Standardise the inputs",
            f"your first layer sees inputs with mean |x| {fmt(mean_abs)} and std {fmt(std)}; subtract the training mean "
            "and divide by the standard deviation per feature (or scale to [0, 1]) so pre-activations start near 1",
        ),
    )


def output_cannot_fit(facts: ModelFacts, loss: float | None = None) -> bool:
    """True when the output cannot follow the loss at all (a cause stagnation can rest on).

    A constant output, a bounded output on a regression loss, or a linear output
    clipped by a loss that expects probabilities; a ReLU or extra softmax on the
    logits still trains, slowly.
    """
    cause = _output_mismatch(facts, loss)
    return cause is not None and cause.blocks_learning


def _output_mismatch(facts: ModelFacts, loss_value: float | None) -> Cause | None:
    output = facts.layers[-1] if facts.layers else None
    if output is None:
        return None
    activation, units = output.activation, output.units
    loss = (facts.loss or "").removesuffix("_from_logits")
    logits = bool(facts.loss and facts.loss.endswith("_from_logits"))
    blocks = False
    if activation == "Softmax" and units == 1:
        blocks = True
        text = f"the output layer {output.name} is a softmax over one unit: it is always exactly 1, whatever the input"
        fix = "use one sigmoid unit with binary cross-entropy for a binary label, or one softmax unit per class"
    elif loss in CROSS_ENTROPY and activation in ("ReLU", "ReLU6"):
        text = f"the output layer {output.name} ends in a ReLU under {loss}: outputs at 0 pass no gradient and cannot express low scores"
        fix = "drop the output ReLU: feed logits to the loss (from_logits=True in Keras, nn.CrossEntropyLoss in PyTorch)"
    elif loss in MULTICLASS and activation == "Sigmoid" and (units or 0) > 1:
        text = f"the output layer {output.name} has {units} independent sigmoids under {loss}, which expects one distribution over classes"
        fix = "use a softmax output (or logits with from_logits=True) for one label per example; keep sigmoids only with binary cross-entropy for multi-label"
    elif loss in PROBABILITY_LOSSES and not logits and activation is None and output.kind == "Dense":
        blocks = True
        text = f"the output layer {output.name} is linear under {loss}, which expects probabilities: outputs outside [0, 1] are clipped and pass no gradient"
        fix = f"add activation='{'sigmoid' if loss == 'binary_crossentropy' else 'softmax'}' to {output.name}, or compile the loss with from_logits=True"
    elif loss == "cross_entropy" and activation == "Softmax":
        text = f"the output layer {output.name} applies a softmax before {loss}, which applies log-softmax itself: gradients shrink"
        fix = "remove the final Softmax: nn.CrossEntropyLoss expects raw logits"
    elif loss in REGRESSION and activation == "Sigmoid" and loss_value is not None and loss_value > 1.0:
        # outputs in (0, 1) and targets in [0, 1] keep these losses under 1: the targets lie outside
        blocks = True
        text = (
            f"the output layer {output.name} is a sigmoid under {loss} at loss {fmt(loss_value)}: predictions are "
            "confined to (0, 1) and the targets lie outside it"
        )
        fix = "use a linear output for an unbounded regression target (or scale the targets to (0, 1))"
    else:
        return None
    return Cause("output_loss_mismatch", text, Remedy("fix_output", "Match the output layer to the loss", f"{text}; {fix}"), blocks)


__all__ = ["UNSCALED_INPUT", "Cause", "find_causes", "output_cannot_fit"]

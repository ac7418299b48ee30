"""Root causes, named from the model's facts, the loss's own computation and the measured input scale.

A symptom says what goes wrong; a cause says why, with the specific fix. Each
rule here looks at the facts (output layer, loss, initialisation, what trains)
or at the input statistics and either names a cause or stays silent. A cause
seen directly (``direct``: a softmax feeding a loss that applies its own, a
loss that broadcasts) is a finding of its own; the others are named under the
symptom they explain.
"""

from __future__ import annotations

from dataclasses import dataclass

from .facts import ADAPTIVE, MULTICLASS, ModelFacts
from .report import Remedy, Severity, fmt
from .symptoms import Symptom

# Mean |x| or std of the first layer's input above this: features in the hundreds or thousands.
UNSCALED_INPUT = 50.0
CROSS_ENTROPY = (*MULTICLASS, "binary_crossentropy", "binary_cross_entropy_with_logits", "nll_loss")
REGRESSION = ("mean_squared_error", "mean_absolute_error", "mse_loss", "l1_loss")
PROBABILITY_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")  # Keras, without logits
SUMMED_ROWS = 32  # a loss summed over at least this many rows takes steps that many times the mean's

# The causes seen directly, findings of their own; each brings its own fix.
OUTPUT_LOSS_MISMATCH = Symptom("output_loss_mismatch", mistake=True)
LOSS_BROADCAST = Symptom("loss_broadcast", mistake=True)
INIT_SCALE = Symptom("init_scale", mistake=True)
FLOAT64_MODEL = Symptom("float64_model", mistake=True)


@dataclass(frozen=True)
class Cause:
    """A likely root cause: what was found, in words with its numbers, and the fix for it.

    ``direct``: seen in the code's own computation, reported as a finding of its
    own (``id`` is then a declared mistake) at ``severity``.
    """

    id: str
    text: str
    remedy: Remedy
    blocks_learning: bool = False
    direct: bool = False
    severity: Severity = "warning"
    layers: tuple[str, ...] = ()


def find_causes(facts: ModelFacts, input_scale: tuple[float, float] | None = None, loss: float | None = None) -> list[Cause]:
    """Every cause the facts, the latest input statistics and the latest loss point to."""
    rules = (
        _output_mismatch(facts, loss),
        _broadcast(facts),
        _unscaled_inputs(input_scale),
        _summed_loss(facts),
        _init_scale(facts),
        _float64(facts),
    )
    return [cause for cause in rules if cause is not None]


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
    name = output.name if output is not None else "the model"
    # what the loss's computation shows feeds it (PyTorch) before what the last module applies; where the graph shows
    # another operation in between (pooling), the module's activation is only indirect evidence: an info note
    seen = facts.loss_input not in (None, "other")
    activation = facts.loss_input if seen else output.activation if output is not None else None
    units = output.units if output is not None else None
    loss = (facts.loss or "").removesuffix("_from_logits")
    logits = bool(facts.loss and facts.loss.endswith("_from_logits"))
    blocks = False
    severity: Severity = "warning"
    if activation == "Softmax" and units == 1:
        blocks = True
        text = f"the output layer {name} is a softmax over one unit: it is always exactly 1, whatever the input"
        fix = "use one sigmoid unit with binary cross-entropy for a binary label, or one softmax unit per class"
    elif loss == "cross_entropy" and activation == "Softmax":
        text = f"a softmax is applied to {name}'s output before the cross-entropy loss, which applies log-softmax itself: gradients shrink"
        fix = "remove the softmax: nn.CrossEntropyLoss / F.cross_entropy expect raw logits (apply softmax only to read probabilities)"
    elif loss == "cross_entropy" and activation == "LogSoftmax":
        severity = "info"
        text = f"log_softmax is applied to {name}'s output before a loss that applies log-softmax itself (harmless: it changes nothing)"
        fix = "drop one of them: CrossEntropyLoss on the logits, or log_softmax with nll_loss"
    elif loss == "nll_loss" and activation in ("Softmax", "Sigmoid", "linear", "ReLU"):
        got = "raw scores" if activation == "linear" else f"the output of a {activation.lower()}"
        text = f"nll_loss is given {got} from {name}, but it expects log-probabilities"
        fix = "apply log_softmax before nll_loss, or use nn.CrossEntropyLoss on the raw logits"
        blocks = activation == "linear"  # -x[y] falls without bound
    elif loss == "binary_cross_entropy_with_logits" and activation == "Sigmoid":
        text = f"a sigmoid is applied to {name}'s output before BCEWithLogitsLoss, which applies the sigmoid itself: outputs are squashed twice"
        fix = "remove the sigmoid: BCEWithLogitsLoss expects raw logits (use torch.sigmoid only to read probabilities)"
    elif loss in CROSS_ENTROPY and activation in ("ReLU", "ReLU6"):
        text = f"the output layer {name} ends in a ReLU under {loss}: outputs at 0 pass no gradient and cannot express low scores"
        fix = "drop the output ReLU: feed logits to the loss (from_logits=True in Keras, nn.CrossEntropyLoss in PyTorch)"
    elif logits and activation in ("Softmax", "Sigmoid"):
        text = (
            f"the output layer {name} applies a {activation.lower()} and the loss is compiled with from_logits=True, which "
            "expects raw scores: the probabilities are taken for logits (Keras on TensorFlow recovers the logits and warns)"
        )
        fix = f"drop activation='{activation.lower()}' from {name}, or compile the loss with from_logits=False"
    elif loss in MULTICLASS and activation == "Sigmoid" and (units or 0) > 1:
        text = f"the output layer {name} has {units} independent sigmoids under {loss}, which expects one distribution over classes"
        fix = "use a softmax output (or logits with from_logits=True) for one label per example; keep sigmoids only with binary cross-entropy for multi-label"
    elif loss in PROBABILITY_LOSSES and not logits and activation is None and output is not None and output.kind == "Dense":
        blocks = True
        text = f"the output layer {name} is linear under {loss}, which expects probabilities: outputs outside [0, 1] are clipped and pass no gradient"
        fix = f"add activation='{'sigmoid' if loss == 'binary_crossentropy' else 'softmax'}' to {name}, or compile the loss with from_logits=True"
    elif loss in REGRESSION and activation == "Sigmoid" and loss_value is not None and loss_value > 1.0:
        # outputs in (0, 1) and targets in [0, 1] keep these losses under 1: the targets lie outside
        blocks = True
        text = (
            f"the output layer {name} is a sigmoid under {loss} at loss {fmt(loss_value)}: predictions are "
            "confined to (0, 1) and the targets lie outside it"
        )
        fix = "use a linear output for an unbounded regression target (or scale the targets to (0, 1))"
    else:
        return None
    if facts.loss_input == "other" and not blocks:
        severity = "info"
    remedy = Remedy("fix_output", "Match the output layer to the loss", f"{text}; {fix}")
    layers = (name,) if output is not None else ()
    return Cause(OUTPUT_LOSS_MISMATCH.id, text, remedy, blocks, direct=True, severity=severity, layers=layers)


def _broadcast(facts: ModelFacts) -> Cause | None:
    if facts.loss_broadcast is None:
        return None
    text = (
        f"{facts.loss or 'the loss'} compares predictions and targets of different shapes ({facts.loss_broadcast}): they are "
        "broadcast against each other, so every prediction is scored against every target of the batch"
    )
    fix = "make the shapes equal, e.g. output.squeeze(-1) or target.view(-1, 1), before the loss"
    return Cause(LOSS_BROADCAST.id, text, Remedy("match_shapes", "Give predictions and targets the same shape", f"{text}; {fix}"), direct=True)


def _summed_loss(facts: ModelFacts) -> Cause | None:
    rows = facts.loss_rows or 0
    if facts.loss_reduction != "sum" or rows < SUMMED_ROWS or facts.optimizer in ADAPTIVE:
        return None
    effective = f": at learning rate {fmt(facts.lr)} that is an effective {fmt(facts.lr * rows)} per mean-loss step" if facts.lr else ""
    text = f"the loss is summed over the {rows} rows of a batch (reduction='sum'), so each {facts.optimizer or 'SGD'} step is {rows}× the mean's{effective}"
    fix = "use reduction='mean' (the default), or divide the learning rate by the batch size"
    return Cause("summed_loss", text, Remedy("mean_loss", "Average the loss over the batch", f"{text}; {fix}"))


def _init_scale(facts: ModelFacts) -> Cause | None:
    if facts.normalization and facts.residual:  # normalised residual blocks: no scale compounds from layer to layer
        return None
    compounded, off, judged = facts.init_mismatch()
    if len(off) < 2 or 2 * len(off) < judged:
        return None
    layer, want = off[0]
    factor = (layer.init_gain or 0.0) / want
    trend = f"grow about ×{fmt(factor)}" if factor > 1 else f"shrink about ×{fmt(factor)}"
    text = (
        f"{len(off)} of {judged} layers start far off the scale their activation wants: {layer.name} ({layer.activation}) has "
        f"std·√fan_in {fmt(layer.init_gain)} where {'He' if want > 1 else 'Xavier/LeCun'} initialisation gives {fmt(want)}, "
        f"so activations and gradients {trend} at every layer from the first step (×{fmt(compounded)} across the model)"
    )
    fix = "initialise with nn.init.kaiming_normal_ (ReLU) or xavier_normal_ (tanh, sigmoid), or keep the framework's default"
    direct = facts.init_far_off and not facts.normalization  # no normalisation undoes it: the scale itself is the mistake
    remedy = Remedy("rescale_init", "Initialise at the matched scale", f"{text}; {fix}")
    return Cause(INIT_SCALE.id, text, remedy, direct=direct, layers=tuple(layer.name for layer, _ in off))


def _float64(facts: ModelFacts) -> Cause | None:
    if facts.dtype != "float64":
        return None
    text = (
        "the model trains in float64: every step moves twice the bytes of float32, and on a GPU runs on its far slower "
        "double-precision units (NumPy arrays are float64 by default; model.double() to match them is the usual way in)"
    )
    fix = (
        "keep the weights in float32 and cast the inputs instead: x.float() or torch.from_numpy(x).float() (Keras: "
        "x.astype('float32'), floatx 'float32'; Lightning: precision='32-true' or a mixed precision, not '64-true')"
    )
    return Cause(FLOAT64_MODEL.id, text, Remedy("use_float32", "Train in float32", fix), direct=True, severity="info")


__all__ = ["UNSCALED_INPUT", "Cause", "find_causes", "output_cannot_fit"]

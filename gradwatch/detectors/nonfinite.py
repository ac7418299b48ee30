"""``nonfinite``: NaN or infinity in the loss, the gradients or the weights."""

from __future__ import annotations

import math

from ..facts import ModelFacts
from ..report import Finding, layer_list
from ..stats import StepStats
from ..symptoms import Symptom
from .base import Detector

NONFINITE = Symptom("nonfinite", remedies={"lower_lr": 1.0, "gradient_clipping": 0.9, "normalization": 0.5, "matched_init": 0.5})


class NonFinite(Detector):
    """Flags the first sampled step where a loss, gradient or weight norm is NaN/Inf.

    Always critical. The message and evidence name the window of steps in which
    it first appeared (after the previous sample), which later samples that
    still hold NaN/Inf keep, and the layers affected now, in forward order,
    split by gradients and weights.
    """

    declares = NONFINITE
    state = ("previous_step", "first_window")
    sees_nonfinite = True

    def __init__(self) -> None:
        self.previous_step: int | None = None
        self.first_window: list[int | None] | None = None  # [last finite sample's step, first non-finite one's]

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        if self.first_window is None:
            self.first_window = None if sample.finite else [self.previous_step, sample.step]
        self.previous_step = sample.step
        if sample.finite:  # computed once per sample from the same values
            return None
        since, first = self.first_window or [None, sample.step]
        bad_grads = [s.name for s in sample.layers if _bad(s.grad_norm)]
        bad_weights = [s.name for s in sample.layers if _bad(s.weight_norm) or _bad(s.update_norm)]
        bad_loss = _bad(sample.loss)
        if not (bad_grads or bad_weights or bad_loss):
            return None
        where = []
        if bad_loss:
            where.append(f"loss {sample.loss}")
        if bad_grads:
            where.append(f"gradients of {layer_list(bad_grads)}")
        if bad_weights:
            where.append(f"weights of {layer_list(bad_weights)}")
        window = f"between step {since + 1} and {first}" if since is not None else f"by step {first}"
        if first != sample.step:
            window += f" (still at step {sample.step})"
        layers = list(dict.fromkeys(bad_grads + bad_weights))
        return self.finding(
            sample,
            "critical",
            layers,
            f"non-finite values appeared {window}: " + ", ".join(where),
            after_step=since,
            loss=sample.loss,
            first_layer=layers[0] if layers else None,
            grad_layers=bad_grads,
            weight_layers=bad_weights,
        )


def _bad(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)

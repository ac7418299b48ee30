"""``dead_relu``: most units of a ReLU layer output zero for every input."""

from __future__ import annotations

from ..facts import ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from .base import Detector, check_count, check_fraction, fmt

DEAD_KINDS = frozenset({"ReLU", "ReLU6"})


class DeadReLU(Detector):
    """Flags ReLU layers where more than ``max_dead_share`` of the units are dead.

    Evidence per unit comes from the activation (never positive on the sampled
    batch) where a ReLU module is hooked, otherwise from the layer feeding it
    (its gradient row is exactly zero: covers ``F.relu`` and Keras'
    ``Dense(activation="relu")``). Gradient rows are never used for the output
    layer or for layers followed by a non-ReLU activation. Adapters report a
    share only once it covers enough rows (several sampled batches, see the
    collectors), so a layer's streak counts its measurements, and a sample
    without one leaves it as it is. The share must stay above the limit on
    ``min_consecutive`` measurements in a row; above ``critical_share`` it is
    critical. Defaults after SageMaker Debugger and TheDeepChecker (a layer
    with over 50% dead units).
    """

    symptom = "dead_relu"
    state = ("streaks",)

    def __init__(self, *, max_dead_share: float = 0.5, critical_share: float = 0.9, min_consecutive: int = 2) -> None:
        self.max_dead_share = check_fraction("max_dead_share", max_dead_share)
        self.critical_share = check_fraction("critical_share", critical_share)
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.streaks: dict[str, int] = {}

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        rows = _row_layers(sample, facts)
        shares = {a.name: a.dead_share for a in sample.activations if a.kind in DEAD_KINDS and finite(a.dead_share)}
        shares.update({s.name: s.zero_grad_rows for s in sample.layers if s.name in rows and finite(s.zero_grad_rows)})
        unmeasured = {name: n for name, n in self.streaks.items() if name not in shares}
        measured = {name: self.streaks.get(name, 0) + 1 for name, s in shares.items() if s > self.max_dead_share}  # type: ignore[operator]
        self.streaks = {**unmeasured, **measured}
        dead = {name: shares[name] for name, n in measured.items() if n >= self.min_consecutive}
        if not dead:
            return None
        worst = max(dead, key=dead.__getitem__)
        return self.finding(
            sample,
            "critical" if dead[worst] > self.critical_share else "warning",
            list(dead),
            f"{len(dead)} layer(s) with over {fmt(100 * self.max_dead_share)}% dead units; "
            f"{worst}: {fmt(100 * dead[worst])}% never active on the batch",
            dead_share=shares,
            source={name: ("gradient rows" if name in rows else "activations") for name in dead},
        )


def _row_layers(sample: StepStats, facts: ModelFacts) -> set[str]:
    """Layers judged by zero gradient rows: ReLU or unknown activation, not measured at an
    activation module, not the output layer, and not starved: when the next layer up passes
    no gradient at all, every row below is zero whether its units are alive or not."""
    measured = {a.name for a in sample.activations if finite(a.dead_share)}
    known = {layer.name: layer for layer in facts.layers}
    rows = set()
    for stats, above in zip(sample.layers[:-1], sample.layers[1:]):
        layer = known.get(stats.name)
        if above.grad_norm == 0:
            continue
        if layer is None or (layer.activation in (None, *DEAD_KINDS) and layer.activation_module not in measured):
            rows.add(stats.name)
    return rows

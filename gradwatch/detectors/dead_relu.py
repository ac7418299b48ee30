"""``dead_relu``: most units of a ReLU layer output zero for every input."""

from __future__ import annotations

from collections.abc import Collection

from ..facts import DEAD_KINDS, LayerFacts, ModelFacts
from ..report import Finding
from ..stats import StepStats, finite
from ..symptoms import Symptom
from .base import Detector, check_count, check_fraction, counted, fmt

WINDOW_ROWS = 256  # a unit is dead only if it never fires over sampled batches of this many training rows in all
DEAD_RELU = Symptom("dead_relu", remedies={"leaky_relu": 1.0, "lower_lr": 0.7, "matched_init": 0.8, "normalization": 0.7})


class DeadReLU(Detector):
    """Flags ReLU layers where more than ``max_dead_share`` of the units are dead.

    Evidence per unit comes from the activation (never positive on the sampled
    batch) where a ReLU module is hooked, otherwise from the layer feeding it
    (its gradient row is exactly zero: covers ``F.relu`` and Keras'
    ``Dense(activation="relu")``). Gradient rows are never used for the output
    layer or for layers followed by a non-ReLU activation. Shares come over a
    window of training rows that grows across sampled batches: one small batch
    leaves many units of a naturally sparse layer silent by chance. A window of
    ``full_window`` rows is judged against ``max_dead_share``; a smaller one of
    at least ``min_window`` rows only against ``critical_share`` (nearly the
    whole layer silent); smaller or unjudged ones leave the streak as it is.
    The share must be over the limit on ``min_consecutive`` judged samples in
    a row; above ``critical_share`` it is critical. Defaults after SageMaker
    Debugger and TheDeepChecker (a layer with over 50% dead units).
    """

    declares = DEAD_RELU
    state = ("streaks",)

    def __init__(
        self,
        *,
        max_dead_share: float = 0.5,
        critical_share: float = 0.9,
        min_consecutive: int = 2,
        full_window: int = WINDOW_ROWS,
        min_window: int = 32,
    ) -> None:
        self.max_dead_share = check_fraction("max_dead_share", max_dead_share)
        self.critical_share = check_fraction("critical_share", critical_share)
        self.min_consecutive = check_count("min_consecutive", min_consecutive)
        self.full_window = check_count("full_window", full_window)
        self.min_window = check_count("min_window", min_window)
        self.streaks: dict[str, int] = {}

    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None:
        rows = _row_layers(sample, facts)
        windows = {a.name: (a.dead_share, a.window) for a in sample.activations if a.kind in DEAD_KINDS and finite(a.dead_share)}
        windows.update({s.name: (s.zero_grad_rows, s.zero_grad_window) for s in sample.layers if s.name in rows and finite(s.zero_grad_rows)})
        limits = {name: self._limit(window) for name, (_, window) in windows.items()}
        shares: dict[str, float] = {name: share for name, (share, _) in windows.items() if limits[name] is not None}
        unjudged = {name: n for name, n in self.streaks.items() if name not in shares}
        judged = {name: self.streaks.get(name, 0) + 1 for name, share in shares.items() if share > (limits[name] or 1.0)}
        self.streaks = {**unjudged, **judged}
        dead = {name: shares[name] for name, n in judged.items() if n >= self.min_consecutive}
        if not dead:
            return None
        worst = max(dead, key=dead.__getitem__)
        feeding = {layer.activation_module: layer.name for layer in facts.layers if layer.activation_module}  # ReLU module -> its layer
        where = f"{worst}, the ReLU after {feeding[worst]}" if worst in feeding else worst
        return self.finding(
            sample,
            "critical" if dead[worst] > self.critical_share else "warning",
            list(dict.fromkeys(feeding.get(name, name) for name in dead)),
            f"{counted(len(dead), 'layer')} with over {fmt(100 * self.max_dead_share)}% dead units; "
            f"{where}: {fmt(100 * dead[worst])}% never active over {windows[worst][1] or 'the'} training rows",
            dead_share=shares,
            window_rows={name: windows[name][1] for name in dead},
            source={name: ("gradient rows" if name in rows else "activations") for name in dead},
        )

    def _limit(self, window: int | None) -> float | None:
        """The dead share a window of ``window`` rows must exceed, or None if it is too small to judge."""
        if window is None or window >= self.full_window:
            return self.max_dead_share
        return self.critical_share if window >= self.min_window else None


def row_judged(layer: LayerFacts | None, measured: Collection[str]) -> bool:
    """Whether a layer's units may be judged by its zero gradient rows: the activation after it is a
    ReLU or unknown, and not measured at an activation module (``measured``: those that were)."""
    return layer is None or (layer.activation in (None, *DEAD_KINDS) and layer.activation_module not in measured)


def _row_layers(sample: StepStats, facts: ModelFacts) -> set[str]:
    """Layers judged by zero gradient rows: ReLU or unknown activation, not measured at an
    activation module, not the output layer, and not starved: when the next layer up passes
    no gradient at all, every row below is zero whether its units are alive or not."""
    layers = sample.layers
    rowed = [i for i in range(len(layers) - 1) if layers[i].zero_grad_rows is not None]
    if not rowed:
        return set()
    measured = {a.name for a in sample.activations if finite(a.dead_share)}
    known = {layer.name: layer for layer in facts.layers}
    return {layers[i].name for i in rowed if layers[i + 1].grad_norm != 0 and row_judged(known.get(layers[i].name), measured)}

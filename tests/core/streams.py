"""Synthetic sampled-step streams for the core's unit tests (no framework needed)."""

from __future__ import annotations

from collections.abc import Sequence

from gradwatch import ActivationStats, LayerStats, StepStats


def sample(
    step: int,
    relative_grads: Sequence[float | None] = (0.01, 0.01, 0.01),
    *,
    weights: Sequence[float] | None = None,
    relative_updates: Sequence[float | None] | None = None,
    zero_rows: Sequence[float | None] | None = None,
    unit_spreads: Sequence[float | None] | None = None,
    activations: Sequence[ActivationStats] = (),
    loss: float | None = None,
    lr: float | None = None,
) -> StepStats:
    """A step of layers l0..lN whose gradients and updates are given relative to the weights."""
    n = len(relative_grads)
    weights = weights or [1.0] * n
    updates = relative_updates or [None] * n
    rows = zero_rows or [None] * n
    spreads = unit_spreads or [None] * n
    layers = tuple(
        LayerStats(
            f"l{i}",
            grad_norm=None if g is None else g * w,
            weight_norm=w,
            update_norm=None if u is None else u * w,
            zero_grad_rows=r,
            unit_spread=spread,
        )
        for i, (g, w, u, r, spread) in enumerate(zip(relative_grads, weights, updates, rows, spreads))
    )
    return StepStats(step, layers, tuple(activations), loss=loss, lr=lr)


def feed(detector, samples, facts=None):  # type: ignore[no-untyped-def]
    """Observe every sample; return the list of per-sample results."""
    from gradwatch import ModelFacts

    return [detector.observe(s, facts or ModelFacts()) for s in samples]

"""Plain PyTorch: ``watch(model, optimizer)`` diagnoses the run, ``trial()`` tries the remedies.

    watcher = watch(model, optimizer, summary_path="gradwatch.json")
    for x, y in data:
        ...; loss.backward(); optimizer.step(); watcher.step(loss)
    report = watcher.close()     # console report + JSON summary

Gradients are read by optimizer step hooks (after backward, before the step),
update sizes across the step, activations by forward hooks; on sampled steps
the backward pass also reports the gradient norm before any clipping. A loop
that updates the weights by hand (no optimizer) is measured from the backward
pass and ``watcher.step()``. Unsampled steps cost a few Python calls and one
on-device addition for the loss.
"""

from __future__ import annotations

from .torch_trial import trial
from .torch_watch import Watcher, watch

__all__ = ["Watcher", "trial", "watch"]

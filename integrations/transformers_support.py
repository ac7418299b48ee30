"""What the Hugging Face Trainer callback needs besides event translation: pre-clip gradient norms, the
model's facts, the scheduler's learning rate, and the callback's place among the Trainer's callbacks."""

from __future__ import annotations

import math
import sys
from typing import Any

from gradwatch.stats import StepStats

from ._torch import torch


class PreClipNorms:
    """Gradient norms the Trainer read after clipping, scaled back to their pre-clip size where it can be.

    Clipping multiplies every gradient by one factor, the clip limit over the
    pre-clip global norm, which the Trainer logs as ``grad_norm`` on logged
    steps. Other sampled steps keep the post-clip values; ``note()`` says how
    many steps used which.
    """

    KINDS = ("raw (no clipping)", "raw (below max_grad_norm)", "pre-clip (rescaled with the Trainer's grad_norm)", "post-clip")

    def __init__(self, max_grad_norm: Any) -> None:
        self.limit = float(max_grad_norm) if max_grad_norm else None  # 0 or None: no clipping
        self._used = dict.fromkeys(self.KINDS, 0)

    def scale(self, pre_clip: float | None) -> float | None:
        """The factor that undoes this step's clipping; None when the step was not clipped or is not known."""
        limit = self.limit
        return (pre_clip + 1e-6) / limit if limit is not None and pre_clip is not None and pre_clip > limit else None

    def count(self, stats: StepStats, pre_clip: float | None) -> None:
        self._used[self._kind(stats, pre_clip)] += 1

    def note(self) -> str | None:
        used = [f"{count} sampled step(s): {kind}" for kind, count in self._used.items() if count]
        return "gradient norms: " + "; ".join(used) if used else None

    def _kind(self, stats: StepStats, pre_clip: float | None) -> str:
        if self.limit is None:
            return self.KINDS[0]
        if pre_clip is not None:
            return self.KINDS[2]
        total = math.sqrt(sum(layer.grad_norm**2 for layer in stats.layers if layer.grad_norm is not None))
        return self.KINDS[1] if total < self.limit * (1 - 1e-3) else self.KINDS[3]  # clipping leaves the total at the limit


def is_transformer(model: Any) -> bool:
    """Transformer models of the Hub add each block's input back to its output (residual connections)."""
    config = getattr(model, "config", None)
    return any(getattr(config, name, None) for name in ("n_layer", "num_hidden_layers", "num_layers"))


def scheduler_lr(scheduler: Any) -> float | None:
    """The learning rate this step uses: the scheduler steps after the optimizer."""
    if scheduler is None or not hasattr(scheduler, "get_last_lr"):
        return None
    value = scheduler.get_last_lr()[0]
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def finite(value: Any) -> float | None:
    """A logged number as a float when it is a finite one."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_before_loggers(callback: Any) -> None:
    """Move ``callback`` right after the Trainer's flow callback, so logger callbacks see its scalars.

    The Trainer puts user callbacks after its reporting ones (TensorBoard, W&B,
    the printer); ``on_log`` can only add to what later callbacks receive. The
    handler is the caller of this event (``CallbackHandler.call_event``); when
    it cannot be found the order is left alone and the scalars still reach
    ``trainer.state.log_history``.
    """
    frame = sys._getframe(2)  # run_before_loggers <- guard.run <- on_train_begin <- call_event
    for _ in range(4):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return
        handler = frame.f_locals.get("self")
        callbacks = getattr(handler, "callbacks", None)
        if type(handler).__name__ == "CallbackHandler" and isinstance(callbacks, list) and callback in callbacks:
            callbacks.remove(callback)
            flow = next((i for i, c in enumerate(callbacks) if type(c).__name__ == "DefaultFlowCallback"), -1)
            callbacks.insert(flow + 1, callback)
            return


__all__ = ["PreClipNorms", "finite", "is_transformer", "run_before_loggers", "scheduler_lr"]

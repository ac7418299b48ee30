"""Hugging Face Transformers: ``Trainer(..., callbacks=[GradWatchCallback(summary_path="gradwatch.json")])``.

The callback translates Trainer events into the PyTorch session's calls:
gradients are read in ``on_pre_optimizer_step``, update sizes by an optimizer
post-step hook, the loss from the ``loss`` the model returns to the Trainer
(or, for a custom ``compute_loss``, from the Trainer's logged loss), the
learning rate from the Trainer's scheduler.

Clipping: the Trainer clips before ``on_pre_optimizer_step``. A sampled step
that the Trainer also logs is scaled back to its pre-clip size with the
Trainer's logged ``grad_norm`` (``PreClipNorms``); the summary's notes say how
many sampled steps hold which norms.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from gradwatch.options import Framework, OptionArgs, takes_options
from gradwatch.report import Report
from gradwatch.session import Session

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._torch import ModelHook, torch
from .torch_cycle import TorchCycle
from .transformers_support import PreClipNorms, finite, is_transformer, run_before_loggers, scheduler_lr

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError('gradwatch\'s Transformers callback needs transformers: pip install "gradwatch[transformers]"') from exc

PART = "transformers callback"


class GradWatchCallback(TrainerCallback):
    """Diagnoses a Hugging Face ``Trainer`` run: live warnings, a console report, a JSON summary.

    ``every_n_steps``: measure every n-th optimizer step (default: the
    Trainer's ``logging_steps``), plus steps 1, 2, 4, … below n; steps are the
    Trainer's ``global_step`` (1-based), so sampled steps line up with logged
    ones. ``stop_on``: ``"critical"`` (or ``"warning"``) sets
    ``control.should_training_stop`` once such a finding appears. ``log_layers``:
    also put per-layer series in the Trainer's logs. Only the main process
    warns, prints and writes; under DDP the statistics it sees are combined
    across ranks, and every rank stops together.
    """

    @takes_options
    def __init__(self, **options: Unpack[OptionArgs]) -> None:
        self.session = Session(Framework.TRANSFORMERS, **options)
        self.guard = self.session.guard
        self.cycle: TorchCycle | None = None  # one per trainer.train() call
        self._clipping = PreClipNorms(None)
        self._handles: list[Any] = []
        self._reset()

    def _reset(self) -> None:
        """Per-run state: a callback may watch several ``trainer.train()`` calls, one report each."""
        self._lr: float | None = None
        self._deferred = False  # a sampled step waits for the Trainer's logged pre-clip norm
        self._model_loss = False  # the model returned a loss at least once
        self._unlogged: dict[str, float] = {}  # scalars of the latest sample, for the Trainer's log of that step
        self._unlogged_step = -1

    @property
    def report(self) -> Report | None:
        """The report of the latest ``train()``, once it ended (``session.report()``: the diagnosis so far)."""
        return self.session.final

    # -- life cycle --------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        if model is None or self.cycle is not None:
            return  # already watching this run
        self._reset()
        self._clipping = PreClipNorms(getattr(args, "max_grad_norm", None))
        by_steps = getattr(args.logging_strategy, "value", args.logging_strategy) == "steps"
        every = state.logging_steps if by_steps else None
        self.cycle = TorchCycle(model, self.session, main=bool(state.is_world_process_zero), every_n_steps=every)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if isinstance(inner, torch.optim.Optimizer):
            self.guard.run(PART, self.cycle.bind, [inner])
        self.session.update_facts(
            residual=True if is_transformer(model) else self.session.facts.residual,
            grad_clipping=self._clipping.limit is not None,
            lr=float(args.learning_rate),
        )
        self._handles.append(model.register_forward_hook(ModelHook(self._loss_hook)))
        self.guard.run(PART, run_before_loggers, self)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cycle is None:
            return
        if self._deferred:
            self._finish(state, control, pre_clip=None)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if note := self._clipping.note():
            self.session.note(note)
        if self.session.print_report and self.session.main and not getattr(args, "disable_tqdm", True):
            print(file=sys.stderr)  # the Trainer's progress bar ends without a newline until it closes, after this callback
        self.cycle.close(state.global_step)
        self.cycle = None

    # -- one optimizer step ------------------------------------------------------------------
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cycle is None:
            return
        if self._deferred:  # the Trainer did not log after all
            self._finish(state, control, pre_clip=None)
        self.cycle.begin_step(state.global_step + 1)
        self.cycle.arm_backward(state.global_step + 1, full=False)  # every step's norm before the Trainer clips it

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None, **kwargs: Any) -> None:
        if self.cycle is None:
            return
        step = state.global_step + 1
        self.cycle.before_step(step)
        if self.session.should_sample(step):
            self._lr = self.guard.run(PART, scheduler_lr, lr_scheduler)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.cycle is None or not self.cycle.pending:
            return control
        if self._clipping.limit is not None and control.should_log:
            self._deferred = True  # the Trainer logs this step next, with its pre-clip norm
            return control
        return self._finish(state, control, pre_clip=None)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if self.cycle is None or logs is None:
            return control
        logged_loss = finite(logs.get("loss"))
        if not self._model_loss and logged_loss is not None:
            self.cycle.add_loss(logged_loss)  # a custom compute_loss: take the Trainer's logged loss
        if self._deferred:
            self._finish(state, control, pre_clip=finite(logs.get("grad_norm")))
        if self._unlogged and self.session.main and self._unlogged_step == state.global_step:
            logs.update(self._unlogged)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(self._unlogged)
        self._unlogged = {}
        return control

    def _finish(self, state: Any, control: Any, *, pre_clip: float | None) -> Any:
        """Diagnose the pending sample; ``pre_clip``: the Trainer's pre-clip global norm of that step."""
        self._deferred = False
        assert self.cycle is not None
        stats = self.cycle.end_step(state.global_step, lr=self._lr, grad_scale=self._clipping.scale(pre_clip))
        if stats is not None:
            self._clipping.count(stats, pre_clip)
            self._unlogged = {k: v for k, v in self.session.latest.items() if math.isfinite(v)}
            self._unlogged_step = stats.step
        if self.session.stop_requested and not control.should_training_stop:
            control.should_training_stop = True  # decided by every rank together
            self.session.stop()
        return control

    def _loss_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.cycle is None or not module.training or not torch.is_grad_enabled():
            return
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() > 0:
            self._model_loss = True
            self.cycle.add_loss(loss)


__all__ = ["GradWatchCallback"]

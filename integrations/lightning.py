"""PyTorch Lightning: ``Trainer(callbacks=[GradWatchCallback(summary_path="gw.json")])``.

The callback only translates Lightning events into the PyTorch session's calls:
gradients are read in ``on_before_optimizer_step`` (after accumulation and AMP
unscaling, before clipping), update sizes by an optimizer post-step hook.
Works with ``lightning.pytorch`` and ``pytorch_lightning`` Trainers alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from gradwatch.detectors import Detector
from gradwatch.options import check_callback_options
from gradwatch.report import Report, Severity, StopSeverity
from gradwatch.safety import FaultGuard

from . import torch_distributed
from ._torch import torch
from .torch_session import TorchSession


def _callback_bases() -> tuple[type, ...]:
    """Lightning's ``Callback`` from every installed flavour, so both Trainers accept the callback."""
    bases = []
    for module in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(__import__(module, fromlist=["Callback"]).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError('gradwatch\'s Lightning callback needs Lightning: pip install "gradwatch[lightning]"')
    return tuple(bases)


class GradWatchCallback(*_callback_bases()):  # type: ignore[misc]
    """Diagnoses a Lightning fit: live warnings, a console report at the end, a JSON summary.

    ``every_n_steps``: measure every n-th optimizer step (default: the
    Trainer's ``log_every_n_steps``), plus steps 1, 2, 4, … below n.
    ``stop_on``: ``"critical"`` (or ``"warning"``) sets ``trainer.should_stop``
    once such a finding appears; off by default. ``log_layers``: also send
    per-layer series to the loggers, not just a few scalars. Only global rank
    zero warns, logs, prints and writes; under DDP and FSDP2 strategies the
    statistics every rank sees are the ones combined across ranks.
    """

    def __init__(
        self,
        *,
        summary_path: str | os.PathLike[str] | None = None,
        every_n_steps: int | None = None,
        stop_on: StopSeverity | None = None,
        log_layers: bool = False,
        detectors: Sequence[Detector] | None = None,
        history_size: int = 128,
        warn_on: Severity | None = "warning",
        print_report: bool = True,
        autosave_every_n_steps: int | None = 500,
        strict: bool = False,
    ) -> None:
        # The session (and its Monitor) is built in setup(): check every option now, before the fit starts.
        detectors, summary_path = check_callback_options(
            summary_path=summary_path,
            every_n_steps=every_n_steps,
            stop_on=stop_on,
            log_layers=log_layers,
            detectors=detectors,
            history_size=history_size,
            warn_on=warn_on,
            print_report=print_report,
            autosave_every_n_steps=autosave_every_n_steps,
        )
        self.options: dict[str, Any] = {
            "detectors": detectors,
            "history_size": history_size,
            "autosave_every_n_steps": autosave_every_n_steps,
        }
        self.summary_path = summary_path
        self.every_n_steps = every_n_steps
        self.stop_on = stop_on
        self.log_layers = log_layers
        self.warn_on = warn_on
        self.print_report = print_report
        self.guard = FaultGuard(strict=strict)
        self.session: TorchSession | None = None
        self.report: Report | None = None
        self._restored: dict[str, Any] | None = None
        self._step_at_batch_start = 0

    # -- life cycle --------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: torch.nn.Module, stage: str) -> None:
        if stage != "fit":
            return
        zero = trainer.is_global_zero
        self.session = TorchSession(
            pl_module,
            framework="lightning",
            guard=self.guard,
            stop_on=self.stop_on,
            every_n_steps=self.every_n_steps or trainer.log_every_n_steps,
            warn_on=self.warn_on if zero else None,
            summary_path=self.summary_path if zero else None,
            **self.options,
        )
        self.report = None
        if self._restored is not None:
            self.session.monitor.load_state_dict(self._restored)

    def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        if self.session is not None:
            self.guard.run("lightning callback", self.session.bind, trainer.optimizers)

    def on_fit_end(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        self._close(trainer)

    def on_exception(self, trainer: Any, pl_module: torch.nn.Module, exception: BaseException) -> None:
        self._close(trainer)

    def teardown(self, trainer: Any, pl_module: torch.nn.Module, stage: str) -> None:
        if stage == "fit":
            self._close(trainer)

    def _close(self, trainer: Any) -> None:
        if self.session is not None and self.report is None:
            print_report = self.print_report and trainer.is_global_zero
            self.report = self.session.close(trainer.global_step, print_report=print_report)

    # -- one optimizer step ------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Any, pl_module: torch.nn.Module, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step
        if self.session is not None:
            self.session.begin_step(trainer.global_step)

    def on_before_optimizer_step(self, trainer: Any, pl_module: torch.nn.Module, optimizer: Any) -> None:
        if self.session is not None:
            self.session.before_step(trainer.global_step, scale=_scale_left_in_gradients(trainer, optimizer), optimizer=_unwrap(optimizer))

    def on_train_batch_end(self, trainer: Any, pl_module: torch.nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.session is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            accumulated = pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1
            self.session.add_loss(loss * trainer.accumulate_grad_batches if accumulated else loss)
        if trainer.global_step == self._step_at_batch_start:
            return  # inside an accumulation window: no optimizer step yet
        other = trainer.world_size > 1 and not torch_distributed.active()  # ranks not joined by torch.distributed (XLA)
        reduce = (lambda t: trainer.strategy.reduce(t, reduce_op="mean")) if other else None
        stats = self.session.end_step(self._step_at_batch_start, reduce=reduce)  # combined across ranks
        if stats is not None and trainer.is_global_zero and trainer.loggers:
            self.guard.run("lightning logging", _log, trainer, stats.scalars(per_layer=self.log_layers))
        self._maybe_stop(trainer)

    def _maybe_stop(self, trainer: Any) -> None:
        if self.session is None or not self.session.stop_requested or trainer.should_stop:
            return
        trainer.should_stop = True  # decided by every rank together (TorchSession.end_step)
        if trainer.is_global_zero:
            self.session.monitor.stop()

    # -- checkpointing -----------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Two gradwatch callbacks in one Trainer (say, different summary paths) keep separate checkpoint state."""
        return self._generate_state_key(summary_path=str(self.summary_path) if self.summary_path else None)

    def state_dict(self) -> dict[str, Any]:
        return self.session.monitor.state_dict() if self.session is not None else dict(self._restored or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict
        if self.session is not None:
            self.session.monitor.load_state_dict(state_dict)


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside Lightning's ``LightningOptimizer`` wrapper."""
    return getattr(optimizer, "optimizer", optimizer) if not isinstance(optimizer, torch.optim.Optimizer) else optimizer


def _scale_left_in_gradients(trainer: Any, optimizer: Any) -> float | None:
    """The AMP loss scale when a fused optimizer unscales inside its own step (gradients still scaled)."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not getattr(optimizer, "_step_supports_amp_scaling", False):
        return None
    return float(scaler.get_scale())


def _log(trainer: Any, metrics: dict[str, float]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


__all__ = ["GradWatchCallback"]

"""PyTorch Lightning: ``Trainer(callbacks=[GradWatchCallback(summary_path="gw.json")])``.

The callback only translates Lightning events into the PyTorch session's calls:
gradients are read in ``on_before_optimizer_step`` (after accumulation and AMP
unscaling, before clipping), update sizes by an optimizer post-step hook.
Works with ``lightning.pytorch`` and ``pytorch_lightning`` Trainers alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradwatch.options import Framework, OptionArgs, takes_options
from gradwatch.report import Report
from gradwatch.session import Session

if TYPE_CHECKING:
    from typing_extensions import Unpack

from . import torch_distributed
from ._torch import torch
from .torch_cycle import TorchCycle


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

    @takes_options
    def __init__(self, **options: Unpack[OptionArgs]) -> None:
        self.session = Session(Framework.LIGHTNING, **options)
        self.guard = self.session.guard
        self.cycle: TorchCycle | None = None  # one per fit
        self._step_at_batch_start = 0

    @property
    def report(self) -> Report | None:
        """The report of the latest fit, once it ended (``session.report()``: the diagnosis so far)."""
        return self.session.final

    # -- life cycle --------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: torch.nn.Module, stage: str) -> None:
        if stage == "fit":
            every = trainer.log_every_n_steps
            self.cycle = TorchCycle(pl_module, self.session, main=trainer.is_global_zero, every_n_steps=every)

    def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        if self.cycle is not None:
            self.guard.run("lightning callback", self.cycle.bind, trainer.optimizers)

    def on_fit_end(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        self._close(trainer)

    def on_exception(self, trainer: Any, pl_module: torch.nn.Module, exception: BaseException) -> None:
        self._close(trainer)

    def teardown(self, trainer: Any, pl_module: torch.nn.Module, stage: str) -> None:
        if stage == "fit":
            self._close(trainer)

    def _close(self, trainer: Any) -> None:
        if self.cycle is not None:  # a second call (teardown after on_fit_end) returns the same report
            self.cycle.close(trainer.global_step)

    # -- one optimizer step ------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Any, pl_module: torch.nn.Module, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step
        if self.cycle is not None:
            self.cycle.begin_step(trainer.global_step)

    def on_before_backward(self, trainer: Any, pl_module: torch.nn.Module, loss: torch.Tensor) -> None:
        if self.cycle is not None:
            self.cycle.read_loss_graph(loss)  # the loss on_train_batch_end gets is detached

    def on_before_optimizer_step(self, trainer: Any, pl_module: torch.nn.Module, optimizer: Any) -> None:
        if self.cycle is not None:
            self.cycle.before_step(trainer.global_step, scale=_scale_left_in_gradients(trainer, optimizer), optimizer=_unwrap(optimizer))

    def on_train_batch_end(self, trainer: Any, pl_module: torch.nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.cycle is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            accumulated = pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1
            self.cycle.add_loss(loss * trainer.accumulate_grad_batches if accumulated else loss)
        if trainer.global_step == self._step_at_batch_start:
            return  # inside an accumulation window: no optimizer step yet
        other = trainer.world_size > 1 and not torch_distributed.active()  # ranks not joined by torch.distributed (XLA)
        reduce = (lambda t: trainer.strategy.reduce(t, reduce_op="mean")) if other else None
        stats = self.cycle.end_step(self._step_at_batch_start, reduce=reduce)  # combined across ranks
        if stats is not None and trainer.is_global_zero and trainer.loggers:
            self.guard.run("lightning logging", _log, trainer, self.session.latest)
        if self.session.stop_requested and not trainer.should_stop:  # decided by every rank together
            trainer.should_stop = True
            self.session.stop()

    # -- checkpointing -----------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Two gradwatch callbacks in one Trainer (say, different summary paths) keep separate checkpoint state."""
        path = self.session.summary_path
        key: str = self._generate_state_key(summary_path=str(path) if path else None)
        return key

    def state_dict(self) -> dict[str, Any]:
        return self.session.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.session.load_state_dict(state_dict)


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

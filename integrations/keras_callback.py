"""Keras 3: the ``GradWatchCallback`` (imported from ``gradwatch.integrations.keras``), which translates Keras
events into core calls: no thresholds and no diagnosis here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradwatch.checks import check_flag
from gradwatch.console import print_report
from gradwatch.options import Framework, OptionArgs, takes_options
from gradwatch.report import Report
from gradwatch.session import Session

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._keras import keras
from .keras_facts import learning_rate, model_facts
from .keras_fit import FitCalls, steps_in_call, steps_per_execution
from .keras_stats import KerasCollector

COLLECTOR = "keras collector"


class GradWatchCallback(keras.callbacks.Callback):
    """Diagnoses ``model.fit``: live warnings, a console report at the end, a JSON summary.

    ``every_n_steps``: measure every n-th training batch, plus batches 1, 2, 4,
    … below n. ``stop_on``: ``"critical"`` (or ``"warning"``) sets
    ``model.stop_training`` once such a finding appears. ``log_metrics``: add a
    few ``gradwatch/...`` values to ``logs`` at each epoch end (CSVLogger,
    TensorBoard; the progress bar shows them too). One callback can serve
    several ``fit`` calls; the diagnosis continues across them.
    """

    @takes_options
    def __init__(self, *, log_metrics: bool = False, **options: Unpack[OptionArgs]) -> None:
        super().__init__()
        self.session = Session(f"{Framework.KERAS}/{keras.backend.backend()}", **options)
        self.guard = self.session.guard
        self.log_metrics = check_flag("log_metrics", log_metrics)
        self._calls = FitCalls()  # which hook calls of this fit to act on (listed twice, a second callback)
        self.collector: KerasCollector | None = None
        self.step = 0
        self._sampled = False
        self._unbuilt = False  # fit began before the model had weights: measuring starts once it has
        self._per_call = 1  # optimizer steps per batch callback (steps_per_execution)

    @property
    def report(self) -> Report | None:
        """The report of the latest ``fit``, once it ended (``session.report()``: the diagnosis so far)."""
        return self.session.final

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._calls.begin(self):
            self.guard.run(COLLECTOR, self._begin)

    def _begin(self) -> None:
        self._per_call = steps_per_execution(self.model, self.session)
        self._unbuilt = not self.model.trainable_weights  # a subclassed model gets its weights in its first step
        if self._unbuilt:
            return
        optimizer = self.model.optimizer
        if self.collector is None:
            self.collector = KerasCollector(self.model, guard=self.guard, every_n_steps=self.session.every_n_steps)
        self.collector.full_batch = (self.params or {}).get("steps") == 1
        facts = model_facts(self.model, optimizer)
        self.session.start(facts, resume=True)  # successive fit calls continue one diagnosis
        strategy = getattr(self.model, "distribute_strategy", None)  # TensorFlow only
        if facts.grad_clipping and strategy is not None and strategy.num_replicas_in_sync > 1:
            self.session.note("gradient norms are measured after Keras clipped each replica's gradients (tf.distribute sums them after clipping)")
        self.collector.install(optimizer, first_step=self.step, every_n_steps=self.session.every_n_steps)
        self.model.make_train_function(force=True)  # retrace so the wrapped optimizer is in the graph

    # Only on_train_batch_begin is overridden: a callback with on_train_batch_end makes Keras turn
    # the logs into Python floats (a host sync) after every batch. The previous sampled step is
    # read at the next batch's start instead (or at the end of fit).
    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._calls.act("on_train_batch_begin"):
            return
        if self._unbuilt and self.model.trainable_weights:
            self.session.note(f"the model was built by its first training step: measured from step {self.step}")
            self.guard.run(COLLECTOR, self._begin)
        in_sync = self._read_sampled_step(disarm=False)  # a read leaves the variables and loss totals current
        steps = steps_in_call(self._per_call, self.params, batch)
        self._sampled = self.collector is not None and any(self.session.should_sample(s) for s in range(self.step, self.step + steps))
        if self.collector is not None:
            self.guard.run(COLLECTOR, self.collector.arm, self._sampled)
        if self._sampled and self.collector is not None:
            self.guard.run(COLLECTOR, self.collector.begin_sample, self.collector.loss_totals if in_sync else None, updates=steps == 1)
        self.step += steps

    def _read_sampled_step(self, *, disarm: bool = True) -> bool:
        """Diagnose the sampled step that just ended, if any; True if it was read."""
        if not self._sampled or self.collector is None:
            return False
        self._sampled = False
        if disarm:
            self.guard.run(COLLECTOR, self.collector.arm, False)
        stats = self.guard.run(COLLECTOR, self.collector.read, self.step - 1, lr=learning_rate(self.model.optimizer))
        if stats is not None and stats.loss is None:
            self.session.note("the loss was not measured: the model has no mean metric named 'loss' or '...loss'")
        if stats is not None and self.session.record(stats) and not self.model.stop_training:
            self.model.stop_training = True
            self.session.stop()
        return stats is not None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._calls.act("on_test_begin"):
            self._read_sampled_step()  # before validation batches run through the measured layers

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._calls.act("on_epoch_end"):
            return
        self._read_sampled_step()
        if self.collector is not None:
            self.collector.loss_totals = None  # the next epoch restarts the loss tracker
        if logs is not None and self.log_metrics:
            logs.update(self.session.latest)
            logs["gradwatch/findings"] = float(sum(f.at_least("warning") for f in self.session.findings.values()))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._calls.act("on_train_end"):
            return
        self._read_sampled_step()
        if self.collector is not None and self.collector.uninstall():  # the optimizer and layers exactly as they were
            self.guard.run(COLLECTOR, self.model.make_train_function, True)  # back to the unwrapped step
        self._calls.end(self)
        self.session.close(self.step, render=print_report)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "monitor": self.session.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.session.load_state_dict(state["monitor"])


__all__ = ["GradWatchCallback"]

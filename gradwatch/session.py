"""One watched run, framework-free: the options, the schedule, observe, ``stop_on``, autosave and close.

Every adapter holds one ``Session`` and only translates its framework's
events into these calls:

    session = Session("keras/tensorflow", summary_path=..., stop_on=...)  # an ``Options``' keywords; bad ones fail here
    session.start(model_facts(model))                   # the run begins (facts, rank, default interval)
    if session.should_sample(step): ...                 # the adapter's collector measures this step
    if session.record(stats): ...                       # diagnose it; True: end training, then session.stop()
    report = session.close(steps, render=print_report)  # notes, JSON summary, console report

The adapter's collector does the measuring (arm before forward, capture the
gradients and the update, flush to a ``StepStats``); the session decides what
to measure and what the measurements mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .facts import ModelFacts
from .monitor import Monitor
from .options import DEFAULT_EVERY_N_STEPS, OptionArgs, Options
from .report import MIN_SAMPLES_TO_CLEAR, Finding, Report
from .safety import FaultGuard, warn
from .stats import StepStats

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Session:
    """The diagnosis of one run (or of successive runs of one model, with ``start(resume=True)``).

    ``every_n_steps=None`` takes the framework's own logging interval, given to
    ``start``. Only the main process (``start(main=True)``) warns, prints and
    writes; the others measure and take part in collective decisions silently.
    """

    def __init__(self, framework: str, options: Options | None = None, **changes: Unpack[OptionArgs]) -> None:
        self.options = Options(**changes) if options is None else replace(options, **changes)  # bad options fail here
        self.framework = str(framework)  # a Framework, or Keras' with its backend
        self.guard = FaultGuard(strict=self.options.strict)
        self.monitor = Monitor(framework=self.framework, guard=self.guard, options=self.options)
        self.summary_path = self.monitor.summary_path  # the checked path (only the main process writes it)
        self.print_report = self.options.print_report
        self.main = True
        self.final: Report | None = None  # the report of the last closed run
        self._latest: tuple[StepStats | None, dict[str, float] | None] = (None, {})  # the latest sample, its scalars once asked for
        self.last_observed: int | None = None  # the step of the latest sample diagnosed
        self.stop_requested = False
        self._skipped_steps = 0  # sampled steps whose optimizer step did not run (an AMP scaler skipped it)
        self._begun = False  # a run has started on this monitor
        self._printed: tuple[Any, ...] | None = None  # the verdict of the last report printed for this diagnosis

    def start(self, facts: ModelFacts, *, main: bool = True, every_n_steps: int | None = None, resume: bool = False) -> Monitor:
        """A run begins: ``facts`` of its model; ``main``: this process reports; ``every_n_steps``: the
        framework's logging interval, used when the user chose none; ``resume``: go on with the previous
        run's diagnosis (Keras' successive ``fit`` calls) instead of a fresh one. A diagnosis loaded
        from a checkpoint before the first run is continued."""
        if self._begun and not resume:
            self.monitor = Monitor(framework=self.framework, guard=self.guard, options=self.options)
            self._printed = None
        self._begun = True
        self.monitor.facts = facts
        self.monitor.every_n_steps = self.options.every_n_steps or max(int(every_n_steps or DEFAULT_EVERY_N_STEPS), 1)
        self.set_main(main)
        self.final, self.stop_requested, self._skipped_steps, self.last_observed = None, False, 0, None
        return self.monitor

    @property
    def facts(self) -> ModelFacts:
        """What is known of the model, its loss and its optimizer."""
        return self.monitor.facts

    @property
    def every_n_steps(self) -> int:
        """The sampling interval in use (see ``should_sample``)."""
        return self.monitor.every_n_steps

    @property
    def sampled_steps(self) -> int:
        """How many sampled steps had gradients so far: the evidence the diagnosis rests on."""
        return self.monitor.samples

    @property
    def findings(self) -> Mapping[str, Finding]:
        """The findings so far by symptom, read-only (``report()`` orders them)."""
        return MappingProxyType(self.monitor.findings)

    def set_facts(self, facts: ModelFacts) -> None:
        """What is known of the model, learned again (once its layers were built)."""
        self.monitor.facts = facts

    def update_facts(self, **changes: Any) -> None:
        """Learn more of the model (its loss, once seen; the batch's rows): ``ModelFacts`` fields by name."""
        self.monitor.facts = replace(self.monitor.facts, **changes)

    def skip_step(self) -> None:
        """A sampled step whose optimizer step did not run (an AMP grad scaler skipped it): not diagnosed, noted."""
        self._skipped_steps += 1

    def disable(self, part: str, reason: str) -> None:
        """Switch ``part`` of gradwatch off for the rest of the run, with a warning (main process) and a note saying why."""
        if self.guard.enabled(part):
            self.guard.failed[part] = reason
            if self.main:
                warn(f"gradwatch: {part} {reason}; training continues")

    def quiet(self) -> None:
        """Print no console report at close (a watcher replaced by a newer one on the same model)."""
        self.print_report = False

    @property
    def latest(self) -> dict[str, float]:
        """The latest sample's scalars, for experiment loggers (computed when first asked for)."""
        stats, scalars = self._latest
        if scalars is None:
            scalars = stats.scalars(per_layer=self.options.log_layers) if stats is not None else {}
            self._latest = (stats, scalars)
        return scalars

    def set_main(self, main: bool) -> None:
        """Whether this process reports; the others neither warn nor write."""
        self.main = main
        self.monitor.warn_on = self.options.warn_on if main else None
        self.monitor.summary_path = self.summary_path if main else None

    def should_sample(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is measured: see ``Monitor``'s sampling schedule."""
        return self.monitor.should_sample(step)

    def record(self, stats: StepStats | None, *, agree: Callable[[bool], bool] | None = None) -> bool:
        """Diagnose a measured step (None: this process has no sample of it); True once training should stop.

        ``agree``: where several processes must stop together, turns this
        process's answer into everyone's (any process saying yes makes it yes).
        """
        if stats is not None:
            self.last_observed = stats.step
            self.monitor.observe(stats)
            self._latest = (stats, None)
        if self.monitor.stop_on is None:
            return False
        serious = self.monitor.should_stop()
        self.stop_requested = agree(serious) if agree is not None else serious
        return self.stop_requested

    def stop(self) -> None:
        """Say why training stops (the adapter ended it because ``record`` returned True)."""
        if self.main:
            self.monitor.stop()

    def note(self, text: str) -> None:
        """Add a line to the summary's notes (once)."""
        if text not in self.monitor.notes:
            self.monitor.notes.append(text)

    def report(self, steps: int | None = None) -> Report:
        """The diagnosis so far (``steps``: the steps run, if more than were seen), or the closed run's report."""
        return self.final if self.final is not None else self.monitor.report(steps)

    def close(self, steps: int, *, unseen: str = "no training step was seen", render: Callable[[Report], object] | None = None) -> Report:
        """The run's end: notes on what was not measured, the JSON summary, the report handed to ``render``.

        ``unseen``: the adapter's advice when no step reached it. ``render``: the
        console (``gradwatch.console.print_report``), called on the main process
        when ``print_report`` is on; the engine itself renders nothing. A second call
        returns the same report. A resumed diagnosis (Keras' successive ``fit``
        calls) prints its report again only when its findings changed.
        """
        if self.final is not None:
            return self.final
        if self._skipped_steps:
            self.note(f"{self._skipped_steps} sampled step(s) skipped by the AMP grad scaler were ignored")
        samples = self.sampled_steps
        if steps == 0:
            self.note(unseen)
        elif samples == 0 and self.guard.failed:
            self.note(f"no step could be measured: {', '.join(self.guard.failed)} failed (below), not the training")
        elif samples == 0:
            self.note(
                "no step could be measured: no sampled optimizer step found a gradient (no backward pass reached "
                "the model's trainable parameters, or the gradients were cleared between backward and the step)"
            )
        elif samples < MIN_SAMPLES_TO_CLEAR and steps < MIN_SAMPLES_TO_CLEAR:
            self.note(f"the run had only {steps} step(s)")
        self.final = report = self.monitor.save(steps)
        verdict = (tuple((f.symptom, f.severity) for f in report.findings), report.too_little_measured)
        if render is not None and self.print_report and self.main and verdict != self._printed:  # resumed: only when changed
            self._printed = verdict
            self.guard.run("console report", render, report)
        return report

    def state_dict(self) -> dict[str, Any]:
        """The diagnosis so far, for a checkpoint."""
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpointed diagnosis."""
        self.monitor.load_state_dict(state)


__all__ = ["Session"]

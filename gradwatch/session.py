"""One watched run, framework-free: the engine that feeds sampled steps to the detectors and keeps what they find.

Every adapter holds one ``Session`` and only translates its framework's
events into these calls:

    session = Session("keras/tensorflow", summary_path=..., stop_on=...)  # an ``Options``' keywords; bad ones fail here
    session.start(model_facts(model))                   # the run begins (facts, rank, default interval)
    if session.should_sample(step): ...                 # the adapter's collector measures this step
    if session.record(stats): ...                       # diagnose it; True: end training, then session.stop()
    report = session.close(steps, render=print_report)  # notes, JSON summary, console report

The adapter's collector does the measuring (arm before forward, capture the
gradients and the update, flush to a ``StepStats``); the session decides what
to measure and what the measurements mean. Without an adapter, a session
diagnoses a stream of ``StepStats`` directly: ``Session(facts=...)``, then
``observe(stats)`` for each sample and ``report()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import remedies
from .causes import Cause, find_causes
from .detectors import default_detectors
from .facts import ModelFacts
from .history import History
from .options import DEFAULT_EVERY_N_STEPS, OptionArgs, Options
from .report import MIN_SAMPLES_TO_CLEAR, SEVERITY_RANK, Finding, Remedy, Report, layer_list
from .safety import FaultGuard, warn
from .stats import StepStats
from .symptoms import declared

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .detectors.base import Detector


class Session:
    """The diagnosis of one run (or of successive runs of one model, with ``start(resume=True)``).

    Each sample goes to one detector per symptom. A new finding (or one that
    got more severe) is raised once as a ``GradWatchWarning`` and logged on the
    ``gradwatch`` logger. With ``stop_on``, ``record`` says when training should
    end; the adapter ends it and calls ``stop()`` to say why.

    Sampling: every step that is a power of two below ``every_n_steps`` (so
    trouble at initialisation is seen early), then every ``every_n_steps``-th;
    ``every_n_steps=None`` takes the framework's logging interval given to
    ``start``, else 20. With a ``summary_path`` the JSON summary is rewritten
    atomically at least every ``autosave_every_n_steps`` steps, so a killed run
    leaves its last one. Only the main process (``start(main=True)``) warns,
    prints and writes; the others measure and take part in collective decisions
    silently. Before ``start``, a session diagnoses ``facts`` as the main process.
    """

    def __init__(
        self,
        framework: str = "unknown",
        options: Options | None = None,
        *,
        facts: ModelFacts | None = None,
        **changes: Unpack[OptionArgs],
    ) -> None:
        self.options = Options(**changes) if options is None else replace(options, **changes)  # bad options fail here
        self.framework = str(framework)  # a Framework, or Keras' with its backend
        self.guard = FaultGuard(strict=self.options.strict)
        self.summary_path = Path(self.options.summary_path) if self.options.summary_path is not None else None  # the checked path
        self.warn_on = self.options.warn_on  # None on the processes other than the main one
        self.stop_on = self.options.stop_on
        self.print_report = self.options.print_report
        self.main = True
        self.final: Report | None = None  # the report of the last closed run
        self.last_observed: int | None = None  # the step of the latest sample diagnosed
        self.stop_requested = False
        self._facts = facts or ModelFacts()
        self._every_n_steps = self.options.every_n_steps or DEFAULT_EVERY_N_STEPS
        self._latest: tuple[StepStats | None, dict[str, float] | None] = (None, {})  # the latest sample, its scalars once asked for
        self._skipped_steps = 0  # sampled steps whose optimizer step did not run (an AMP scaler skipped it)
        self._begun = False  # a run has started on this session
        self._printed: tuple[Any, ...] | None = None  # the verdict of the last report printed for this diagnosis
        self._begin_diagnosis()

    def _begin_diagnosis(self) -> None:
        """A fresh diagnosis: no findings, no history, no notes; the detectors the options chose."""
        self._detectors = tuple(default_detectors() if self.options.detectors is None else self.options.detectors)
        self._history = History(self.options.history_size)
        self._findings: dict[str, Finding] = {}
        self._notes: list[str] = []
        self._steps = 0  # one past the latest step seen
        self._samples = 0  # samples that had gradients
        self._input_scale: tuple[float, float] | None = None  # latest mean |x| and std of the model's input
        self._last_loss: float | None = None
        self._saved_at: int | None = None  # the step of the latest autosave
        self._ranked: tuple[ModelFacts, dict[str, tuple[Remedy, ...]]] = (self._facts, {})  # remedies per symptom, for these facts
        self._facts_causes: list[Cause] = []  # what find_causes says of the latest sample

    def start(self, facts: ModelFacts, *, main: bool = True, every_n_steps: int | None = None, resume: bool = False) -> Session:
        """A run begins: ``facts`` of its model; ``main``: this process reports; ``every_n_steps``: the
        framework's logging interval, used when the user chose none; ``resume``: go on with the previous
        run's diagnosis (Keras' successive ``fit`` calls) instead of a fresh one. A diagnosis loaded
        from a checkpoint before the first run is continued."""
        if self._begun and not resume:
            self._begin_diagnosis()
            self._printed = None
        self._begun = True
        self._facts = facts
        self._every_n_steps = self.options.every_n_steps or max(int(every_n_steps or DEFAULT_EVERY_N_STEPS), 1)
        self.set_main(main)
        self.final, self.stop_requested, self._skipped_steps, self.last_observed = None, False, 0, None
        return self

    @property
    def facts(self) -> ModelFacts:
        """What is known of the model, its loss and its optimizer."""
        return self._facts

    @property
    def every_n_steps(self) -> int:
        """The sampling interval in use (see ``should_sample``)."""
        return self._every_n_steps

    @property
    def sampled_steps(self) -> int:
        """How many samples had gradients so far: the evidence the diagnosis rests on."""
        return self._samples

    @property
    def findings(self) -> Mapping[str, Finding]:
        """The findings so far by symptom, read-only (``report()`` orders them)."""
        return MappingProxyType(self._findings)

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors in use, one per symptom."""
        return self._detectors

    @property
    def history(self) -> History:
        """The per-layer history kept for the summary and the pictures."""
        return self._history

    @property
    def input_scale(self) -> tuple[float, float] | None:
        """The latest mean |x| and standard deviation of the model's input, where measured."""
        return self._input_scale

    def set_facts(self, facts: ModelFacts) -> None:
        """What is known of the model, learned again (once its layers were built)."""
        self._facts = facts

    def update_facts(self, **changes: Any) -> None:
        """Learn more of the model (its loss, once seen; the batch's rows): ``ModelFacts`` fields by name."""
        self._facts = replace(self._facts, **changes)

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
        self.warn_on = self.options.warn_on if main else None

    def should_sample(self, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based) is measured: see the sampling schedule above."""
        n = self._every_n_steps
        return step % n == 0 or (step < n and step & (step - 1) == 0)

    def record(self, stats: StepStats | None, *, agree: Callable[[bool], bool] | None = None) -> bool:
        """Diagnose a measured step (None: this process has no sample of it); True once training should stop.

        ``agree``: where several processes must stop together, turns this
        process's answer into everyone's (any process saying yes makes it yes).
        """
        if stats is not None:
            self.last_observed = stats.step
            self.observe(stats)
            self._latest = (stats, None)
        if self.stop_on is None:
            return False
        serious = self.should_stop()
        self.stop_requested = agree(serious) if agree is not None else serious
        return self.stop_requested

    def observe(self, sample: StepStats) -> list[Finding]:
        """Run every detector on ``sample``; return findings that are new or got worse."""
        self._steps = max(self._steps, sample.step + 1)
        if any(layer.grad_norm is not None for layer in sample.layers):  # a sample without gradients clears nothing
            self._samples += 1
        if sample.loss is not None and math.isfinite(sample.loss):
            self._last_loss = sample.loss
        if sample.input_mean_abs is not None and sample.input_std is not None:
            self._input_scale = (sample.input_mean_abs, sample.input_std)
        if sample.lr is not None and math.isfinite(sample.lr) and sample.lr != self._facts.lr:  # a schedule moved it
            rose = self._facts.lr_rose or (self._samples > 1 and self._facts.lr is not None and sample.lr > self._facts.lr)
            self._facts = replace(self._facts, lr=sample.lr, lr_rose=rose)
        if sample.clipped and not self._facts.grad_clipping:  # the loop clips: never a remedy to suggest
            self._facts = replace(self._facts, grad_clipping=True)
        self.guard.run("history", self._history.add, sample, self._facts.kinds)
        raised = []
        self._facts_causes = find_causes(self._facts, self._input_scale, self._last_loss)  # once per sample
        finite = sample.finite
        for detector in self._detectors:
            if not (finite or detector.sees_nonfinite):
                continue
            found = self.guard.run(f"detector {detector.symptom}", detector.observe, sample, self._facts)
            if found is not None and self._merge(found):
                raised.append(self._findings[found.symptom])
        for cause in self._facts_causes:  # mistakes seen directly: findings of their own
            found = Finding(cause.id, cause.severity, sample.step, cause.layers, cause.text, remedies=(cause.remedy,), last_step=sample.step)
            if cause.direct and self._merge(found):
                raised.append(self._findings[cause.id])
        for finding in raised:
            if self.warn_on is not None and finding.at_least(self.warn_on):
                warn(format_warning(finding))
        every = self.options.autosave_every_n_steps
        due = every is not None and (self._saved_at is None or sample.step - self._saved_at >= every)
        if due and self._summary_target is not None:
            self._saved_at = sample.step
            self._save()
        return raised

    def first_at_least(self, severity: str | None) -> Finding | None:
        """The most severe finding at ``severity`` or above (None for no severity): what ``stop_on`` acts on."""
        if severity is None:
            return None
        serious = [f for f in self._findings.values() if f.at_least(severity)]
        return max(serious, key=lambda f: SEVERITY_RANK[f.severity], default=None)

    def should_stop(self) -> bool:
        """Whether a finding has reached ``stop_on`` (never without ``stop_on``)."""
        return self.first_at_least(self.stop_on) is not None

    def stop(self, how: str = "stopping training") -> None:
        """Say, on the main process, why training stops (the adapter ended it because ``record`` returned True);
        ``how``: what the adapter did about it, where it cannot end the training itself."""
        finding = self.first_at_least(self.stop_on)
        if self.main and finding is not None:
            warn(f"gradwatch: {how} (stop_on={self.stop_on!r}): {format_warning(finding).removeprefix('gradwatch: ')}")

    def note(self, text: str) -> None:
        """Add a line to the summary's notes (once)."""
        if text not in self._notes:
            self._notes.append(text)

    def report(self, steps: int | None = None) -> Report:
        """The diagnosis so far (``steps``: the steps run, if more than were seen), or the closed run's report."""
        return self.final if self.final is not None else self._diagnosis(steps)

    def close(
        self, steps: int | None = None, *, unseen: str = "no training step was seen", render: Callable[[Report], object] | None = None
    ) -> Report:
        """The run's end (``steps``: how many ran, by default those seen): notes on what was not measured,
        the JSON summary, the report handed to ``render``.

        ``unseen``: the adapter's advice when no step reached it. ``render``: the
        console (``gradwatch.console.print_report``), called on the main process
        when ``print_report`` is on; the engine itself renders nothing. A second call
        returns the same report. A resumed diagnosis (Keras' successive ``fit``
        calls) prints its report again only when its findings changed.
        """
        if self.final is not None:
            return self.final
        steps = self._steps if steps is None else steps
        if self._skipped_steps:
            self.note(f"{self._skipped_steps} sampled step(s) skipped by the AMP grad scaler were ignored")
        samples = self._samples
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
        self.final = report = self._save(steps)
        verdict = (tuple((f.symptom, f.severity) for f in report.findings), report.too_little_measured)
        if render is not None and self.print_report and self.main and verdict != self._printed:  # resumed: only when changed
            self._printed = verdict
            self.guard.run("console report", render, report)
        return report

    @property
    def _summary_target(self) -> Path | None:
        """Where this process writes the JSON summary: ``summary_path`` on the main process, else nowhere."""
        return self.summary_path if self.main else None

    def _save(self, steps: int | None = None) -> Report:
        """Write the summary (if this process does) atomically; returns the report."""
        report = self._diagnosis(steps)
        target = self._summary_target
        if target is not None:
            report.written_to = self.guard.run("JSON writer", report.write_json, target)
        return report

    def _diagnosis(self, steps: int | None) -> Report:
        """The findings so far, most severe first, with the downsampled history."""
        findings = sorted(self._findings.values(), key=lambda f: (not f.is_mistake, -SEVERITY_RANK[f.severity], f.first_step))
        notes = self._notes + [f"part disabled after an internal error: {p} ({e})" for p, e in self.guard.failed.items()]
        return Report(
            framework=self.framework,
            steps=self._steps if steps is None else steps,
            findings=findings,
            layers=self._history.to_layers(),
            facts=self._facts,
            every_n_steps=self._every_n_steps,
            notes=notes,
            sampled_steps=self._samples,
        )

    def _merge(self, found: Finding) -> bool:
        """Keep the first step of a finding, the latest evidence and the worst severity; name a symptom's likely causes."""
        known = self._findings.get(found.symptom)
        if not found.remedies:
            ranked = self._remedies(found)
            if known is None:
                found.remedies = remedies.sized(found, ranked, self._facts)
            else:  # sized once, at the first sample: later ones may be the blow-up itself
                first = {r.id: r for r in known.remedies}
                found.remedies = tuple(first.get(r.id, r) if r.id == "lower_lr" else r for r in ranked)
        mistakes = [_as_cause(f) for f in self._findings.values() if _explains(f)]
        _name_causes(found, [c for c in self._facts_causes if c.severity != "info"] + mistakes)
        if known is None:
            self._findings[found.symptom] = found
            if _explains(found):  # found after the symptoms it explains: name it in them too
                for symptom in self._findings.values():
                    _name_causes(symptom, [_as_cause(found)])
            return True
        worse = SEVERITY_RANK[found.severity] > SEVERITY_RANK[known.severity]
        found.first_step = known.first_step
        if not worse:
            found.severity = known.severity
        found.layers = tuple(dict.fromkeys(known.layers + found.layers))
        self._findings[found.symptom] = found
        return worse

    def _remedies(self, found: Finding) -> tuple[Remedy, ...]:
        """``remedies.for_finding``, ranked once per symptom while the facts stay the same object."""
        facts, ranked = self._ranked
        if facts is not self._facts:
            self._ranked = facts, ranked = self._facts, {}
        key = remedies.symptom_key(found)
        if key not in ranked:
            ranked[key] = remedies.rank(key, self._facts, framework=self.framework)
        return ranked[key]

    def state_dict(self) -> dict[str, Any]:
        """The diagnosis so far, for a checkpoint."""
        return {
            "steps": self._steps,
            "samples": self._samples,
            "findings": [f.to_dict() for f in self._findings.values()],
            "detectors": {d.symptom: d.state_dict() for d in self._detectors},
            "history": self._history.state_dict(),
            "notes": list(self._notes),
            "input_scale": list(self._input_scale) if self._input_scale else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpointed diagnosis."""
        self._steps = int(state["steps"])
        self._samples = int(state.get("samples", 0))
        self._findings = {f["symptom"]: Finding.from_dict(f) for f in state["findings"]}
        for detector in self._detectors:
            detector.load_state_dict(state["detectors"].get(detector.symptom, {}))
        self._history.load_state_dict(state["history"])
        self._notes = list(state.get("notes", []))
        scale = state.get("input_scale")
        self._input_scale = (float(scale[0]), float(scale[1])) if scale else None


def _explains(finding: Finding) -> bool:
    """Whether a finding is a mistake that symptoms may name as their cause (an info one, a float64 model, explains none)."""
    return finding.is_mistake and bool(finding.remedies) and finding.severity != "info"


def _as_cause(mistake: Finding) -> Cause:
    """A mistake finding as the likely cause of a symptom: its declared short form (else its message) and the
    finding's id, to read the numbers there; its first remedy."""
    known = declared(mistake.symptom)
    text = f"{known.as_cause} (see {mistake.symptom})" if known is not None and known.as_cause else mistake.message
    return Cause(mistake.symptom, text, mistake.remedies[0], direct=True)


def _name_causes(symptom: Finding, causes: list[Cause]) -> None:
    """Name in a symptom the likely causes it does not name yet, their fixes first (where its declaration says so)."""
    known = declared(symptom.symptom)
    if symptom.is_mistake or (known is not None and not known.names_causes):
        return
    named = symptom.evidence.get("causes", [])
    new = list({cause.id: cause for cause in causes if cause.id not in named}.values())
    if not new:
        return
    symptom.message += "; likely cause: " + "; ".join(cause.text for cause in new)
    symptom.evidence["causes"] = [*named, *(cause.id for cause in new)]
    fixes = tuple(dict.fromkeys(cause.remedy for cause in new))
    replaced = {remedy for cause in new if (mistake := declared(cause.id)) is not None for remedy in mistake.supersedes}
    symptom.remedies = fixes + tuple(r for r in symptom.remedies if r not in fixes and r.id not in replaced)


def format_warning(finding: Finding) -> str:
    """One line for a live warning: symptom, where, since when, the numbers, the top remedies."""
    where = f" in {layer_list(finding.layers)}" if finding.layers else ""
    tips = "; ".join(r.title for r in finding.remedies[:2])
    tail = f" — try: {tips}" if tips else ""
    return f"gradwatch: {finding.symptom} ({finding.severity}) from step {finding.first_step}{where}: {finding.message}{tail}"


__all__ = ["Session"]

"""The framework-free heart of gradwatch: schedule, detectors, findings, history."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import remedies
from .causes import Cause, find_causes
from .detectors import default_detectors
from .facts import ModelFacts
from .history import History
from .options import DEFAULT_EVERY_N_STEPS, OptionArgs, Options
from .report import SEVERITY_RANK, Finding, Remedy, Report, layer_list
from .safety import FaultGuard, warn
from .stats import StepStats
from .symptoms import declared

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Monitor:
    """Feeds sampled steps to one detector per symptom and keeps what they find.

    Adapters call ``should_sample(step)`` to decide whether to measure, then
    ``observe(stats)``. A new finding (or one that got more severe) is raised
    once as a ``GradWatchWarning`` and logged on the ``gradwatch`` logger.
    With ``stop_on``, ``should_stop()`` says when training should end; the
    adapter ends it and calls ``stop()`` to say why.

    Sampling: every step that is a power of two below ``every_n_steps`` (so
    trouble at initialisation is seen early), then every ``every_n_steps``-th.
    With a ``summary_path`` the JSON summary is rewritten atomically at least
    every ``autosave_every_n_steps`` steps, so a killed run leaves its last one.
    """

    def __init__(
        self,
        facts: ModelFacts | None = None,
        *,
        framework: str = "unknown",
        guard: FaultGuard | None = None,
        options: Options | None = None,
        **changes: Unpack[OptionArgs],
    ) -> None:
        options = Options(**changes) if options is None else replace(options, **changes)
        self.every_n_steps = options.every_n_steps or DEFAULT_EVERY_N_STEPS
        self.autosave_every_n_steps = options.autosave_every_n_steps
        self.warn_on = options.warn_on
        self.stop_on = options.stop_on
        self.history = History(options.history_size)
        self.detectors = default_detectors() if options.detectors is None else list(options.detectors)
        self.summary_path = Path(options.summary_path) if options.summary_path is not None else None
        self._saved_at: int | None = None
        self.facts = facts or ModelFacts()
        self.framework = framework
        self.guard = guard or FaultGuard()
        self.findings: dict[str, Finding] = {}
        self.steps = 0
        self.samples = 0
        self.input_scale: tuple[float, float] | None = None  # latest mean |x| and std of the model's input
        self.last_loss: float | None = None
        self.notes: list[str] = []
        self._ranked: tuple[ModelFacts, dict[str, tuple[Remedy, ...]]] = (self.facts, {})  # remedies per symptom, for these facts
        self._facts_causes: list[Cause] = []  # what find_causes says of the latest sample

    def should_sample(self, step: int) -> bool:
        """Whether the adapter should measure optimizer step ``step`` (0-based)."""
        n = self.every_n_steps
        return step % n == 0 or (step < n and step & (step - 1) == 0)

    def observe(self, sample: StepStats) -> list[Finding]:
        """Run every detector on ``sample``; return findings that are new or got worse."""
        self.steps = max(self.steps, sample.step + 1)
        if any(layer.grad_norm is not None for layer in sample.layers):  # a sample without gradients clears nothing
            self.samples += 1
        if sample.loss is not None and math.isfinite(sample.loss):
            self.last_loss = sample.loss
        if sample.input_mean_abs is not None and sample.input_std is not None:
            self.input_scale = (sample.input_mean_abs, sample.input_std)
        self.guard.run("history", self.history.add, sample, self.facts.kinds)
        raised = []
        self._facts_causes = find_causes(self.facts, self.input_scale, self.last_loss)  # once per sample
        finite = sample.finite
        for detector in self.detectors:
            if not (finite or detector.sees_nonfinite):
                continue
            found = self.guard.run(f"detector {detector.symptom}", detector.observe, sample, self.facts)
            if found is not None and self._merge(found):
                raised.append(self.findings[found.symptom])
        for cause in self._facts_causes:  # mistakes seen directly: findings of their own
            found = Finding(cause.id, cause.severity, sample.step, cause.layers, cause.text, remedies=(cause.remedy,), last_step=sample.step)
            if cause.direct and self._merge(found):
                raised.append(self.findings[cause.id])
        for finding in raised:
            if self.warn_on is not None and finding.at_least(self.warn_on):
                warn(format_warning(finding))
        every = self.autosave_every_n_steps
        due = every is not None and (self._saved_at is None or sample.step - self._saved_at >= every)
        if due and self.summary_path is not None:
            self._saved_at = sample.step
            self.save()
        return raised

    def first_at_least(self, severity: str | None) -> Finding | None:
        """The most severe finding at ``severity`` or above (None for no severity): what ``stop_on`` acts on."""
        if severity is None:
            return None
        serious = [f for f in self.findings.values() if f.at_least(severity)]
        return max(serious, key=lambda f: SEVERITY_RANK[f.severity], default=None)

    def should_stop(self) -> bool:
        """Whether a finding has reached ``stop_on`` (never without ``stop_on``)."""
        return self.first_at_least(self.stop_on) is not None

    def stop(self) -> None:
        """Say, as a warning, that training stops because of the finding that reached ``stop_on``."""
        finding = self.first_at_least(self.stop_on)
        if finding is not None:
            warn(f"gradwatch: stopping training (stop_on={self.stop_on!r}): {format_warning(finding).removeprefix('gradwatch: ')}")

    def close(self, steps: int | None = None, *, render: Callable[[Report], object] | None = None) -> Report:
        """The end of a run: write the summary and hand the report to ``render`` (e.g. ``gradwatch.console.print_report``).

        A failure of either is contained.
        """
        report = self.save(steps)
        if render is not None:
            self.guard.run("console report", render, report)
        return report

    def save(self, steps: int | None = None) -> Report:
        """Write the summary to ``summary_path`` (if any) atomically; returns the report."""
        report = self.report(steps)
        if self.summary_path is not None:
            self.guard.run("JSON writer", report.write_json, self.summary_path)
        return report

    def _merge(self, found: Finding) -> bool:
        """Keep the first step of a finding, the latest evidence and the worst severity; name a symptom's likely causes."""
        known = self.findings.get(found.symptom)
        if not found.remedies:
            found.remedies = remedies.sized(found, self._remedies(found), self.facts)
        mistakes = [_as_cause(f) for f in self.findings.values() if f.is_mistake and f.remedies]
        _name_causes(found, [c for c in self._facts_causes if c.severity != "info"] + mistakes)
        if known is None:
            self.findings[found.symptom] = found
            if found.is_mistake and found.remedies:  # found after the symptoms it explains: name it in them too
                for symptom in self.findings.values():
                    _name_causes(symptom, [_as_cause(found)])
            return True
        worse = SEVERITY_RANK[found.severity] > SEVERITY_RANK[known.severity]
        found.first_step = known.first_step
        if not worse:
            found.severity = known.severity
        found.layers = tuple(dict.fromkeys(known.layers + found.layers))
        self.findings[found.symptom] = found
        return worse

    def _remedies(self, found: Finding) -> tuple[Remedy, ...]:
        """``remedies.for_finding``, ranked once per symptom while the facts stay the same object."""
        facts, ranked = self._ranked
        if facts is not self.facts:
            self._ranked = facts, ranked = self.facts, {}
        key = remedies.symptom_key(found)
        if key not in ranked:
            ranked[key] = remedies.rank(key, self.facts, framework=self.framework)
        return ranked[key]

    def report(self, steps: int | None = None) -> Report:
        """The findings so far, most severe first, with the downsampled history."""
        findings = sorted(self.findings.values(), key=lambda f: (not f.is_mistake, -SEVERITY_RANK[f.severity], f.first_step))
        notes = list(self.notes) + [f"part disabled after an internal error: {p} ({e})" for p, e in self.guard.failed.items()]
        return Report(
            framework=self.framework,
            steps=self.steps if steps is None else steps,
            findings=findings,
            layers=self.history.to_layers(),
            facts=self.facts,
            every_n_steps=self.every_n_steps,
            notes=notes,
            sampled_steps=self.samples,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "samples": self.samples,
            "findings": [f.to_dict() for f in self.findings.values()],
            "detectors": {d.symptom: d.state_dict() for d in self.detectors},
            "history": self.history.state_dict(),
            "notes": list(self.notes),
            "input_scale": list(self.input_scale) if self.input_scale else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.samples = int(state.get("samples", 0))
        self.findings = {f["symptom"]: Finding.from_dict(f) for f in state["findings"]}
        for detector in self.detectors:
            detector.load_state_dict(state["detectors"].get(detector.symptom, {}))
        self.history.load_state_dict(state["history"])
        self.notes = list(state.get("notes", []))
        scale = state.get("input_scale")
        self.input_scale = (float(scale[0]), float(scale[1])) if scale else None


def _as_cause(mistake: Finding) -> Cause:
    """A mistake finding as the likely cause of a symptom: its message, its first remedy."""
    return Cause(mistake.symptom, mistake.message, mistake.remedies[0], direct=True)


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
    symptom.remedies = fixes + tuple(r for r in symptom.remedies if r not in fixes)


def format_warning(finding: Finding) -> str:
    """One line for a live warning: symptom, where, since when, the numbers, the top remedies."""
    where = f" in {layer_list(finding.layers)}" if finding.layers else ""
    tips = "; ".join(r.title for r in finding.remedies[:2])
    tail = f" — try: {tips}" if tips else ""
    return f"gradwatch: {finding.symptom} ({finding.severity}) from step {finding.first_step}{where}: {finding.message}{tail}"

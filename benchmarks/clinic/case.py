"""A labelled run and the verdict on what gradwatch said about it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gradwatch import Report


@dataclass(frozen=True)
class Case:
    """One clinic run. ``expected`` is the symptom it must show, or None for a healthy run."""

    name: str
    framework: str
    expected: str | None
    run: Callable[[], Report]
    about: str = ""


@dataclass(frozen=True)
class Outcome:
    case: Case
    report: Report
    seconds: float

    @property
    def reported(self) -> list[str]:
        """Symptoms at warning level or above."""
        return [f.symptom for f in self.report.findings if f.at_least("warning")]

    @property
    def correct(self) -> bool:
        if self.case.expected is None:
            return not self.reported
        return self.case.expected in self.reported

    @property
    def verdict(self) -> str:
        if self.case.expected is None:
            return "quiet" if self.correct else "FALSE ALARM"
        return "caught" if self.correct else "MISSED"

    @property
    def detection_share(self) -> float | None:
        """Step of first detection of the expected symptom as a share of the run."""
        finding = self.report.finding(self.case.expected) if self.case.expected else None
        if finding is None or not self.report.steps:
            return None
        return finding.first_step / self.report.steps


    @property
    def problem(self) -> str | None:
        """Why this outcome misses the clinic's bar (right verdict, detected in the first 20%), or None."""
        found = [(f.symptom, f.severity, f.first_step) for f in self.report.findings]
        if not self.correct:
            return f"{self.case.name}: expected {self.case.expected or 'healthy'}, got {found}"
        share = self.detection_share
        if share is not None and share > 0.2:
            return f"{self.case.name}: first detected at {share:.0%} of the run"
        return None


def evaluate(case: Case) -> Outcome:
    start = time.perf_counter()
    report = case.run()
    return Outcome(case, report, time.perf_counter() - start)

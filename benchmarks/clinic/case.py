"""A labelled run and the verdict on what gradwatch said about it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gradwatch import Report


@dataclass(frozen=True)
class Case:
    """One clinic run, labelled without gradwatch.

    ``expected`` is the symptom the run must show (``None``: a healthy run that
    must stay quiet at warning level and above); ``allowed`` are symptoms that
    may also be reported without counting against the verdict. ``source`` says
    where the program comes from and ``oracle`` holds the numbers of the
    independent measurement behind the label (loss trajectory, gradient norms,
    dead-unit shares, NaN step ...), as recorded when the case was labelled.
    """

    name: str
    framework: str
    expected: str | None
    run: Callable[[], Report]
    about: str = ""
    allowed: tuple[str, ...] = ()
    source: str = ""
    oracle: Mapping[str, object] = field(default_factory=dict)


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
    def unexpected(self) -> list[str]:
        """Symptoms reported at warning level or above that the label neither requires nor allows."""
        return [s for s in self.reported if s != self.case.expected and s not in self.case.allowed]

    @property
    def correct(self) -> bool:
        if self.case.expected is None:
            return not self.unexpected
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

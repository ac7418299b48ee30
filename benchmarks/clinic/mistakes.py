"""The mistakes clinic: does gradwatch name the everyday mistake a training program makes?

``python -m benchmarks.clinic.mistakes [NAME ...]`` trains each case under gradwatch and prints a
table: the case, its framework, the mistake it makes (``healthy`` for a twin without it), the key
numbers the independent oracle measured when it was labelled (``mistakes_oracle``), the verdict and
gradwatch's words; then the totals. It always exits 0: it is a benchmark; tests assert on ``score``.

Scoring uses only the public ``Report``/``Finding``:

* a sick case is **named** when any of its ``words`` (lower-case, whole words; ``*`` ends a stem)
  appears, case-insensitively, in a finding at warning level or above: its ``symptom`` id, its
  ``message``, or its first remedy's ``title`` or ``why``;
* a healthy case is **quiet** when it was measured (at least 3 sampled steps) and the report holds no
  finding at warning level or above;
* ``unclosed_watcher`` is about the run's end, not its dynamics: the sick script ends without
  ``close()``, and counts as named when gradwatch still wrote the summary it was told to write.

Cases live per framework in ``mistakes_torch_cases`` (programs in ``mistakes_torch``), ``mistakes_lightning``, ``mistakes_keras`` and
``mistakes_hf``; a framework that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import re
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gradwatch import Finding, Report

from .mistakes_oracle import TOPIC_KEYS, MistakeCase, all_cases


def __getattr__(name: str) -> Any:
    if name == "CASES":  # imported on first use: the frameworks take seconds to import
        globals()["CASES"] = cases = all_cases()
        return cases
    raise AttributeError(name)


def _pattern(word: str) -> re.Pattern[str]:
    stem = word.endswith("*")
    body = re.escape(word.rstrip("*").lower())
    return re.compile(rf"(?<![a-z0-9_]){body}" + ("" if stem else r"(?![a-z0-9_])"))


def finding_text(finding: Finding) -> str:
    """What scoring reads of a finding: its symptom id, message, and first remedy's title and why."""
    first = finding.remedies[0] if finding.remedies else None
    return " | ".join([finding.symptom, finding.message, *([first.title, first.why] if first else [])]).lower()


def names(finding: Finding, words: Iterable[str]) -> bool:
    """Whether the finding says any of ``words``."""
    text = finding_text(finding)
    return any(_pattern(word).search(text) for word in words)


@dataclass(frozen=True)
class Outcome:
    """A case's run under gradwatch and how its report scores."""

    case: MistakeCase
    report: Report | None
    seconds: float
    error: str | None = None

    @property
    def alarms(self) -> list[Finding]:
        """Findings at warning level or above."""
        return [f for f in self.report.findings if f.at_least("warning")] if self.report else []

    @property
    def matching(self) -> Finding | None:
        """The first alarm that names the case's mistake."""
        return next((f for f in self.alarms if names(f, self.case.words)), None)

    @property
    def measured(self) -> bool:
        return self.report is not None and (self.report.sampled_steps or 0) >= 3

    @property
    def named(self) -> bool:
        if self.case.mistake == "unclosed_watcher":
            return self.report is not None
        return self.matching is not None

    @property
    def quiet(self) -> bool:
        return self.measured and not self.alarms

    @property
    def ok(self) -> bool:
        """Named (a sick case) or quiet (a healthy one)."""
        if self.error is not None:
            return False
        return self.named if self.case.mistake else self.quiet

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.case.mistake:
            return "named" if self.named else "NOT NAMED"
        if not self.measured:
            return "UNMEASURED"
        return "quiet" if self.quiet else "ALARM"

    @property
    def words(self) -> str:
        """Gradwatch's side: the alarms' ids and the first 100 characters of the matching (else first) alarm's message."""
        if self.error is not None:
            return next((line.strip() for line in reversed(self.error.splitlines()) if line.strip()), "error")[:100]
        if self.report is None:
            return "no summary written"
        if self.case.topic == "unclosed_watcher":
            said = next((note for note in self.report.notes if any(_pattern(w).search(note.lower()) for w in self.case.words)), "")
            return f"summary written; {said or 'no note on closing'}"[:100] if self.case.mistake else "summary written"
        if not self.alarms:
            infos = sorted({f.symptom for f in self.report.findings})
            return f"(no warning; info: {', '.join(infos)})" if infos else "-"
        shown = self.matching or self.alarms[0]
        ids = ",".join(dict.fromkeys(f.symptom for f in self.alarms))
        return f"{ids}: {' '.join(shown.message.split())[:100]}"


def score(case: MistakeCase) -> Outcome:
    """Train the case under gradwatch and score its report."""
    start = time.perf_counter()
    try:
        report = case.run()
    except Exception:  # a case that crashes under gradwatch is a result too
        return Outcome(case, None, time.perf_counter() - start, traceback.format_exc())
    return Outcome(case, report, time.perf_counter() - start)


def key_numbers(case: MistakeCase) -> str:
    """The oracle's numbers that label the case's topic, compactly."""
    keys = ("loss0", "loss_end", *TOPIC_KEYS[case.topic])
    return " ".join(f"{k}={_short(case.oracle[k])}" for k in keys if k in case.oracle)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace(" ", "")


def table(outcomes: list[Outcome]) -> str:
    head = f"{'case':<28} {'framework':<10} {'mistake':<24} {'verdict':<10} {'secs':>5}  oracle / gradwatch"
    lines = [head, "-" * len(head)]
    for o in outcomes:
        c = o.case
        lines.append(f"{c.name:<28} {c.framework:<10} {c.mistake or 'healthy':<24} {o.verdict:<10} {o.seconds:>5.1f}  {key_numbers(c)}")
        lines.append(f"{'':<80}  gradwatch: {o.words}")
    sick = [o for o in outcomes if o.case.mistake]
    healthy = [o for o in outcomes if not o.case.mistake]
    lines.append("")
    lines.append(f"named {sum(o.named for o in sick)}/{len(sick)} sick")
    by_mistake: dict[str, list[bool]] = {}
    for o in sick:
        by_mistake.setdefault(o.case.mistake or "", []).append(o.named)
    for mistake, hits in by_mistake.items():
        lines.append(f"  {mistake:<24} {sum(hits)}/{len(hits)}")
    alarmed = [o.case.name for o in healthy if not o.ok]
    lines.append(f"alarmed {len(alarmed)}/{len(healthy)} healthy" + (f" ({', '.join(alarmed)})" if alarmed else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="run only these cases")
    args = parser.parse_args(argv)
    outcomes = []
    for case in all_cases(args.names):
        outcomes.append(score(case))
        print(f"{case.name}: {outcomes[-1].verdict} ({outcomes[-1].seconds:.1f} s)", flush=True)
    print()
    print(table(outcomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

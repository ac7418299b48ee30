"""``python -m benchmarks.clinic [NAME ...]``: run the clinic and print verdicts and totals."""

from __future__ import annotations

import argparse
import importlib
from collections import defaultdict

from .case import Case, Outcome, evaluate


def all_cases() -> list[Case]:
    """Every case whose framework is installed."""
    from . import torch_cases

    cases = list(torch_cases.CASES)
    for module in ("lightning_cases", "keras_cases", "real_torch", "real_lightning", "real_keras"):
        try:
            cases += importlib.import_module(f".{module}", __package__).CASES
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(module):
                continue  # that set of cases does not exist (yet)
            print(f"skipping {module}: {exc}")
        except ImportError as exc:
            print(f"skipping {module}: {exc}")
    return cases


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'case':<24} {'framework':<9} {'expected':<20} {'reported (>= warning)':<36} {'verdict':<11} {'first':>6} {'secs':>5}"]
    for o in outcomes:
        share = o.detection_share
        first = f"{share:.0%}" if share is not None else "-"
        reported = ", ".join(o.reported) or "-"
        lines.append(
            f"{o.case.name:<24} {o.case.framework:<9} {o.case.expected or 'healthy':<20} {reported:<36} {o.verdict:<11} {first:>6} {o.seconds:>5.1f}"
        )
    recall: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        if o.case.expected:
            recall[o.case.expected].append(o.correct)
    lines.append("")
    for symptom, hits in sorted(recall.items()):
        lines.append(f"recall {symptom:<20} {sum(hits)}/{len(hits)}")
    healthy = [o for o in outcomes if o.case.expected is None]
    alarms = [o.case.name for o in healthy if not o.correct]
    lines.append(f"false alarms on healthy runs: {len(alarms)}/{len(healthy)}" + (f" ({', '.join(alarms)})" if alarms else ""))
    late = [o.case.name for o in outcomes if (o.detection_share or 0) > 0.2]
    lines.append(f"sick cases first detected after 20% of the run: {len(late)}" + (f" ({', '.join(late)})" if late else ""))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="run only these cases")
    args = parser.parse_args()
    cases = [c for c in all_cases() if not args.names or c.name in args.names]
    outcomes = [evaluate(case) for case in cases]
    print(table(outcomes))
    return 0 if all(o.correct for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

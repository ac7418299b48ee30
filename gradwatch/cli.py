"""``gradwatch demo | report PATH | check PATH --fail-on LEVEL``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .report import SEVERITY_RANK, SummaryError, load_summary

EXIT_FOUND, EXIT_USAGE = 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradwatch`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SummaryError as exc:
        print(f"gradwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"gradwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _demo(args: argparse.Namespace) -> int:
    from gradwatch.integrations.demo import run_demo

    run_demo(args.out, steps=args.steps)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .console import print_report

    print_report(load_summary(args.path))
    return 0


def _check(args: argparse.Namespace) -> int:
    report = load_summary(args.path)
    hits = [f for f in report.findings if f.at_least(args.fail_on)]
    for finding in hits:
        print(f"{args.path}: {finding.severity}: {finding.symptom} from step {finding.first_step}: {finding.message}")
    if not hits:
        print(f"{args.path}: ok: no finding at {args.fail_on} or above in {report.steps} steps")
    return EXIT_FOUND if hits else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradwatch", description="Diagnose training runs from the inside.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a sick and a remedied model and show both reports (needs torch)")
    demo.add_argument("--out", default="gradwatch-demo", help="folder for the JSON summaries (default: %(default)s)")
    demo.add_argument("--steps", type=_positive, default=300, help="optimizer steps per model (default: %(default)s)")
    demo.set_defaults(run=_demo)

    report = commands.add_parser("report", help="render a JSON summary in the console")
    report.add_argument("path")
    report.set_defaults(run=_report)

    check = commands.add_parser("check", help="exit 1 if the summary has a finding at or above a severity (CI gate)")
    check.add_argument("path")
    check.add_argument("--fail-on", choices=[s for s in SEVERITY_RANK if s != "info"], default="warning")
    check.set_defaults(run=_check)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``gradwatch demo | report | check | plot | html | compare``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .report import SEVERITY_RANK, SummaryError, load_summary, printable, read_json

EXIT_FOUND, EXIT_USAGE, EXIT_UNMEASURED = 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradwatch`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SummaryError as exc:
        print(f"gradwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ImportError, OSError) as exc:
        print(f"gradwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _demo(args: argparse.Namespace) -> int:
    from gradwatch.demo import run_demo

    run_demo(args.out, steps=args.steps)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .console import print_report, print_trial
    from .trial import TRIAL_SCHEMA, load_trial

    data = read_json(args.path)
    if isinstance(data, dict) and data.get("schema") == TRIAL_SCHEMA:
        print_trial(load_trial(args.path))
    else:
        print_report(load_summary(args.path))
    return 0


def _check(args: argparse.Namespace) -> int:
    report = load_summary(args.path)
    hits = [f for f in report.findings if f.at_least(args.fail_on)]
    for finding in hits:
        print(f"{args.path}: {finding.severity}: {finding.symptom} from step {finding.first_step}: {printable(finding.message)}")
    if hits:
        return EXIT_FOUND
    if report.too_little_measured:
        why = f" ({printable('; '.join(report.notes))})" if report.notes else ""
        print(f"{args.path}: not judged: too little measured, {report.measured_line()}{why}")
        return EXIT_UNMEASURED
    print(f"{args.path}: ok: no finding at {args.fail_on} or above in {report.measured_line()}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_report

    plot_report(load_summary(args.path), args.output)
    print(f"wrote {args.output}")
    return 0


def _html(args: argparse.Namespace) -> int:
    from .html import render_html

    report = load_summary(args.path)
    try:
        from .plot import plot_report

        png: bytes | None = plot_report(report)
    except ImportError:
        png = None  # the page still has findings and remedies, just no picture
    Path(args.output).write_text(render_html(report, png), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .console import render_comparison

    print(render_comparison(compare(load_summary(args.before), load_summary(args.after))), end="")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradwatch", description="Diagnose training runs from the inside.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a sick and a remedied model and show both reports (needs torch)")
    demo.add_argument("--out", default="gradwatch-demo", help="folder for the JSON summaries (default: %(default)s)")
    demo.add_argument("--steps", type=_positive, default=300, help="optimizer steps per model (default: %(default)s)")
    demo.set_defaults(run=_demo)

    report = commands.add_parser("report", help="render a JSON summary (or a remedy trial file) in the console")
    report.add_argument("path")
    report.set_defaults(run=_report)

    check = commands.add_parser("check", help="exit 1 if the summary has a finding at or above a severity, 3 if too little was measured (CI gate)")
    check.add_argument("path")
    check.add_argument("--fail-on", choices=[s for s in SEVERITY_RANK if s != "info"], default="warning")
    check.set_defaults(run=_check)

    plot = commands.add_parser("plot", help="gradient-flow heatmap (and time profiles) as PNG (needs matplotlib)")
    plot.add_argument("path")
    plot.add_argument("-o", "--output", default="gradwatch-flow.png")
    plot.set_defaults(run=_plot)

    html = commands.add_parser("html", help="one self-contained HTML report with the pictures embedded")
    html.add_argument("path")
    html.add_argument("-o", "--output", default="gradwatch-report.html")
    html.set_defaults(run=_html)

    compare = commands.add_parser("compare", help="what changed between two runs (before/after a remedy)")
    compare.add_argument("before")
    compare.add_argument("after")
    compare.set_defaults(run=_compare)
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

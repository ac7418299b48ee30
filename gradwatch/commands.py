"""The verbs of the ``gradwatch`` command besides ``run``: ``demo | report | check | plot | html | compare``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .report import MIN_SAMPLES_TO_CLEAR, SEVERITY_RANK, load_summary, printable, read_json
from .run import positive
from .summary_check import TRIAL_SCHEMA, SummaryError

EXIT_FOUND, EXIT_USAGE, EXIT_UNMEASURED = 1, 2, 3
BAD_INPUT = "  2  bad input (one line on stderr)"
WRITTEN = "  0  written\n  2  bad input, or -o cannot be written (one line on stderr)"


class UsageError(Exception):
    """A one-line reason why a command cannot run (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradwatch`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (SummaryError, UsageError, ImportError, OSError) as exc:
        print(f"gradwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .run import run

    return run(args)


def _demo(args: argparse.Namespace) -> int:
    from gradwatch.demo import run_demo

    run_demo(args.out, steps=args.steps)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .console import print_report, print_trial
    from .trial import load_trial

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
    from .plot import picture_format, plot_report

    try:
        fmt = picture_format(args.output)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    target = _writable(args.output)
    _write(target, plot_report(load_summary(args.path), format=fmt))
    print(f"wrote {args.output}")
    return 0


def _html(args: argparse.Namespace) -> int:
    from .html import render_html

    target = _writable(args.output)
    report = load_summary(args.path)
    try:
        from .plot import plot_report

        png: bytes | None = plot_report(report)
    except ImportError:
        png = None  # the page still has findings and remedies, just no picture
    _write(target, render_html(report, png).encode("utf-8"))
    print(f"wrote {args.output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .console import render_comparison

    comparison = compare(load_summary(args.before), load_summary(args.after))
    print(render_comparison(comparison), end="")
    return 0 if comparison.improved else EXIT_FOUND


def _writable(path: str) -> Path:
    """``path`` as an output file, refused in one line (before any work) where its folder is missing."""
    target = Path(path)
    if not target.parent.is_dir():
        problem = "is not a folder" if target.parent.exists() else "does not exist"
        raise UsageError(f"cannot write {path}: folder {target.parent} {problem}")
    if target.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder")
    return target


def _write(target: Path, data: bytes) -> None:
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradwatch", description="Diagnose training runs from the inside.")
    parser.add_argument("--version", action="version", version=f"gradwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    from .run import RUN_EXITS, RUN_HELP, add_arguments

    add_arguments(_verb(commands, "run", _run, RUN_HELP, RUN_EXITS))

    demo = _verb(
        commands,
        "demo",
        _demo,
        "train a sick and a remedied model and show both reports (needs torch)",
        "  0  done\n  2  torch is missing, or --out cannot be written",
    )
    demo.add_argument("--out", default="gradwatch-demo", help="folder for the JSON summaries (default: %(default)s)")
    demo.add_argument("--steps", type=positive, default=300, help="optimizer steps per model (default: %(default)s)")

    report = _verb(commands, "report", _report, "render a JSON summary (or a remedy trial file) in the console", f"  0  rendered\n{BAD_INPUT}")
    report.add_argument("path")

    check = _verb(
        commands,
        "check",
        _check,
        "exit 1 if the summary has a finding at or above a severity, 3 if too little was measured (CI gate)",
        "  0  no finding at --fail-on or above\n"
        "  1  a finding at --fail-on or above (one line each on stdout)\n"
        f"{BAD_INPUT}\n"
        f"  3  too little measured to judge (fewer than {MIN_SAMPLES_TO_CLEAR} sampled steps)",
    )
    check.add_argument("path")
    severities = [s for s in SEVERITY_RANK if s != "info"]
    check.add_argument("--fail-on", choices=severities, default="warning", help="lowest severity that fails (default: %(default)s)")

    plot = _verb(commands, "plot", _plot, "gradient-flow heatmap (and time profiles) as PNG, SVG or PDF (needs matplotlib)", WRITTEN)
    plot.add_argument("path")
    plot.add_argument("-o", "--output", default="gradwatch-flow.png", help="picture file; .png, .svg or .pdf picks the format (default: %(default)s)")

    html = _verb(commands, "html", _html, "one self-contained HTML report with the pictures embedded", WRITTEN)
    html.add_argument("path")
    html.add_argument("-o", "--output", default="gradwatch-report.html", help="page file (default: %(default)s)")

    compare = _verb(
        commands,
        "compare",
        _compare,
        "what changed between two runs (before/after a remedy); gates CI on new findings",
        f"  0  no finding (warning or above) is new or worse in AFTER\n  1  a finding is new or worse in AFTER\n{BAD_INPUT}",
    )
    compare.add_argument("before", metavar="BEFORE", help="summary of the earlier run")
    compare.add_argument("after", metavar="AFTER", help="summary of the later run")
    return parser


def _verb(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, run: Callable[[argparse.Namespace], int], about: str, exits: str
) -> argparse.ArgumentParser:
    """A subcommand whose ``-h`` shows what it does and its exit codes."""
    verb = commands.add_parser(
        name, help=about, description=about, epilog=f"exit codes:\n{exits}", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    verb.set_defaults(run=run)
    return verb

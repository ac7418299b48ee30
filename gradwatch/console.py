"""The rich console report: renders a ``Report``, never computes a diagnosis."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, ConsoleOptions, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .compare import Comparison, latest_flow
from .report import Finding, Report, layer_list, printable
from .trial import TrialResult, TrialRow

STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "cyan"}
BAR_WIDTH = 24
FLOW_DECADES = (-10, 1)  # log10 range of the gradient-flow bars
BLOCKS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"


def render(report: Report, *, width: int = 100, color: bool = False) -> str:
    """The report as text at a fixed width (for tests, files and logs)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="truecolor" if color else None, force_terminal=color)
    console.print(build(report))
    return buffer.getvalue()


def print_report(report: Report, console: Console | None = None) -> None:
    """Print the report to the terminal (stderr, so it never mixes with piped output)."""
    (console or Console(stderr=True)).print(build(report))


def build(report: Report) -> Panel:
    """The renderable: a verdict line, one block per finding, the gradient flow."""
    parts: list[Any] = [_verdict(report)]
    shown: set[tuple[str, str]] = set()  # a remedy with the same reason under several findings is spelled out once
    for finding in report.findings:
        parts.append(_finding(finding, shown))
    flow = _flow(report)
    if flow is not None:
        parts.append(flow)
    parts.extend(_time_profile(layer.name, layer.time_profile) for layer in report.histories() if layer.time_profile)
    parts.extend(Text(f"note: {printable(note)}", style="dim") for note in report.notes)
    if report.written_to is not None:
        parts.append(Text(f"summary: {printable(str(report.written_to))}", style="dim"))
    title = Text(f"gradwatch · {printable(report.framework)} · {report.measured_line()}")  # Text: never parsed as markup
    border = "yellow" if report.healthy and report.too_little_measured else STYLE.get(report.worst() or "", "green")
    return Panel(Group(*parts), title=title, title_align="left", border_style=border)


def _verdict(report: Report) -> Text:
    if report.healthy and report.too_little_measured:
        return Text(
            f"? too little measured to judge: {report.measured_line()} (a verdict needs at least 3 samples)",
            style="bold yellow",
        )
    if not report.findings:
        return Text("✓ no problems found", style="bold green")
    counts = ", ".join(f"{f.symptom} ({f.severity})" for f in report.findings)
    return Text(f"found: {counts}", style=STYLE[report.worst() or "info"])


def _finding(finding: Finding, shown: set[tuple[str, str]]) -> Group:
    head = Text()
    head.append(f"\n{finding.severity.upper():<8} ", style=STYLE[finding.severity])
    head.append(finding.symptom, style="bold")
    head.append(f"  from step {finding.first_step}")
    if finding.layers:
        head.append(f"  in {printable(layer_list(finding.layers))}")
    body = Padding(Text(printable(finding.message)), (0, 0, 0, 2))
    lines: list[Any] = [head, body]
    if finding.remedies:
        table = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(ratio=1)
        for rank, remedy in enumerate(finding.remedies, 1):
            why = "see above" if (remedy.id, remedy.why) in shown else printable(remedy.why)  # each finding's own reason
            shown.add((remedy.id, remedy.why))
            table.add_row(f"  {rank}.", Text.assemble((printable(remedy.title), "bold"), f" — {why}"))
        lines.append(Text("  what to try, best fit first:"))
        lines.append(table)
    return Group(*lines)


def _flow(report: Report) -> Group | None:
    """Latest |g|/|W| per layer as a bar on a fixed log scale: where the gradient stops flowing."""
    kinds = {layer.name: layer.kind for layer in report.histories()}
    rows = [(printable(name), printable(kinds[name]), value) for name, value in latest_flow(report).items()]
    if len(rows) < 2:
        return None
    low, high = FLOW_DECADES
    return Group(Text(f"\ngradient flow |g|/|W| per layer, latest sample (log bars, 1e{low}..1e{high}):"), _FlowRows(rows))


class _FlowRows:
    """One line per layer: name, kind, bar, value; at any width the names and numbers show whole (long names
    shorten the bar, then move the rest of the row to a line of its own)."""

    def __init__(self, rows: list[tuple[str, str, float]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        values = [f"{value:.2g}" for _, _, value in self.rows]
        name_width = max(len(name) for name, _, _ in self.rows)
        kind_width = max(len(kind) for _, kind, _ in self.rows)
        value_width = max(map(len, values))
        beside = options.max_width - 2 - name_width - 2  # room for kind, bar and value beside the name
        if beside < kind_width + 2 + 4 + 2 + value_width:
            name_width, beside = 0, options.max_width - 6  # each row's kind, bar and value go on a line of their own
        bar_width = max(min(BAR_WIDTH, beside - kind_width - 2 - 2 - value_width), 1)
        for (name, kind, value), shown in zip(self.rows, values):
            decades = math.log10(value) - FLOW_DECADES[0] if value > 0 else 0.0
            share = min(max(decades / (FLOW_DECADES[1] - FLOW_DECADES[0]), 0.0), 1.0)
            rest = f"{kind:<{kind_width}}  {_bar(share, bar_width)}  {shown:>{value_width}}"
            if name_width:
                yield Text(f"  {name:<{name_width}}  {rest}", no_wrap=True, overflow="crop")
            else:
                yield Text(f"  {name}", overflow="fold")
                yield Text(f"      {rest}", no_wrap=True, overflow="crop")


def _time_profile(name: str, profile: list[float]) -> Text:
    """Gradient reaching each time step of a recurrent layer, first to last, as a log-scale sparkline."""
    values = [v if v is not None and v > 0 else None for v in profile]
    logs = [math.log10(v) for v in values if v is not None]
    if not logs:
        return Text(f"\n{printable(name)}: no gradient reached its input")
    low, high = min(logs), max(logs)
    width = 48
    picks = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(min(width, len(values)))]
    line = "".join(" " if v is None else SPARKS[round((math.log10(v) - low) / ((high - low) or 1) * (len(SPARKS) - 1))] for v in picks)
    first = f"{values[0] / 10**high:.2g}" if values[0] else "0 (below float range)"
    return Text(f"\ngradient reaching each time step of {printable(name)} (first → last, log scale), first/peak {first}:\n  {line}")


def _bar(share: float, width: int = BAR_WIDTH) -> str:
    eighths = round(share * width * 8)
    full, rest = divmod(max(eighths, 1), 8)
    return ("█" * full + (BLOCKS[rest] if rest else "")).ljust(width)


def render_comparison(comparison: Comparison, *, width: int = 100) -> str:
    """Before/after as text: findings gone, new or changed, and the flow per layer side by side."""
    table = Table(title="gradient flow |g|/|W| (latest sample)", width=min(width, 80))
    for header in ("layer", "before", "after", "change"):
        table.add_column(header, justify="left" if header == "layer" else "right")
    for name, before, after in comparison.flow:
        change = f"×{after / before:.3g}" if before and after else "-"
        table.add_row(Text(printable(name)), f"{before:.2g}" if before is not None else "-", f"{after:.2g}" if after is not None else "-", change)
    lines: list[Any] = [
        Text(f"gone:    {', '.join(comparison.gone) or '-'}", style="green"),
        Text(f"new:     {', '.join(comparison.new) or '-'}", style="red" if comparison.new else ""),
        Text("changed: " + (", ".join(f"{s} {b} → {a}" for s, b, a in comparison.changed) or "-")),
        table,
    ]
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(Group(*lines))
    return buffer.getvalue()


def render_trial(result: TrialResult, *, width: int = 100) -> str:
    """A remedy trial as text at a fixed width."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(build_trial(result))
    return buffer.getvalue()


def print_trial(result: TrialResult, console: Console | None = None) -> None:
    """Print a remedy trial to the terminal (stderr)."""
    (console or Console(stderr=True)).print(build_trial(result))


def build_trial(result: TrialResult) -> Panel:
    """The verdict, one table row per run (baseline first, best starred), what could not be tried."""
    best = result.best
    parts: list[Any] = [_trial_verdict(result, best)]
    if result.rows:
        table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
        table.add_column("remedies", max_width=20)
        table.add_column("what changed", ratio=3)
        table.add_column("symptoms ≥ warning", no_wrap=True)
        for header, width in (("loss", 8), ("× base", 6), ("secs", 4)):
            table.add_column(header, justify="right", no_wrap=True, width=width)
        table.add_row(*_trial_cells(result, result.baseline, ""))
        for row in result.rows:
            table.add_row(*_trial_cells(result, row, "★ " if row is best else ""))
        parts += [Text(""), table]
    if result.not_applicable:
        parts.append(Text("\nnot applicable automatically:"))
        listing = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
        listing.add_column(no_wrap=True)
        listing.add_column(ratio=1)
        for entry in result.not_applicable:
            listing.add_row(f"  {entry.remedy}", entry.reason)
        parts.append(listing)
    if result.rows and result.time_cost is not None:
        parts.append(Text(
            f"\nloss: median of the last 10% of steps · {result.seconds:.1f} s in all, {result.time_cost:.1f}× the baseline run",
            style="dim",
        ))  # fmt: skip
    parts.extend(Text(f"note: {note}", style="dim") for note in result.notes)
    title = f"gradwatch trial · {result.framework} · {result.steps} steps per run · seed {result.seed}"
    style = "green" if result.healthy or (best is not None and result.cures(best, min_gain=0.0)) else "yellow"
    return Panel(Group(*parts), title=title, title_align="left", border_style=style)


def _trial_verdict(result: TrialResult, best: TrialRow | None) -> Text:
    if result.healthy:
        return Text("✓ nothing to try: the baseline shows no symptom at warning level or above", style="bold green")
    found = ", ".join(result.baseline.symptoms_after)
    if not result.rows:
        return Text(f"baseline: {found}; no ranked remedy could be applied automatically", style="bold yellow")
    if best is None:
        return Text(f"baseline: {found}; no variant beat the baseline", style="bold yellow")
    cleared = f"clears {', '.join(best.cleared)}" if best.cleared else "clears nothing"
    if best.new:
        cleared += f" but shows {', '.join(best.new)}"
    loss = f"final loss ×{best.loss_ratio:.2g} of the baseline" if best.loss_ratio is not None else "a finite final loss"
    style = "bold green" if result.cures(best, min_gain=0.0) else "bold yellow"
    return Text(f"baseline: {found}\nbest: {best.label} — {cleared}; {loss}", style=style)


def _trial_cells(result: TrialResult, row: TrialRow, mark: str) -> tuple[str, ...]:
    symptoms = "\n".join(row.symptoms_after) or "✓ none"
    loss = f"{row.final_loss:.3g}" if row.final_loss is not None else "diverged"
    ratio = "" if row is result.baseline else (f"×{row.loss_ratio:.2g}" if row.loss_ratio is not None else "-")
    return f"{mark}{row.label}", row.change, symptoms, loss, ratio, f"{row.seconds:.1f}"


class TrialProgress:
    """A progress bar over the runs of a trial (on stderr); does nothing when not ``enabled``."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self._progress = (
            Progress(
                TextColumn("[bold]gradwatch trial[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console or Console(stderr=True), transient=True,
            )
            if enabled else None
        )  # fmt: skip
        self._task: TaskID | None = None

    def open(self) -> None:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("baseline", total=1)

    def start(self, description: str, *, total: int | None = None) -> None:
        """Show the run that starts now; ``total``: the number of runs, once known."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description, total=total)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def trial_progress(*, enabled: bool = True, console: Console | None = None) -> Iterator[TrialProgress]:
    """A ``TrialProgress`` shown for the duration of the ``with`` block."""
    progress = TrialProgress(enabled=enabled, console=console)
    progress.open()
    try:
        yield progress
    finally:
        progress.close()

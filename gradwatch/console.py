"""The rich console report: renders a ``Report``, never computes a diagnosis."""

from __future__ import annotations

import io
import math
from typing import Any

from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .compare import Comparison, latest_flow
from .report import Finding, Report, layer_list, printable

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
    for finding in report.findings:
        parts.append(_finding(finding))
    flow = _flow(report)
    if flow is not None:
        parts.append(flow)
    parts.extend(_time_profile(layer) for layer in report.layers if layer.get("time_profile"))
    parts.extend(Text(f"note: {printable(note)}", style="dim") for note in report.notes)
    title = Text(f"gradwatch · {printable(report.framework)} · {report.steps} steps")  # Text: never parsed as markup
    return Panel(Group(*parts), title=title, title_align="left", border_style=STYLE.get(report.worst() or "", "green"))


def _verdict(report: Report) -> Text:
    if not report.findings:
        return Text("✓ no problems found", style="bold green")
    counts = ", ".join(f"{f.symptom} ({f.severity})" for f in report.findings)
    return Text(f"found: {counts}", style=STYLE[report.worst() or "info"])


def _finding(finding: Finding) -> Group:
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
            table.add_row(f"  {rank}.", Text.assemble((printable(remedy.title), "bold"), f" — {printable(remedy.why)}"))
        lines.append(Text("  what to try, best fit first:"))
        lines.append(table)
    return Group(*lines)


def _flow(report: Report) -> Group | None:
    """Latest |g|/|W| per layer as a bar on a fixed log scale: where the gradient stops flowing."""
    kinds = {layer["name"]: layer.get("kind", "") for layer in report.layers}
    rows = [(name, kinds[name], value) for name, value in latest_flow(report).items()]
    if len(rows) < 2:
        return None
    table = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
    for justify in ("left", "left", "left", "right"):
        table.add_column(justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name, kind, value in rows:
        decades = math.log10(value) - FLOW_DECADES[0] if value > 0 else 0.0
        share = min(max(decades / (FLOW_DECADES[1] - FLOW_DECADES[0]), 0.0), 1.0)
        table.add_row(Text(f"  {printable(name)}"), Text(printable(kind)), _bar(share), f"{value:.2g}")
    low, high = FLOW_DECADES
    return Group(Text(f"\ngradient flow |g|/|W| per layer, latest sample (log bars, 1e{low}..1e{high}):"), table)


def _time_profile(layer: dict[str, Any]) -> Text:
    """Gradient reaching each time step of a recurrent layer, first to last, as a log-scale sparkline."""
    values = [v if v is not None and v > 0 else None for v in layer["time_profile"]]
    logs = [math.log10(v) for v in values if v is not None]
    if not logs:
        return Text(f"\n{printable(layer['name'])}: no gradient reached its input")
    low, high = min(logs), max(logs)
    width = 48
    picks = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(min(width, len(values)))]
    line = "".join(" " if v is None else SPARKS[round((math.log10(v) - low) / ((high - low) or 1) * (len(SPARKS) - 1))] for v in picks)
    first = f"{values[0] / 10**high:.2g}" if values[0] else "0 (below float range)"
    return Text(f"\ngradient reaching each time step of {printable(layer['name'])} (first → last, log scale), first/peak {first}:\n  {line}")


def _bar(share: float) -> str:
    eighths = round(share * BAR_WIDTH * 8)
    full, rest = divmod(max(eighths, 1), 8)
    return ("█" * full + (BLOCKS[rest] if rest else "")).ljust(BAR_WIDTH)


def render_comparison(comparison: Comparison, *, width: int = 100) -> str:
    """Before/after as text: findings gone, new or changed, and the flow per layer side by side."""
    table = Table(title="gradient flow |g|/|W| (latest sample)", width=min(width, 80))
    for header in ("layer", "before", "after", "change"):
        table.add_column(header, justify="left" if header == "layer" else "right")
    for name, before, after in comparison.flow:
        change = f"×{after / before:.3g}" if before and after else "-"
        table.add_row(Text(printable(name)), f"{before:.2g}" if before is not None else "-", f"{after:.2g}" if after is not None else "-", change)
    lines = [
        Text(f"gone:    {', '.join(comparison.gone) or '-'}", style="green"),
        Text(f"new:     {', '.join(comparison.new) or '-'}", style="red" if comparison.new else ""),
        Text("changed: " + (", ".join(f"{s} {b} → {a}" for s, b, a in comparison.changed) or "-")),
        table,
    ]
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(Group(*lines))
    return buffer.getvalue()

"""Gradient-flow pictures from a summary (matplotlib, an optional extra: ``gradwatch[plot]``)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from .report import Report

FINDING_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
FORMATS = ("png", "svg", "pdf")  # what `gradwatch plot -o` writes, picked by the file's suffix
MAX_LABELLED_ROWS = 120  # more layers than this: every k-th row is labelled and the figure stops growing


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('gradwatch plot needs matplotlib: pip install "gradwatch[plot]"') from None
    return plt


def flow_matrix(report: Report) -> tuple[list[str], list[int], list[list[float]]]:
    """log10(|g|/|W|) per layer (rows, bottom layer first) and sampled step (columns); NaN where unknown."""
    names, rows, steps = [], [], []
    for layer in report.histories():
        if not any(g is not None for g in layer.grad_norm) or not any(w is not None for w in layer.weight_norm):
            continue
        steps = layer.steps
        row = [math.log10(r) if r is not None and r > 0 else math.nan for r in layer.relative_grads()]
        names.append(layer.name)
        rows.append(row)
    return names, steps, rows


def picture_format(path: str | os.PathLike[str]) -> str:
    """The picture format the suffix of ``path`` names, one of ``FORMATS``; ``ValueError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix[1:] in FORMATS:
        return suffix[1:]
    problem = f"{suffix} is not a picture format gradwatch writes" if suffix else "no suffix names the picture format"
    raise ValueError(f"cannot write {path}: {problem}; use .png, .svg or .pdf")


def plot_report(report: Report, path: str | os.PathLike[str] | None = None, format: str | None = None) -> bytes:
    """Draw the gradient-flow heatmap (and time profiles of recurrent layers); returns the picture's bytes.

    ``format`` (png, svg or pdf) defaults to the one the suffix of ``path`` names, or PNG
    without a path; the picture is written to ``path`` if given.
    """
    format = format or ("png" if path is None else picture_format(path))
    plt = _pyplot()
    names, steps, rows = flow_matrix(report)
    profiles = [layer for layer in report.histories() if layer.time_profile]
    panels = 1 + bool(profiles)
    rows_high = min(max(len(names), 4), MAX_LABELLED_ROWS)
    figure, axes = plt.subplots(panels, 1, figsize=(9, 2.2 + 0.28 * rows_high + 2.6 * bool(profiles)), squeeze=False)
    heat = axes[0][0]
    if rows:
        image = heat.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest", vmin=-10, vmax=1)
        labelled = range(0, len(names), -(-len(names) // MAX_LABELLED_ROWS))
        heat.set_yticks(labelled, [_literal(names[i]) for i in labelled], fontsize=8)
        ticks = sorted(set(range(0, len(steps), max(1, len(steps) // 8))))
        heat.set_xticks(ticks, [str(steps[i]) for i in ticks], fontsize=8)
        figure.colorbar(image, ax=heat, label="log10 |g|/|W|")
        for finding in {f.symptom: f for f in reversed(report.findings)}.values():  # one line per symptom
            column = _column(steps, finding.first_step)
            heat.axvline(column, color=FINDING_COLOURS[finding.severity], linewidth=2)
            heat.text(column + 0.15, len(names) - 0.6, finding.symptom, color="white", fontsize=8, rotation=90, va="bottom")
    else:
        heat.text(0.5, 0.5, "no gradient history in this summary", ha="center", va="center")
    heat.set_xlabel("optimizer step (sampled)")
    heat.set_title(_literal(f"gradient flow per layer — {report.framework}, {report.steps} steps"), fontsize=10)
    if profiles:
        time_axis = axes[1][0]
        for layer in profiles:
            values = [v if v and v > 0 else math.nan for v in layer.time_profile or []]
            time_axis.semilogy(range(len(values)), values, label=_literal(layer.name))
        time_axis.set_xlabel("time step (first → last)")
        time_axis.set_ylabel("|dL/dx_t|")
        time_axis.set_title("gradient reaching each time step (latest sample)", fontsize=10)
        time_axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=format, dpi=110)
    plt.close(figure)
    picture = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(picture)
    return picture


def _literal(text: str) -> str:
    """``text`` as matplotlib shows it verbatim: a ``$`` would start math mode (and may not parse)."""
    return text.replace("$", r"\$")


def _column(steps: list[int], step: int) -> float:
    """Column of the heatmap at (or just before) ``step``."""
    return max((i for i, s in enumerate(steps) if s <= step), default=0)

"""One self-contained HTML report: findings, evidence, remedies and the pictures embedded (no network)."""

from __future__ import annotations

import base64
import json
from html import escape

from .report import Finding, Report

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
.finding{border-left:6px solid #999;padding:.4em 1em;margin:1em 0;background:#fafafa}
.critical{border-color:#d62728}.warning{border-color:#ff7f0e}.info{border-color:#1f77b4}
.severity{font-weight:700;text-transform:uppercase;margin-right:.6em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.healthy{color:#2ca02c;font-weight:700}img{max-width:100%}
"""


def render_html(report: Report, png: bytes | None = None) -> str:
    """The report as a single HTML page; ``png`` (e.g. from ``plot_report``) is embedded as a data URI."""
    title = f"gradwatch — {report.framework}, {report.steps} steps"
    body = [f"<h1>{escape(title)}</h1>"]
    if report.findings:
        body.append(f"<p>{len(report.findings)} finding(s), worst: <b>{escape(report.worst() or '')}</b></p>")
        body.extend(_finding(f) for f in report.findings)
    if report.healthy and report.too_little_measured:
        body.append(f"<p><b>? too little measured to judge: {escape(report.measured_line())}</b></p>")
    elif not report.findings:
        body.append('<p class="healthy">✓ no problems found</p>')
    if png:
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<h2>Gradient flow</h2><img alt="gradient flow per layer" src="data:image/png;base64,{data}">')
    body.extend(f"<p><i>note: {escape(note)}</i></p>" for note in report.notes)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def _finding(finding: Finding) -> str:
    where = f" in {escape(', '.join(finding.layers))}" if finding.layers else ""
    evidence = "".join(
        f"<tr><th>{escape(key)}</th><td>{escape(json.dumps(value, default=str)[:300])}</td></tr>"
        for key, value in finding.to_dict()["evidence"].items()
    )
    remedies = "".join(f"<li><b>{escape(r.title)}</b> — {escape(r.why)}</li>" for r in finding.remedies)
    return (
        f'<div class="finding {escape(finding.severity)}" data-symptom="{escape(finding.symptom)}">'
        f'<p><span class="severity">{escape(finding.severity)}</span><b>{escape(finding.symptom)}</b> '
        f"from step {finding.first_step}{where}</p><p>{escape(finding.message)}</p>"
        f"<details><summary>evidence</summary><table>{evidence}</table></details>"
        f"<p>What to try, best fit first:</p><ol>{remedies}</ol></div>"
    )

"""What changed between two runs: findings gone, new or changed, and the gradient flow per layer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .report import SEVERITY_RANK, Report


@dataclass
class Comparison:
    """Differences from run ``before`` to run ``after`` (e.g. before and after a remedy)."""

    gone: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # (symptom, severity before, after)
    flow: list[tuple[str, float | None, float | None]] = field(default_factory=list)  # (layer, |g|/|W| before, after)

    @property
    def improved(self) -> bool:
        """True when no finding is new or worse."""
        return not self.new and all(SEVERITY_RANK[b] >= SEVERITY_RANK[a] for _, b, a in self.changed)


def compare(before: Report, after: Report) -> Comparison:
    """Compare findings at warning level or above, and the latest relative gradient of each layer."""
    old = {f.symptom: f.severity for f in before.findings if f.at_least("warning")}
    now = {f.symptom: f.severity for f in after.findings if f.at_least("warning")}
    return Comparison(
        gone=[s for s in old if s not in now],
        new=[s for s in now if s not in old],
        changed=[(s, old[s], now[s]) for s in old if s in now and old[s] != now[s]],
        flow=_paired_flow(before, after),
    )


def _paired_flow(before: Report, after: Report) -> list[tuple[str, float | None, float | None]]:
    """Pair the k-th layer of each kind in both runs (a remedy may insert layers and shift names)."""
    flows = latest_flow(before), latest_flow(after)
    by_kind: list[dict[str, list[tuple[str, float]]]] = [{}, {}]
    for report, flow, groups in zip((before, after), flows, by_kind):
        for layer in report.histories():
            if layer.name in flow:
                groups.setdefault(layer.kind, []).append((layer.name, flow[layer.name]))
    rows: list[tuple[str, float | None, float | None]] = []
    for kind in list(by_kind[0]) + [k for k in by_kind[1] if k not in by_kind[0]]:
        old, new = by_kind[0].get(kind, []), by_kind[1].get(kind, [])
        for k in range(max(len(old), len(new))):
            a, b = (old[k] if k < len(old) else None), (new[k] if k < len(new) else None)
            names = {x[0] for x in (a, b) if x}
            label = f"{kind} #{k}" + (f" ({names.pop()})" if len(names) == 1 else f" ({a[0]} → {b[0]})" if a and b else "")
            rows.append((label, a[1] if a else None, b[1] if b else None))
    return rows


def latest_flow(report: Report) -> dict[str, float]:
    """Latest measured ``|g|/|W|`` per layer from the summary's history."""
    latest = ((layer.name, layer.latest_relative_grad()) for layer in report.histories())
    return {name: value for name, value in latest if value is not None}

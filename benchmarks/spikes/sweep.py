"""The sweep: the grid of configurations, the evaluation of every detector against the oracle, the table."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import oracle
from .detectors import FORECAST_IDS, LIGHTNING_DEFAULT_RTOL, ZCLIP_CLIP, ZCLIP_THRESHOLDS, first_above
from .train import RunConfig, RunResult

STEPS = 400
WARMUP_STEPS = 200  # "warmup on": linear over the first half of a 400-step run; the LR is constant after it
# Peak learning rates. Here every variant diverges once the LR passes about 0.4, so with warmup the peak sets
# when: 0.4 near or after the end of warmup (some spike and recover), 0.6 near step 140, 0.9 near step 95.
# Without warmup a peak of 0.4 or more blows up in the first 3 steps, which no detector can warn of 20 steps
# ahead: those cells are left out (--with-instant adds 0.6); 0.3 without warmup spikes early and recovers.
LRS_WITHOUT_WARMUP = (0.03, 0.3)
LRS_WITH_WARMUP = (0.03, 0.4, 0.6, 0.9)
INSTANT_LRS = (0.6,)
# (qk-layernorm, z-loss coefficient, Adam epsilon): a half fraction of the 2x2x2 design, so each option is on
# in half of the runs and every main effect can be read. Epsilon 1e-4 is the size of sqrt(v) in the upper
# layers here (1e-8 is far below it), so it damps their updates; smaller values than 1e-8 change nothing.
VARIANTS = ((False, 0.0, 1e-8), (True, 1e-4, 1e-8), (True, 0.0, 1e-4), (False, 1e-4, 1e-4))


def grid(
    seeds: int = 2, steps: int = STEPS, quick: bool = False, with_instant: bool = False, first_seed: int = 0, clip: float = 0.0
) -> list[RunConfig]:
    """The default sweep (or its --quick subset): every (LR, warmup) cell, every variant, seeds ``first_seed`` on.

    Seeds other than the default 0 and 1 (``first_seed=100``, say) give held-out runs of the same kind: the same
    grid on other initialisations and batch orders. ``clip``: every run clips its global gradient norm at this.
    """
    warmup = round(WARMUP_STEPS * steps / STEPS)
    cells = [(lr, 0) for lr in LRS_WITHOUT_WARMUP + (INSTANT_LRS if with_instant else ())] + [(lr, warmup) for lr in LRS_WITH_WARMUP]
    variants: Sequence[tuple[bool, float, float]] = VARIANTS
    if quick:
        cells = [(0.03, 0), (0.3, 0), (0.6, warmup)]
        variants = VARIANTS[:2]
        seeds = min(seeds, 1)
    return [
        RunConfig(lr=lr, warmup=w, qk_norm=qk, z_loss=z, eps=eps, seed=seed, steps=steps, clip=clip)
        for seed in range(first_seed, first_seed + seeds)
        for lr, w in cells
        for qk, z, eps in variants
    ]


@dataclass
class Warning_:
    """When one detector warned in one run, and its lead over the oracle's divergence step."""

    step: int | None
    lead: int | None  # divergence step minus warning step (None: no divergence or no warning)
    in_time: bool  # warned at least max(20, 10% of time-to-failure) before divergence
    in_window: bool = False  # in time, and in the second half of the time-to-failure (not an alarm from the start)


def required_lead(divergence_step: int) -> int:
    """The issue's target: max(20 steps, 10% of the time-to-failure), time-to-failure counted from step 0."""
    return max(20, math.ceil(0.1 * divergence_step))


def judge(step: int | None, verdict: oracle.Verdict) -> Warning_:
    if step is None or verdict.label != oracle.DIVERGED or verdict.step is None:
        return Warning_(step, None, False)
    lead = verdict.step - step
    in_time = lead >= required_lead(verdict.step)
    return Warning_(step, lead, in_time, in_time and step >= verdict.step / 2)


def detector_steps(result: RunResult, ids: frozenset[str], zclip: dict[str, float], lightning: dict[str, float]) -> dict[str, int | None]:
    """Each detector column's warning step in this run (columns named in ``zclip``/``lightning`` at their thresholds)."""
    _, forecast_raised, _ = result.gradwatch.warning(ids)
    _, any_raised, _ = result.gradwatch.warning(None)
    steps: dict[str, int | None] = {
        "gradwatch": forecast_raised,
        "gradwatch (report first_step)": result.gradwatch.earliest_first_step(ids),
        "gradwatch (existing)": any_raised,
    }
    z = [float(v) for v in result.traces["zscore"]]
    for column, threshold in zclip.items():
        steps[column] = first_above(z, threshold)
    for column, rtol in lightning.items():  # the shipped default is the live instance; other rtols read from the probe
        steps[column] = result.lightning_live if rtol == LIGHTNING_DEFAULT_RTOL else result.lightning.get(rtol)
    return steps


def calibrate(values_on_stable: list[float], allowed_rate: float) -> float:
    """The lowest alarm threshold that false-alarms on at most ``allowed_rate`` of the stable runs (alarm: value > threshold)."""
    if not values_on_stable:
        return math.inf
    ranked = sorted(values_on_stable, reverse=True)
    allowed = math.floor(allowed_rate * len(ranked) + 1e-9)
    return ranked[allowed] if allowed < len(ranked) else -math.inf


def lightning_calibrated(results: list[RunResult], allowed_rate: float) -> float | None:
    """The most sensitive rtol run in the sweep whose false-alarm rate on stable runs is at most ``allowed_rate``."""
    stable = [r for r in results if r.verdict.label == oracle.STABLE]
    if not stable or not results[0].lightning:
        return None
    for rtol in sorted(results[0].lightning):
        alarms = sum(r.lightning.get(rtol) is not None for r in stable)
        if alarms <= allowed_rate * len(stable) + 1e-9:
            return rtol
    return None


def evaluate(results: list[RunResult], ids: frozenset[str] = FORECAST_IDS) -> dict[str, Any]:
    """Per-run warning steps and leads for every detector column, and the summary the issue's targets are read from."""
    stable = [r for r in results if r.verdict.label == oracle.STABLE]
    gw_alarms = sum(r.gradwatch.warning(ids)[1] is not None for r in stable)
    gw_rate = gw_alarms / len(stable) if stable else 0.0
    max_z = [max((float(v) for v in r.traces["zscore"] if not math.isnan(float(v))), default=-math.inf) for r in stable]
    z_cal = calibrate(max_z, gw_rate)
    rtol_cal = lightning_calibrated(results, gw_rate)
    zclip = {f"zclip z>{ZCLIP_CLIP:g}": ZCLIP_CLIP}
    if math.isfinite(z_cal):
        zclip[f"zclip z>{z_cal:.3g} (same FA)"] = z_cal
    lightning = {f"lightning rtol={LIGHTNING_DEFAULT_RTOL:g}": LIGHTNING_DEFAULT_RTOL} if results and results[0].lightning else {}
    if rtol_cal is not None and rtol_cal != LIGHTNING_DEFAULT_RTOL:
        lightning[f"lightning rtol={rtol_cal:g} (same FA)"] = rtol_cal
    rows: list[dict[str, Any]] = []
    for result in results:
        steps = detector_steps(result, ids, zclip, lightning)
        rows.append(
            {
                "run": result.config.name,
                "config": asdict(result.config),
                "oracle": result.verdict.to_dict(),
                "steps_run": result.steps_run,
                "seconds": round(result.seconds, 2),
                "warnings": {column: asdict(judge(step, result.verdict)) for column, step in steps.items()},
                "gradwatch_findings": result.gradwatch.to_dict(),
            }
        )
    columns = list(rows[0]["warnings"]) if rows else []
    summary = {column: summarise(column, rows) for column in columns}
    sweeps = {
        "zclip": _threshold_sweep(results, [("zclip", t) for t in ZCLIP_THRESHOLDS]),
        "lightning": _threshold_sweep(results, [("lightning", t) for t in sorted(results[0].lightning)] if results else []),
    }
    counts = {name: sum(r.verdict.label == name for r in results) for name in (oracle.DIVERGED, oracle.SPIKED, oracle.STABLE)}
    # the live shipped-default SpikeDetection and the one read for calibration must agree on rtol 2.0
    lightning_disagreements = [r.config.name for r in results if r.lightning and r.lightning.get(LIGHTNING_DEFAULT_RTOL) != r.lightning_live]
    return {
        "forecast_ids": sorted(ids),
        "labels": counts,
        "gradwatch_false_alarm_rate": gw_rate,
        "columns": columns,
        "rows": rows,
        "summary": summary,
        "threshold_sweeps": sweeps,
        "lightning_disagreements": lightning_disagreements,
    }


def summarise(column: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One detector column over judged rows: diverged runs warned in time (and in the second half), false alarms on
    stable runs, spiked runs warned, the median lead (the PyTorch and the Keras sweep both print it)."""
    diverged = [r for r in rows if r["oracle"]["label"] == oracle.DIVERGED]
    stable = [r for r in rows if r["oracle"]["label"] == oracle.STABLE]
    spiked = [r for r in rows if r["oracle"]["label"] == oracle.SPIKED]
    warned = [r["warnings"][column] for r in diverged]
    leads = [w["lead"] for w in warned if w["lead"] is not None and w["lead"] >= 0]
    return {
        "diverged_in_time": sum(w["in_time"] for w in warned),
        "diverged_in_window": sum(w["in_window"] for w in warned),
        "diverged_warned_before": len(leads),
        "diverged": len(diverged),
        "stable_alarms": sum(r["warnings"][column]["step"] is not None for r in stable),
        "stable": len(stable),
        "spiked_warned": sum(r["warnings"][column]["step"] is not None for r in spiked),
        "spiked": len(spiked),
        "median_lead": statistics.median(leads) if leads else None,
    }


def _threshold_sweep(results: list[RunResult], points: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    """For each threshold of a baseline: false alarms on stable runs, diverged runs warned in time, median lead."""
    out = []
    for kind, threshold in points:
        in_time = alarms = 0
        leads = []
        for result in results:
            if kind == "zclip":
                step = first_above([float(v) for v in result.traces["zscore"]], threshold)
            else:
                step = result.lightning.get(threshold)
            judged = judge(step, result.verdict)
            if result.verdict.label == oracle.STABLE and step is not None:
                alarms += 1
            if result.verdict.label == oracle.DIVERGED:
                in_time += judged.in_time
                if judged.lead is not None and judged.lead >= 0:
                    leads.append(judged.lead)
        out.append(
            {"threshold": threshold, "stable_alarms": alarms, "diverged_in_time": in_time, "median_lead": statistics.median(leads) if leads else None}
        )
    return out


def table(evaluation: dict[str, Any]) -> str:
    """The printed report: one line per run, then the summary per detector and the baselines' threshold sweeps."""
    columns = evaluation["columns"]
    short = {column: _short(column) for column in columns}
    lines = ["per run: warning step (lead = divergence step - warning step; * = in time: lead >= max(20, 10% of the divergence step))", ""]
    header = f"{'run':38s} {'oracle':8s} {'div':>4s} {'need':>4s} " + " ".join(f"{short[c]:>12s}" for c in columns)
    lines += [header, "-" * len(header)]
    for row in evaluation["rows"]:
        verdict = row["oracle"]
        div = verdict["step"]
        cells = []
        for column in columns:
            warning = row["warnings"][column]
            if warning["step"] is None:
                cells.append(f"{'-':>12s}")
            elif warning["lead"] is None:
                cells.append(f"{warning['step']:>12d}")
            else:
                cells.append(f"{warning['step']:>5d}({warning['lead']:+4d}){'*' if warning['in_time'] else ' '}")
        need = required_lead(div) if div is not None else None
        lines.append(
            f"{row['run']:38s} {verdict['label']:8s} {div if div is not None else '':>4} {need if need is not None else '':>4} " + " ".join(cells)
        )
    lines += ["", "columns: " + "; ".join(f"{short[c]} = {c}" for c in columns), ""]
    labels = evaluation["labels"]
    lines.append(
        f"oracle labels: {labels['diverged']} diverged, {labels['spiked']} spiked (not diverged), {labels['stable']} stable; gradwatch forecast ids: {', '.join(evaluation['forecast_ids'])}"
    )
    lines.append("")
    lines.append(
        f"{'detector':34s} {'in time':>9s} {'in 2nd half':>11s} {'before':>7s} {'false alarms':>13s} {'spiked warned':>14s} {'median lead':>12s}"
    )
    for column, s in evaluation["summary"].items():
        lead = "-" if s["median_lead"] is None else f"{s['median_lead']:g}"
        lines.append(
            f"{column:34s} {s['diverged_in_time']:>4d}/{s['diverged']:<4d} {s['diverged_in_window']:>6d}/{s['diverged']:<4d} {s['diverged_warned_before']:>3d}/{s['diverged']:<3d} {s['stable_alarms']:>6d}/{s['stable']:<6d} {s['spiked_warned']:>7d}/{s['spiked']:<6d} {lead:>12s}"
        )
    lines.append("targets: in time (lead >= max(20, 10% of the divergence step)) on >= 80% of diverged runs; false alarms on <= 5% of stable runs")
    lines.append(
        "in 2nd half: in time and raised after half the divergence step (an alarm from the first steps of a run that diverges much later is not a forecast)"
    )
    for name, sweep in evaluation["threshold_sweeps"].items():
        label = "z >" if name == "zclip" else "rtol"
        lines.append("")
        lines.append(f"{name} by threshold ({label}): false alarms on stable / diverged in time / median lead")
        lines.append(
            "  "
            + "  ".join(
                f"{p['threshold']:g}: {p['stable_alarms']}/{p['diverged_in_time']}/{'-' if p['median_lead'] is None else format(p['median_lead'], 'g')}"
                for p in sweep
            )
        )
    if evaluation.get("lightning_disagreements"):
        lines.append(f"\nWARNING: the live SpikeDetection and the calibration probe disagree in: {', '.join(evaluation['lightning_disagreements'])}")
    return "\n".join(lines)


def _short(column: str) -> str:
    if column == "gradwatch":
        return "gw forecast"
    if column == "gradwatch (existing)":
        return "gw any"
    if column == "gradwatch (report first_step)":
        return "gw 1st step"
    if column.startswith("zclip"):
        return "zclip cal" if "same FA" in column else "zclip"
    return "light cal" if "same FA" in column else "lightning"


def write_trace(result: RunResult, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.config.name}.json"
    path.write_text(json.dumps(result.trace_json(), allow_nan=False, default=str))
    return path

"""Remedy trial results: final loss, verdicts, JSON schema and round trip, rendering, ``gradwatch report``."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import jsonschema
import pytest

from gradwatch import SummaryError
from gradwatch.cli import main
from gradwatch.console import render_trial, trial_progress
from gradwatch.trial import (
    TRIAL_SCHEMA,
    NotApplicable,
    TrialResult,
    final_loss,
    load_trial,
    trial_schema_path,
    variant_row,
)


def _result() -> TrialResult:
    baseline = variant_row((), "your model as built", None, ["vanishing_gradients"], [1.1] * 100, 2.0)
    rows = [
        variant_row(["relu_family"], "Sigmoid → ReLU (10 modules)", baseline, [], [0.9] * 90 + [0.4] * 10, 2.5),
        variant_row(["relu_family", "matched_init"], "Sigmoid → ReLU, He init", baseline, [], [0.2] * 100, 2.5),
        variant_row(["lower_lr"], "learning rate ×0.1", baseline, ["vanishing_gradients", "early_stagnation"], [1.1] * 100, 2.0),
        variant_row(["raise_lr"], "learning rate ×100", baseline, ["nonfinite"], [1.0] * 99 + [math.nan], 1.0),
    ]
    skipped = [NotApplicable("skip_connections", "changes the forward pass: where a skip path goes is a design decision")]
    return TrialResult("pytorch", 100, 0, baseline, rows, skipped, ranked=("relu_family", "skip_connections", "matched_init"))


def test_final_loss_is_the_median_of_the_last_tenth_of_the_steps():
    assert final_loss([5.0] * 90 + [3.0, 1.0, 2.0, 9.0, 0.0, 4.0, 8.0, 7.0, 6.0, 5.0]) == 4.5
    assert final_loss([3.0, 2.0, 1.0]) == 1.0, "a short run keeps at least its last loss"
    assert final_loss(list(range(21))) == 19.0, "ceil(10% of 21) = 3 values: 18, 19, 20"
    assert final_loss([1.0] * 20 + [math.inf]) is None, "a diverged run has no final loss"
    assert final_loss([]) is None


def test_rows_judge_symptoms_and_loss_against_the_baseline():
    result = _result()
    relu, both, lower, raise_ = result.rows
    assert relu.loss_ratio == pytest.approx(0.4 / 1.1) and relu.cleared == ("vanishing_gradients",) and relu.clears()
    assert not lower.clears() and lower.new == ("early_stagnation",)
    assert raise_.cleared == ("vanishing_gradients",) and raise_.new == ("nonfinite",) and not raise_.clears()
    assert raise_.final_loss is None and raise_.loss_ratio is None
    assert result.cures(both) and result.cures(relu, min_gain=0.6) and not result.cures(relu, min_gain=0.7)
    assert result.best is both, "clears everything and ends lowest"
    assert result.seconds == 10.0 and result.time_cost == 5.0
    assert not result.healthy and not result.nothing_to_try


def test_best_is_none_when_no_variant_beats_the_baseline_and_a_diverged_baseline_is_beaten_by_any_finite_loss():
    baseline = variant_row((), "as built", None, ["exploding_gradients"], [2.0] * 10, 1.0)
    worse = variant_row(["lower_lr"], "learning rate ×0.1", baseline, ["exploding_gradients"], [3.0] * 10, 1.0)
    assert TrialResult("pytorch", 10, 0, baseline, [worse]).best is None
    diverged = variant_row((), "as built", None, ["nonfinite"], [1.0] * 9 + [math.nan], 1.0)
    finite = variant_row(["lower_lr"], "learning rate ×0.1", diverged, [], [5.0] * 10, 1.0)
    result = TrialResult("pytorch", 10, 0, diverged, [finite])
    assert result.best is finite and result.cures(finite) and finite.loss_ratio is None


def test_healthy_baseline_has_nothing_to_try():
    result = TrialResult("pytorch", 10, 0, variant_row((), "as built", None, [], [1.0] * 10, 1.0))
    assert result.healthy and result.nothing_to_try and result.best is None
    assert "✓ nothing to try" in render_trial(result, width=80)


def test_trial_json_validates_against_its_schema_and_round_trips(tmp_path):
    result = _result()
    path = result.write_json(tmp_path / "trial.json")
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(trial_schema_path().read_text()))
    assert data["schema"] == TRIAL_SCHEMA and data["best"] == 1 and data["rows"][3]["final_loss"] is None
    assert load_trial(path) == result
    data["rows"][0]["symptoms_after"] = ["not_a_symptom"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads(trial_schema_path().read_text()))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": "gradwatch.trial/9"}', "unsupported trial schema 'gradwatch.trial/9'"),
        ('{"schema": "gradwatch.trial/1", "framework": "x"}', "malformed gradwatch trial: KeyError"),
        ("[1]", "not a gradwatch trial"),
    ],
)
def test_loading_a_bad_trial_file_says_why_in_one_line(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(SummaryError, match=message) as caught:
        load_trial(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


EXPECTED = """\
╭─ gradwatch trial · pytorch · 100 steps per run · seed 0 ─────────────────────────────────────────╮
│ baseline: vanishing_gradients                                                                    │
│ best: relu_family + matched_init — clears vanishing_gradients; final loss ×0.18 of the baseline  │
│                                                                                                  │
│ remedies              what changed                 symptoms ≥ warning       loss  × base  secs   │
│ baseline              your model as built          vanishing_gradients       1.1           2.0   │
│ relu_family           Sigmoid → ReLU (10 modules)  ✓ none                    0.4   ×0.36   2.5   │
│ ★ relu_family +       Sigmoid → ReLU, He init      ✓ none                    0.2   ×0.18   2.5   │
│ matched_init                                                                                     │
│ lower_lr              learning rate ×0.1           vanishing_gradients       1.1      ×1   2.0   │
│                                                    early_stagnation                              │
│ raise_lr              learning rate ×100           nonfinite            diverged       -   1.0   │
│                                                                                                  │
│ not applicable automatically:                                                                    │
│   skip_connections  changes the forward pass: where a skip path goes is a design decision        │
│                                                                                                  │
│ loss: median of the last 10% of steps · 10.0 s in all, 5.0× the baseline run                     │
╰──────────────────────────────────────────────────────────────────────────────────────────────────╯
"""


def test_trial_renders_as_a_table_at_a_fixed_width():
    assert render_trial(_result(), width=100) == EXPECTED


def test_gradwatch_report_renders_a_trial_file(tmp_path, capsys):
    path = _result().write_json(tmp_path / "trial.json")
    assert main(["report", str(path)]) == 0
    err = capsys.readouterr().err
    assert "gradwatch trial · pytorch" in err and "relu_family + matched_init" in err
    (tmp_path / "bad.json").write_text('{"schema": "gradwatch.trial/1"}')
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "malformed gradwatch trial" in capsys.readouterr().err


def test_progress_is_silent_when_disabled(capsys):
    with trial_progress(enabled=False) as progress:
        progress.start("relu_family", total=3)
        progress.advance()
    assert capsys.readouterr() == ("", "")


def test_trial_module_loads_no_framework():
    code = "import sys, gradwatch.trial; print(sorted(m for m in ('torch','tensorflow','keras','rich','jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ranked_remedies_interleave_the_findings_and_combinations_pair_swaps_with_init():
    from gradwatch import Finding, LayerFacts, ModelFacts, Report
    from gradwatch.trial import combinations, ranked_remedies

    facts = ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid", init_gain=0.58) for i in range(6)), residual=False, lr=1e-3)
    findings = [Finding("vanishing_gradients", "warning", 2, ("l0",), "m"), Finding("early_stagnation", "warning", 40, (), "m"),
                Finding("dead_relu", "info", 4, ("l1",), "m")]  # fmt: skip
    ranked = ranked_remedies(Report("x", 100, findings, facts=facts))
    assert ranked[:3] == ("relu_family", "raise_lr", "skip_connections"), "each finding's best first; info findings ignored"
    assert "leaky_relu" not in ranked and len(ranked) == len(set(ranked))
    assert ranked_remedies(Report("x", 100, findings, facts=facts), only=["raise_lr"]) == ("raise_lr",)
    singles = [("relu_family",), ("raise_lr",), ("normalization",), ("matched_init",), ("lower_lr",)]
    assert combinations(singles) == [(0, 1), (0, 3)]
    assert combinations([("raise_lr",), ("lower_lr",), ("gradient_clipping",)]) == [(0, 2)]


def test_learning_rate_raise_is_sized_on_recorded_update_sizes():
    from gradwatch import Report
    from gradwatch.trial import lr_raise_scales

    def layer(update: float) -> dict:
        return {"name": "l", "kind": "Linear", "history": {"step": [0, 20], "update_norm": [update, update], "weight_norm": [1.0, 1.0]}}

    report = Report("x", 100, layers=[layer(1e-8), layer(1e-7), layer(1e-5)])
    assert lr_raise_scales(report) == [(1e4, "sized on the median layer"), (100.0, "sized on the fastest layer")]
    assert lr_raise_scales(Report("x", 100, layers=[layer(1e-12)])) == [(1e6, "sized on the median layer")], "capped at x1e6"
    assert lr_raise_scales(Report("x", 100)) == [(100.0, "no update sizes recorded")]


def test_learning_rate_lower_is_sized_on_the_first_recorded_steps():
    from gradwatch import Report
    from gradwatch.trial import lr_lower_scales

    def layer(*updates: float | None) -> dict:
        return {"name": "l", "kind": "Linear", "history": {"step": [0, 1, 2], "update_norm": list(updates), "weight_norm": [1.0] * 3}}

    blown = Report("x", 100, layers=[layer(10.0, None, None), layer(3.0, 1e9, None), layer(20.0, None, None)])
    assert lr_lower_scales(blown) == [(0.1, "the usual first step down"), (1e-4, "sized on the median layer's first steps")]
    assert lr_lower_scales(Report("x", 100, layers=[layer(2e-3, 5e-3, 1e-2)])) == [(0.1, "the usual first step down")]


def test_variants_beyond_the_limit_or_failing_to_train_are_listed_not_dropped():
    from dataclasses import dataclass as dc

    from gradwatch import Session
    from gradwatch.trial import train_variants, variant_row

    @dc
    class Plan:
        remedies: tuple[str, ...]
        words: tuple[str, ...]

    class Progress:
        def start(self, *args: object, **kwargs: object) -> None: ...
        def advance(self) -> None: ...

    def run(plan: Plan, name: str) -> tuple[object, list[float], float]:
        if plan.remedies == ("lower_lr",):
            raise RuntimeError("CUDA out of\\nmemory")
        return Session().report(), [1.0, 0.5], 0.1

    baseline = variant_row((), "your model as built", None, ["exploding_gradients"], [2.0, 2.0], 0.1)
    plans = [Plan(("gradient_clipping",), ("clip",)), Plan(("lower_lr",), ("lr / 10",)), Plan(("matched_init",), ("He",))]
    rows, skipped = train_variants(plans, run, baseline, max_variants=2, progress=Progress())  # type: ignore[arg-type]
    assert [r.remedies for r in rows] == [("gradient_clipping",)] and rows[0].loss_ratio == pytest.approx(0.25)
    assert [(s.remedy, s.reason) for s in skipped] == [
        ("matched_init", "not tried: beyond max_variants=2"),
        ("lower_lr", "the variant failed to train: RuntimeError: CUDA out of\\nmemory"),
    ]

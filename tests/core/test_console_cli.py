"""The console renderer against exact text at a fixed width, and the CLI's exit codes."""

from __future__ import annotations

import json

import pytest

from gradwatch import LayerFacts, ModelFacts, Monitor
from gradwatch.cli import main
from gradwatch.console import render

from .streams import sample

EXPECTED = """\
╭─ gradwatch · unknown · 4 sampled of 4 steps ─────────────────────────────────╮
│ found: vanishing_gradients (warning)                                         │
│                                                                              │
│ WARNING  vanishing_gradients  from step 2  in l0, l1                         │
│   relative gradient |g|/|W| of l0 is 1e-07 vs 0.1 at l3 (ratio 1e-06, about  │
│   ×0.01 per layer going down); l0 moves 1e-08 per step vs 0.01               │
│   what to try, best fit first:                                               │
│   1.  Use ReLU-family activations (ReLU, LeakyReLU, ELU, GELU) — 3 of your 4 │
│       layers are followed by Sigmoid, whose slope is at most 0.25; ReLU,     │
│       LeakyReLU, ELU or GELU pass gradient with slope about 1 for active     │
│       units                                                                  │
│   2.  Add residual (skip) connections — your model is 4 parameterised layers │
│       deep and gradwatch found no residual connections; a residual path y =  │
│       x + f(x) carries gradient to the bottom layers unattenuated            │
│   3.  Add batch or layer normalisation — none of your 4 layers is followed   │
│       by BatchNorm or LayerNorm; normalisation keeps pre-activations in the  │
│       range where gradients flow                                             │
│   4.  Layer-wise pretraining — last resort: train the layers greedily one at │
│       a time (layer-wise pretraining), then fine-tune the whole network      │
│                                                                              │
│ gradient flow |g|/|W| per layer, latest sample (log bars, 1e-10..1e1):       │
│   l0  Linear  ██████▌                   1e-07                                │
│   l1  Linear  ██████████▉               1e-05                                │
│   l2  Linear  ███████████████▎          0.001                                │
│   l3  Linear  ███████████████████▋        0.1                                │
╰──────────────────────────────────────────────────────────────────────────────╯
"""


def _report():
    layers = tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid" if i < 3 else None) for i in range(4))
    monitor = Monitor(ModelFacts(layers=layers, residual=False), warn_on=None)
    for step in range(4):
        monitor.observe(sample(step, [1e-7, 1e-5, 1e-3, 1e-1], relative_updates=[1e-8, 1e-6, 1e-4, 1e-2]))
    return monitor.report()


def test_console_report_exact_text():
    assert render(_report(), width=80) == EXPECTED


def test_healthy_report_says_so():
    monitor = Monitor()
    for step in range(3):
        monitor.observe(sample(step))
    assert "✓ no problems found" in render(monitor.report(), width=80)


def test_no_clean_bill_for_an_unmeasured_run(tmp_path, capsys):
    monitor = Monitor()
    monitor.notes.append("watch() saw no backward pass")
    monitor.observe(sample(0))
    report = monitor.report(steps=40)
    text = render(report, width=100)
    assert "no problems found" not in text and "too little measured to judge: 1 sampled of 40 steps" in text
    path = report.write_json(tmp_path / "gw.json")
    assert main(["check", str(path)]) == 3
    assert "not judged: too little measured, 1 sampled of 40 steps (watch() saw no backward pass)" in capsys.readouterr().out


def test_check_exit_codes_gate_ci(tmp_path, capsys):
    path = _report().write_json(tmp_path / "gw.json")
    assert main(["check", str(path), "--fail-on", "warning"]) == 1
    assert "warning: vanishing_gradients from step 2" in capsys.readouterr().out
    assert main(["check", str(path), "--fail-on", "critical"]) == 0
    assert "ok: no finding at critical or above in 4 sampled of 4 steps" in capsys.readouterr().out
    assert main(["report", str(path)]) == 0


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), ("{", "invalid JSON"), (json.dumps({"schema": "other/2"}), "unsupported summary schema")],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    for command in ("report", "check"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gradwatch: error: ") and message in err and err.count("\n") == 1

"""The console renderer against exact text at a fixed width, and the CLI's exit codes."""

from __future__ import annotations

import json

import pytest

from gradwatch import LayerFacts, ModelFacts, Session, __version__
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
    session = Session(facts=ModelFacts(layers=layers, residual=False), warn_on=None)
    for step in range(4):
        session.observe(sample(step, [1e-7, 1e-5, 1e-3, 1e-1], relative_updates=[1e-8, 1e-6, 1e-4, 1e-2]))
    return session.report()


def test_console_report_exact_text():
    assert render(_report(), width=80) == EXPECTED


def test_healthy_report_says_so():
    session = Session()
    for step in range(3):
        session.observe(sample(step))
    assert "✓ no problems found" in render(session.report(), width=80)


def test_the_report_says_where_the_summary_was_written(tmp_path):
    shown: list[str] = []
    session = Session(summary_path=tmp_path / "gw.json")
    for step in range(3):
        session.observe(sample(step))
    session.close(render=lambda report: shown.append(render(report, width=200)))
    assert f"summary: {tmp_path / 'gw.json'}" in shown[0] and (tmp_path / "gw.json").exists()
    assert "summary:" not in render(Session().report(), width=200)  # none written, none said


def test_no_clean_bill_for_an_unmeasured_run(tmp_path, capsys):
    session = Session()
    session.note("watch() saw no backward pass")
    session.observe(sample(0))
    report = session.report(steps=40)
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


def _exit_of(argv: list[str]) -> int:
    """Exit code of an argparse action that ends the program (``--version``, ``-h``)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return int(stop.value.code or 0)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gradwatch: error: ") and err.count("\n") == 1, err
    return err.strip()


def test_version(capsys):
    assert _exit_of(["--version"]) == 0
    assert capsys.readouterr().out == f"gradwatch {__version__}\n" == "gradwatch 0.1.0\n"


def test_python_dash_m_gradwatch_is_the_gradwatch_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gradwatch", "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"gradwatch {__version__}\n"), done.stderr


def test_help_shows_defaults_and_exit_codes(capsys):
    assert _exit_of(["check", "-h"]) == 0
    text = capsys.readouterr().out
    assert "(default: warning)" in text and "exit codes:" in text
    assert all(f"\n  {code}  " in text for code in "0123"), text
    for verb in ("report", "plot", "html", "compare"):
        assert _exit_of([verb, "-h"]) == 0
        assert "exit codes:\n  0  " in capsys.readouterr().out
    assert _exit_of(["compare", "-h"]) == 0
    assert "1  a finding is new or worse in AFTER" in capsys.readouterr().out


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF"), ("SVG", b"<?xml")])
def test_plot_writes_the_format_the_suffix_names(tmp_path, capsys, suffix, magic):
    pytest.importorskip("matplotlib")
    path = _report().write_json(tmp_path / "gw.json")
    out = tmp_path / f"flow.{suffix}"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize(
    "name, problem", [("flow.jpg", ".jpg is not a picture format gradwatch writes"), ("flow", "no suffix names the picture format")]
)
def test_plot_refuses_an_unsupported_suffix(tmp_path, capsys, name, problem):
    path = _report().write_json(tmp_path / "gw.json")
    out = tmp_path / name
    assert main(["plot", str(path), "-o", str(out)]) == 2
    assert _one_line_error(capsys) == f"gradwatch: error: cannot write {out}: {problem}; use .png, .svg or .pdf"
    assert not out.exists()


@pytest.mark.parametrize("verb, name", [("plot", "x.png"), ("html", "x.html")])
def test_output_into_a_missing_folder_is_one_clear_line(tmp_path, capsys, verb, name):
    path = _report().write_json(tmp_path / "gw.json")
    out = tmp_path / "missing" / name
    assert main([verb, str(path), "-o", str(out)]) == 2
    assert _one_line_error(capsys) == f"gradwatch: error: cannot write {out}: folder {out.parent} does not exist"


def test_compare_exit_code_gates_ci_on_new_or_worse_findings(tmp_path, capsys):
    sick = _report().write_json(tmp_path / "sick.json")
    session = Session(warn_on=None)
    for step in range(3):
        session.observe(sample(step))
    healthy = session.report().write_json(tmp_path / "healthy.json")
    worse = tmp_path / "worse.json"
    data = json.loads(sick.read_text())
    data["findings"][0]["severity"] = "critical"
    worse.write_text(json.dumps(data))
    assert main(["compare", str(healthy), str(sick)]) == 1  # new
    assert main(["compare", str(sick), str(worse)]) == 1  # warning → critical
    assert main(["compare", str(sick), str(healthy)]) == 0  # gone
    assert main(["compare", str(worse), str(sick)]) == 0  # better
    assert main(["compare", str(sick), str(sick)]) == 0
    capsys.readouterr()
    assert main(["compare", str(sick), str(tmp_path / "nothing.json")]) == 2
    assert "no such file" in _one_line_error(capsys)


@pytest.mark.parametrize("verb", [["check"], ["plot", "-o", "x.png"], ["html", "-o", "x.html"], ["compare", "{summary}"]])
def test_a_trial_file_points_to_gradwatch_report(tmp_path, monkeypatch, capsys, verb):
    monkeypatch.chdir(tmp_path)
    summary = _report().write_json(tmp_path / "gw.json")
    trial = tmp_path / "my trial.json"
    trial.write_text(json.dumps({"schema": "gradwatch.trial/1", "rows": []}))
    assert main([verb[0], str(trial), *(a.format(summary=summary) for a in verb[1:])]) == 2
    message = f"gradwatch: error: {trial}: a remedy trial file (gradwatch.trial/1), not a summary: `gradwatch report '{trial}'` renders it"
    assert _one_line_error(capsys) == message


@pytest.mark.parametrize("content", ["[1, 2]", '{"a": 1}', '{"schema": null}', '"text"'])
def test_a_file_that_is_no_summary_says_so(tmp_path, capsys, content):
    path = tmp_path / "x.json"
    path.write_text(content)
    for verb in ("report", "check", "html"):
        assert main([verb, str(path), *(["-o", str(tmp_path / "x.html")] if verb == "html" else [])]) == 2
        assert _one_line_error(capsys) == f'gradwatch: error: {path}: not a gradwatch summary (no "schema": "gradwatch.summary/1" field)'

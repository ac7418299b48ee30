"""``gradwatch run``'s command line: gradwatch's options before the script, everything after it the script's; exit codes as Python computes them."""

from __future__ import annotations

from dataclasses import fields

import pytest

from gradwatch.commands import _parser
from gradwatch.options import Options
from gradwatch.run import _exit_code, chosen_options, main, split


@pytest.mark.parametrize(
    ("argv", "own", "rest"),
    [
        (["train.py", "--lr", "3"], [], ["train.py", "--lr", "3"]),
        (["--summary", "a.json", "train.py", "--summary", "b"], ["--summary", "a.json"], ["train.py", "--summary", "b"]),
        (["--every-n-steps=5", "train.py", "-m", "x"], ["--every-n-steps=5"], ["train.py", "-m", "x"]),
        (["-m", "pkg.train", "--summary", "x"], ["-m", "pkg.train"], ["--summary", "x"]),
        (["--every-n-steps", "4", "-mpkg.train", "-v"], ["--every-n-steps", "4", "-mpkg.train"], ["-v"]),
        (["--summary", "s.json", "--", "-weird.py", "a"], ["--summary", "s.json"], ["-weird.py", "a"]),
        (["--help"], ["--help"], []),
        (
            ["--stop-on", "critical", "--no-print-report", "t.py", "--warn-on", "x"],
            ["--stop-on", "critical", "--no-print-report"],
            ["t.py", "--warn-on", "x"],
        ),
        (["--history-size", "64", "--strict", "t.py"], ["--history-size", "64", "--strict"], ["t.py"]),
    ],
)
def test_the_scripts_arguments_are_never_gradwatchs(argv, own, rest):
    assert split(argv) == (own, rest)


def test_exit_codes_follow_python():
    assert [_exit_code(c) for c in (None, 0, 3, True, 256, -1)] == [0, 0, 3, 1, 0, 255]


def test_exit_code_of_a_message_is_one_and_the_message_is_printed(capsys):
    assert _exit_code("bye") == 1
    assert capsys.readouterr().err == "bye\n"


def test_help_lists_run():
    assert "run" in _parser().format_help()


def _given(argv):
    parser = _parser()
    return chosen_options(parser.parse_args(["run", *argv, "t.py"]))


def test_every_watch_option_but_the_detector_objects_is_a_flag():
    shown = " ".join(_parser().parse_args(["run", "t.py"]).__dict__)
    assert {f.name for f in fields(Options)} - set(shown.split()) == {"detectors"}
    given = _given(["--stop-on", "critical", "--warn-on", "none", "--no-print-report", "--log-layers", "--autosave-every-n-steps", "none"])
    assert given == {"stop_on": "critical", "warn_on": None, "print_report": False, "log_layers": True, "autosave_every_n_steps": None}
    assert _given(["--summary", "s.json"])["summary_path"].endswith("/s.json") and _given([]) == {}


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--stop-on", "fatal"], "stop_on must be one of"),
        (["--history-size", "many"], "history_size must be a whole number, got 'many'"),
        (["--every-n-steps", "0"], "every_n_steps must be"),
    ],
)
def test_a_bad_option_value_is_one_line_and_exit_code_2_before_the_script_runs(argv, reason, tmp_path, capsys):
    script = tmp_path / "t.py"
    script.write_text("open(__file__ + '.ran', 'w')\n")
    assert main([*argv, str(script)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gradwatch run: error: ") and reason in error and error.count("\n") == 1
    assert not (tmp_path / "t.py.ran").exists()

"""``gradwatch run``'s command line: gradwatch's options before the script, everything after it the script's; exit codes as Python computes them."""

from __future__ import annotations

import pytest

from gradwatch.commands import _parser
from gradwatch.run import _exit_code, split


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

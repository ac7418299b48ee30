"""The environment switch of ``gradwatch run``: ``GRADWATCH=1`` with the boot folder on ``PYTHONPATH`` watches an unmodified script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gradwatch.run import BOOT, switch_environment
from tests.torch.test_run import LOOP, finished, lines, script, started

REPORTED = "sampled of 40 steps"  # a line of the console report of a 40-step run

SHOW = """
import sys
print("gradwatch imported:", any(name.split(".")[0] == "gradwatch" for name in sys.modules))
"""

USER_SITE = """
import os
os.environ["USER_SITE_RAN"] = "yes"
print("user sitecustomize ran")
"""


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH")}
    env.update(variables)
    return env


def test_the_switch_watches_a_plain_python_run_and_leaves_its_training_alone(tmp_path):
    plain, switched, options = tmp_path / "plain", tmp_path / "switched", tmp_path / "options"
    for folder in (plain, switched, options):
        script(folder, LOOP)
    boot = str(BOOT)
    runs = [
        started(plain, "train.py", "--lr", "3", env=environment(PYTHONPATH=boot)),
        started(switched, "train.py", "--lr", "3", env=environment(PYTHONPATH=boot, GRADWATCH="1")),
        started(options, "train.py", env=environment(PYTHONPATH=boot, GRADWATCH="1", GRADWATCH_SUMMARY="out/s.json", GRADWATCH_EVERY_N_STEPS="4")),
    ]
    alone, watched, tuned = (finished(run) for run in runs)
    for run in (alone, watched, tuned):
        assert run.returncode == 0, run.stderr
    assert lines(watched.stdout, "") == lines(alone.stdout, ""), "same output, same losses and weights bit for bit"
    assert REPORTED not in alone.stderr and not list(plain.glob("gradwatch*.json"))

    summary = json.loads((switched / "gradwatch-train.json").read_text())
    assert (summary["framework"], summary["steps"], summary["every_n_steps"]) == ("pytorch", 40, 20)
    assert watched.stderr.count(REPORTED) == 1
    assert "never closed" not in watched.stderr, "the switch closes its watcher at exit, before watch()'s own handler"

    summary = json.loads((options / "out" / "s.json").read_text())
    assert (summary["steps"], summary["every_n_steps"]) == (40, 4)


def test_switched_off_nothing_of_gradwatch_is_imported_and_a_hidden_sitecustomize_still_runs(tmp_path):
    script(tmp_path / "site", USER_SITE, name="sitecustomize.py")
    script(tmp_path, SHOW, name="show.py")
    path = os.pathsep.join([str(BOOT), str(tmp_path / "site")])
    runs = [
        started(tmp_path, "show.py", env=environment(PYTHONPATH=path)),
        started(tmp_path, "show.py", env=environment(PYTHONPATH=path, GRADWATCH="0")),
        started(tmp_path, "show.py", env=environment(PYTHONPATH=path, GRADWATCH="1")),
        started(tmp_path, "-c", "import os; print(os.environ.get('USER_SITE_RAN'))", env=environment(PYTHONPATH=path, GRADWATCH="1")),
    ]
    unset, zero, on, seen = (finished(run) for run in runs)
    for run in (unset, zero, on, seen):
        assert run.returncode == 0 and run.stderr == "", run.stderr
    assert unset.stdout == zero.stdout == "user sitecustomize ran\ngradwatch imported: False\n"
    assert on.stdout == "user sitecustomize ran\ngradwatch imported: True\n"
    assert seen.stdout == "user sitecustomize ran\nyes\n"


def test_gradwatch_run_inside_a_switched_process_watches_once_and_launchers_get_the_switch(tmp_path):
    inner, launched = tmp_path / "inner", tmp_path / "launched"
    script(inner, LOOP)
    script(launched, LOOP)
    runs = [
        # python -m gradwatch.run in a process the switch already watches: one watch, with run's options
        started(inner, "-m", "gradwatch.run", "--summary", "mine.json", "train.py", env=environment(PYTHONPATH=str(BOOT), GRADWATCH="1")),
        # gradwatch run python train.py: `python` is a launcher, run with the switch set
        started(launched, "-m", "gradwatch.cli", "run", "--every-n-steps", "5", sys.executable, "train.py", "--lr", "3", env=environment()),
    ]
    nested, launcher = (finished(run) for run in runs)
    assert nested.returncode == 0, nested.stderr
    assert nested.stderr.count(REPORTED) == 1
    assert sorted(p.name for p in inner.glob("*.json")) == ["mine.json"]

    assert launcher.returncode == 0, launcher.stderr
    assert lines(launcher.stdout, "argv") == ["argv ['--lr', '3']"]
    summary = json.loads((launched / "gradwatch-train.json").read_text())
    assert (summary["steps"], summary["every_n_steps"]) == (40, 5)
    assert launcher.stderr.count(REPORTED) == 1


def test_a_launcher_keeps_its_exit_code_and_an_unknown_command_is_an_error(tmp_path):
    code = "import sys; sys.exit(7)"
    run = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "run", sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 7, run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "run", "no-such-command-xyz"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "no-such-command-xyz" in run.stderr
    run = subprocess.run([sys.executable, "-m", "gradwatch.cli", "run", "--boot-path"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (run.returncode, Path(run.stdout.strip())) == (0, BOOT)


def test_the_switch_environment_puts_the_boot_folder_first_once():
    options = {"summary_path": "/s.json", "every_n_steps": 3, "warn_on": None, "print_report": False}
    env = switch_environment({"PYTHONPATH": os.pathsep.join(["/a", str(BOOT), "/b"])}, options)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(BOOT), "/a", "/b"]
    assert (env["GRADWATCH"], env["GRADWATCH_SUMMARY"], env["GRADWATCH_EVERY_N_STEPS"]) == ("1", "/s.json", "3")
    assert (env["GRADWATCH_WARN_ON"], env["GRADWATCH_PRINT_REPORT"]) == ("none", "False")
    assert switch_environment({})["PYTHONPATH"] == str(BOOT)

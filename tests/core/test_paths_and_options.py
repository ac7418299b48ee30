"""Summary paths checked when the run starts, the atomic write's permissions, and the core's option checks."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

from gradwatch import Session
from gradwatch.checks import check_summary_path
from gradwatch.detectors import VanishingGradients
from gradwatch.options import OptionError
from gradwatch.report import write_atomic
from gradwatch.safety import FaultGuard

from .streams import sample


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_a_directory_summary_path_is_refused_at_construction(tmp_path):
    with pytest.raises(OptionError, match=f"summary_path '{tmp_path}' is a directory; give a file path such as '{tmp_path}/gradwatch.json'"):
        Session(summary_path=tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        Session(summary_path="")  # the current directory


def test_a_folder_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OptionError, match=f"its folder cannot be created, '{blocker}' is a file"):
        Session(summary_path=blocker / "runs" / "gw.json")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc accepts no new files on Linux only")
def test_a_folder_that_cannot_be_written_is_refused():
    with pytest.raises(OptionError, match="summary_path '/proc/gw.json': cannot write in '/proc'"):
        Session(summary_path="/proc/gw.json")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OptionError, match="cannot create folders in"):
            Session(summary_path=folder / "sub" / "gw.json")
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_a_device_is_not_replaced_by_a_summary():
    with pytest.raises(OptionError, match="exists and is not a regular file"):
        Session(summary_path="/dev/null")


def test_a_path_in_a_folder_still_to_create_is_accepted_and_nothing_is_left_behind(tmp_path):
    session = Session(summary_path=tmp_path / "runs" / "today" / "gw.json", autosave_every_n_steps=1, warn_on=None)
    assert list(tmp_path.iterdir()) == [], "the check creates nothing"
    session.observe(sample(0))
    assert (tmp_path / "runs" / "today" / "gw.json").is_file()


def test_the_written_summary_gets_the_usual_permissions(tmp_path, umask):
    target = tmp_path / "gw.json"
    write_atomic(target, "{}")
    assert _mode(target) == 0o644
    umask(0o027)
    fresh = write_atomic(tmp_path / "other.json", "{}")
    assert _mode(fresh) == 0o640
    target.chmod(0o600)
    write_atomic(target, "{}")
    assert _mode(target) == 0o600, "an existing file keeps its permissions"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.json", "other.json"]


def test_atomic_write_refuses_a_directory_before_making_a_temporary_file(tmp_path):
    target = tmp_path / "runs"
    target.mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(target, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and list(target.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_atomic_write_goes_through_a_symbolic_link(tmp_path):
    real = tmp_path / "store" / "gw.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "gw.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["gw.json"]


MONITOR_OPTIONS = [
    ("every_n_steps", 0, "every_n_steps must be an integer >= 1 or None, got 0"),
    ("every_n_steps", 2.0, "every_n_steps must be an integer >= 1 or None, got 2.0"),
    ("every_n_steps", True, "every_n_steps must be an integer >= 1 or None, got True"),
    ("every_n_steps", "20", "every_n_steps must be an integer >= 1 or None, got '20'"),
    ("history_size", 1, "history_size must be an integer >= 2, got 1"),
    ("history_size", None, "history_size must be an integer >= 2, got None"),
    ("autosave_every_n_steps", 0, "autosave_every_n_steps must be an integer >= 1 or None, got 0"),
    ("autosave_every_n_steps", "often", "autosave_every_n_steps must be an integer >= 1 or None, got 'often'"),
    ("warn_on", "fatal", "warn_on must be one of 'info', 'warning', 'critical' or None, got 'fatal'"),
    ("warn_on", 1, "warn_on must be one of 'info', 'warning', 'critical' or None, got 1"),
    ("detectors", "vanishing", "detectors must be a list of gradwatch detectors such as"),
    ("detectors", [VanishingGradients], "got a class; create it: VanishingGradients() among them"),
    ("detectors", [VanishingGradients(), VanishingGradients()], "two detectors of 'vanishing_gradients'"),
    ("detectors", [object()], "got <object object at"),
    ("summary_path", 3, "summary_path must be a file path (str or os.PathLike) or None, got 3"),
]


@pytest.mark.parametrize(
    "name, value, message", MONITOR_OPTIONS, ids=[re.sub(r" at 0x[0-9a-f]+", "", f"{n}={v!r}") for n, v, _ in MONITOR_OPTIONS]
)  # ids alike in every process
def test_session_options_are_checked_with_the_choices_listed(name, value, message):
    with pytest.raises(OptionError) as error:
        Session(**{name: value})
    assert str(error.value).startswith(name) and message in str(error.value) and "\n" not in str(error.value)


def test_valid_edge_values_are_accepted():
    session = Session(every_n_steps=1, history_size=2, autosave_every_n_steps=None, warn_on=None, detectors=[])
    assert session.detectors == () and session.warn_on is None
    assert [d.symptom for d in Session(detectors=(VanishingGradients(),)).detectors] == ["vanishing_gradients"]


@pytest.mark.parametrize("value", [1, "yes", None])
def test_strict_must_be_a_bool(value):
    with pytest.raises(OptionError, match=f"strict must be True or False, got {value!r}"):
        FaultGuard(strict=value)


def test_option_errors_are_both_value_and_type_errors():
    with pytest.raises(TypeError):
        check_summary_path(3.5)
    with pytest.raises(ValueError):
        check_summary_path(3.5)

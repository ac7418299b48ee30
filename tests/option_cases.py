"""Bad values for the options every adapter shares, and the one-line message each must produce (no framework here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradwatch.detectors import VanishingGradients

SEVERITIES = "'info', 'warning', 'critical' or None"
# (option, bad value, start of the message); "<dir>" and "<file>" stand for a folder and a regular file of the test
# (every adapter takes every option: tests/test_option_signatures.py)
SHARED: list[tuple[str, Any, str]] = [
    ("every_n_steps", 0, "every_n_steps must be an integer >= 1"),
    ("every_n_steps", 2.5, "every_n_steps must be an integer >= 1"),
    ("every_n_steps", "20", "every_n_steps must be an integer >= 1"),
    ("history_size", 1, "history_size must be an integer >= 2, got 1"),
    ("history_size", 64.0, "history_size must be an integer >= 2, got 64.0"),
    ("warn_on", "error", f"warn_on must be one of {SEVERITIES}, got 'error'"),
    ("warn_on", False, f"warn_on must be one of {SEVERITIES}, got False"),
    ("print_report", "no", "print_report must be True or False, got 'no'"),
    ("print_report", None, "print_report must be True or False, got None"),
    ("autosave_every_n_steps", 0, "autosave_every_n_steps must be an integer >= 1 or None, got 0"),
    ("autosave_every_n_steps", 10.0, "autosave_every_n_steps must be an integer >= 1 or None, got 10.0"),
    ("strict", 1, "strict must be True or False, got 1"),
    ("summary_path", "<dir>", "summary_path '<dir>' is a directory; give a file path such as '<dir>/gradwatch.json'"),
    ("summary_path", "<file>/runs/gw.json", "summary_path '<file>/runs/gw.json': its folder cannot be created, '<file>' is a file"),
    ("summary_path", 42, "summary_path must be a file path (str or os.PathLike) or None, got 42"),
    ("detectors", "vanishing", "detectors must be a list of gradwatch detectors such as"),
    ("detectors", [VanishingGradients], "detectors must be a list of gradwatch detectors such as"),
    ("detectors", [VanishingGradients(), VanishingGradients()], "detectors holds two detectors of 'vanishing_gradients'"),
    ("log_layers", "yes", "log_layers must be True or False, got 'yes'"),
    ("every_n_steps", -3, "every_n_steps must be an integer >= 1 or None, got -3"),
]
STOP_SEVERITIES = "'warning', 'critical' or None"
STOP_ON: list[tuple[str, Any, str]] = [
    ("stop_on", "fatal", f"stop_on must be one of {STOP_SEVERITIES}, got 'fatal'"),
    ("stop_on", True, f"stop_on must be one of {STOP_SEVERITIES}, got True"),
    ("stop_on", "info", f"stop_on must be one of {STOP_SEVERITIES}, got 'info'"),  # an info finding is no reason to stop
]


def case_id(case: tuple[str, Any, str]) -> str:
    name, value, _ = case
    return f"{name}={value!r}"[:40]


def concrete(value: Any, message: str, tmp_path: Path) -> tuple[Any, str]:
    """Fill in the folder and file placeholders with real paths under ``tmp_path``."""
    (tmp_path / "a-file").write_text("x")
    places = {"<dir>": str(tmp_path), "<file>": str(tmp_path / "a-file")}
    for placeholder, real in places.items():
        message = message.replace(placeholder, real)
        if isinstance(value, str):
            value = value.replace(placeholder, real)
    return value, message

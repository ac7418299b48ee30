"""Checks of user-given values (options, detector thresholds), shared by the core and every adapter.

Each check returns the value (normalised) or raises ``OptionError`` with one
line saying what was given and what is allowed, at construction time, before
any training time is spent.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast, get_args

from .report import SEVERITY_RANK, Severity, StopSeverity


class OptionError(ValueError, TypeError):
    """An option of the wrong type or out of range; both ``except ValueError`` and ``except TypeError`` catch it."""


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (a count of steps or samples)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {show(value)}")
    return value


def check_optional_count(name: str, value: Any, *, minimum: int = 1) -> int | None:
    """An integer >= ``minimum``, or None (off, or a default chosen later)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise OptionError(f"{name} must be an integer >= {minimum} or None, got {show(value)}")
    return value


def check_positive(name: str, value: Any) -> float:
    """A finite number above zero (a threshold)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise OptionError(f"{name} must be a finite number > 0, got {show(value)}")
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """A share strictly between 0 and 1."""
    check_positive(name, value)
    if value >= 1:
        raise OptionError(f"{name} must be a share between 0 and 1 (exclusive), got {show(value)}")
    return float(value)


def check_flag(name: str, value: Any) -> bool:
    """True or False (not a truthy stand-in such as 1 or "yes")."""
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {show(value)}")
    return value


def check_severity(name: str, value: Any, *, allowed: Sequence[str] = tuple(SEVERITY_RANK)) -> Severity | None:
    """One of the ``allowed`` severities, or None (off)."""
    if value is not None and (not isinstance(value, str) or value not in allowed):
        choices = ", ".join(repr(s) for s in allowed)
        raise OptionError(f"{name} must be one of {choices} or None, got {show(value)}")
    return cast("Severity | None", value)


def check_stop_on(value: Any) -> StopSeverity | None:
    """``stop_on``: ``"warning"``, ``"critical"`` or None (an ``info`` finding is no reason to stop)."""
    return cast("StopSeverity | None", check_severity("stop_on", value, allowed=get_args(StopSeverity)))


def check_summary_path(value: Any, name: str = "summary_path") -> Path | None:
    """A file path whose folder exists and is writable, or can be created; None (no summary) too.

    Nothing is left behind: where the folder does not exist yet, a probe file
    is created and removed in its nearest existing ancestor.
    """
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(f"{name} must be a file path (str or os.PathLike) or None, got {show(value)}")
    try:
        path = Path(value)
    except TypeError:  # an os.PathLike that gives bytes
        raise OptionError(f"{name} must be a file path (str or os.PathLike) or None, got {show(value)}") from None
    if path.is_dir():
        raise OptionError(f"{name} {str(path)!r} is a directory; give a file path such as {str(path / 'gradwatch.json')!r}")
    if path.exists() and not path.is_file():
        raise OptionError(f"{name} {str(path)!r} exists and is not a regular file; give a path for a JSON file")
    folder = path.absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise OptionError(f"{name} {str(path)!r}: its folder cannot be created, {str(existing)!r} is a file")
    try:
        handle, probe = tempfile.mkstemp(prefix=".gradwatch-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        what = "write in" if existing == folder else "create folders in"
        raise OptionError(f"{name} {str(path)!r}: cannot {what} {str(existing)!r} ({exc.strerror or exc})") from None
    return path


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

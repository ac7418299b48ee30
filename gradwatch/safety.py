"""Fault isolation: gradwatch must never be the reason a training run dies."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from .checks import check_flag

logger = logging.getLogger("gradwatch")
logger.addHandler(logging.NullHandler())  # a library logs only where the user configured logging
T = TypeVar("T")
# Frames of these packages are skipped so a warning points at the user's own line.
_INTERNAL = (
    *("gradwatch", "integrations", "torch", "lightning", "pytorch_lightning", "keras", "tensorflow", "jax", "contextlib"),
    *("transformers", "accelerate"),
)


class GradWatchWarning(UserWarning):
    """Category of every warning gradwatch raises (findings and its own faults)."""


def warn(message: str) -> None:
    """Emit ``message`` as a ``GradWatchWarning`` pointing at user code, and on the ``gradwatch`` logger."""
    logger.warning(message)
    warnings.warn(message, GradWatchWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """How many frames up the first caller outside gradwatch and the frameworks sits."""
    frame: FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] in _INTERNAL:
        frame, level = frame.f_back, level + 1
    return level


class FaultGuard:
    """Runs gradwatch's own code so that an error disables only the failing part.

    Each part (a hook, a detector, the writer) fails at most once: the error is
    reported as one warning and the part is switched off. With ``strict=True``
    errors propagate instead, for debugging gradwatch itself.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = check_flag("strict", strict)
        self.failed: dict[str, str] = {}

    def enabled(self, part: str) -> bool:
        return part not in self.failed

    def run(self, part: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Call ``fn(*args, **kwargs)`` unless ``part`` failed before; report and swallow its errors."""
        if part in self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.fail(part, exc)
            return None

    def fail(self, part: str, exc: Exception) -> None:
        """Switch ``part`` off after ``exc`` with one warning (re-raised when strict): for hot paths that
        catch errors themselves rather than pay for ``run``'s call."""
        if self.strict:
            raise exc
        self.failed[part] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"  # one line
        warn(f"gradwatch: {part} failed and is now disabled ({self.failed[part]}); training continues")

"""Fault isolation: gradwatch must never be the reason a training run dies."""

from __future__ import annotations

import logging
import warnings
from typing import Callable, TypeVar

logger = logging.getLogger("gradwatch")
T = TypeVar("T")


class GradWatchWarning(UserWarning):
    """Category of every warning gradwatch raises (findings and its own faults)."""


def warn(message: str, *, stacklevel: int = 3) -> None:
    """Emit ``message`` as a ``GradWatchWarning`` and on the ``gradwatch`` logger."""
    logger.warning(message)
    warnings.warn(message, GradWatchWarning, stacklevel=stacklevel)


class FaultGuard:
    """Runs gradwatch's own code so that an error disables only the failing part.

    Each part (a hook, a detector, the writer) fails at most once: the error is
    reported as one warning and the part is switched off. With ``strict=True``
    errors propagate instead, for debugging gradwatch itself.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.failed: dict[str, str] = {}

    def enabled(self, part: str) -> bool:
        return part not in self.failed

    def run(self, part: str, fn: Callable[..., T], *args: object, default: T | None = None) -> T | None:
        """Call ``fn(*args)`` unless ``part`` has failed before; swallow and report its errors."""
        if part in self.failed:
            return default
        try:
            return fn(*args)
        except Exception as exc:
            if self.strict:
                raise
            self.failed[part] = f"{type(exc).__name__}: {exc}"
            warn(f"gradwatch: {part} failed and is now disabled ({self.failed[part]}); training continues")
            return default

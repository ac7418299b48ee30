"""gradwatch: names what is going wrong inside a training run, where, and what to try.

The core is framework-free (stdlib and numpy); adapters live in
``gradwatch.integrations`` and are imported on demand. The names below are
imported on first use, so ``gradwatch run`` and the ``GRADWATCH=1`` switch
start a script without loading the core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .facts import LayerFacts, ModelFacts
    from .report import Finding, Remedy, Report, load_summary
    from .safety import GradWatchWarning
    from .session import Session
    from .stats import ActivationStats, LayerStats, SequenceStats, StepStats
    from .summary_check import SCHEMA, SummaryError

    SYMPTOMS: tuple[str, ...]
    MISTAKES: tuple[str, ...]

__version__ = "0.1.0"

# Each public name and the module that defines it.
_HOMES = {
    "LayerFacts": "facts",
    "ModelFacts": "facts",
    "Finding": "report",
    "Remedy": "report",
    "Report": "report",
    "load_summary": "report",
    "GradWatchWarning": "safety",
    "Session": "session",
    "ActivationStats": "stats",
    "LayerStats": "stats",
    "SequenceStats": "stats",
    "StepStats": "stats",
    "SCHEMA": "summary_check",
    "SummaryError": "summary_check",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (``SYMPTOMS``: the symptom ids, ``MISTAKES``: the mistakes' ids)."""
    if name in ("SYMPTOMS", "MISTAKES"):
        from .symptoms import ids

        value: Any = ids(mistakes=name == "MISTAKES")
    elif name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    else:
        moved = " (Monitor became Session: Session(framework, facts=..., **options) takes the same stream)" if name == "Monitor" else ""
        raise AttributeError(f"module 'gradwatch' has no attribute {name!r}{moved}")
    globals()[name] = value
    return value


__all__ = [
    "MISTAKES",
    "SCHEMA",
    "SYMPTOMS",
    "ActivationStats",
    "Finding",
    "GradWatchWarning",
    "LayerFacts",
    "LayerStats",
    "ModelFacts",
    "Remedy",
    "Report",
    "SequenceStats",
    "Session",
    "StepStats",
    "SummaryError",
    "__version__",
    "load_summary",
]

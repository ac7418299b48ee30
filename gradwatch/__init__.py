"""gradwatch: names what is going wrong inside a training run, where, and what to try.

The core is framework-free (stdlib and numpy); adapters live in
``gradwatch.integrations`` and are imported on demand.
"""

from __future__ import annotations

from .facts import LayerFacts, ModelFacts
from .monitor import Monitor
from .report import MISTAKES, SCHEMA, SYMPTOMS, Finding, Remedy, Report, SummaryError, load_summary
from .safety import GradWatchWarning
from .session import Session
from .stats import ActivationStats, LayerStats, SequenceStats, StepStats

__version__ = "0.1.0"

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
    "Monitor",
    "Remedy",
    "Report",
    "SequenceStats",
    "Session",
    "StepStats",
    "SummaryError",
    "__version__",
    "load_summary",
]

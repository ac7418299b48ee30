"""gradwatch: names what is going wrong inside a training run, where, and what to try.

The core is framework-free (stdlib and numpy); adapters live in
``gradwatch.integrations`` and are imported on demand.
"""

from __future__ import annotations

from .facts import LayerFacts, ModelFacts
from .monitor import Monitor
from .report import Finding, Remedy, Report, load_summary
from .safety import GradWatchWarning
from .session import Session
from .stats import ActivationStats, LayerStats, SequenceStats, StepStats
from .summary_check import SCHEMA, SummaryError
from .symptoms import ids

SYMPTOMS = ids(mistakes=False)
"""The ids of the symptoms gradwatch names."""
MISTAKES = ids(mistakes=True)
"""The ids of the mistakes in the training code it names directly."""

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

"""The clinic: labelled training runs, sick and healthy, that gradwatch must diagnose correctly."""

from .case import Case, Outcome, evaluate

__all__ = ["Case", "Outcome", "evaluate"]

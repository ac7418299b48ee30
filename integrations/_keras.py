"""Imports Keras 3 for the adapter, or fails with the exact install line."""

from __future__ import annotations

try:
    import keras
    from keras import ops
except ImportError as exc:  # pragma: no cover - exercised only without keras
    raise ImportError('gradwatch\'s Keras adapter needs Keras 3: pip install "gradwatch[tensorflow]" (or "gradwatch[keras]" plus a backend)') from exc

if not keras.__version__.startswith("3."):  # pragma: no cover
    raise ImportError(f"gradwatch's Keras adapter needs Keras 3, found {keras.__version__}: pip install 'keras>=3'")

__all__ = ["keras", "ops"]

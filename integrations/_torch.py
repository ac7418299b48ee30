"""Imports PyTorch for the adapters, or fails with the exact install line."""

from __future__ import annotations

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError('gradwatch\'s PyTorch adapter needs PyTorch: pip install "gradwatch[torch]"') from exc

__all__ = ["torch"]

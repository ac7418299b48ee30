"""Imports PyTorch for the adapters, or fails with the exact install line."""

from __future__ import annotations

try:
    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError('gradwatch\'s PyTorch adapter needs PyTorch: pip install "gradwatch[torch]"') from exc

__all__ = ["register_optimizer_step_pre_hook", "torch"]

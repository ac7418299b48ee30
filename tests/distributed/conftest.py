"""Distributed tests need torch with torch.distributed and the gloo backend; without them they are not collected."""

from __future__ import annotations

import importlib.util


def _gloo() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


collect_ignore_glob = [] if _gloo() else ["test_*.py"]

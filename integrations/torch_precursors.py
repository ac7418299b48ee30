"""Precursors of a loss spike that only the forward pass of a sampled step shows, for the PyTorch collector.

- the output log-partition: ``logsumexp`` of the model's output logits, mean
  over positions (Wortsman et al. 2023: output logits drift before a
  divergence; z-loss holds the log-partition near 0);
- the attention logits: while a sampled forward runs, a ``TorchFunctionMode``
  sees every ``softmax`` over the last axis of a ``[batch, heads, query, key]``
  (or square ``[batch, query, key]``) tensor and every
  ``scaled_dot_product_attention``, and reduces each to its largest logit and
  its mean row entropy per head (attention logits that grow until attention is
  one-hot come before divergence: Wortsman et al. 2023, Zhai et al. 2023).
  A fused kernel's logits are computed once more for the reduction, on
  sampled steps only.

Everything stays on the device until the sample is packed; unsampled steps
never enter the mode, and a model that names no attention module enters it
once: if its first sampled forward shows no attention call, never again.
"""

from __future__ import annotations

import math
from typing import Any

from torch.overrides import TorchFunctionMode

from ._torch import torch
from .torch_facts import named_modules

F = torch.nn.functional
SOFTMAXES = (torch.softmax, torch.Tensor.softmax, F.softmax)
SDPA = F.scaled_dot_product_attention
MAX_CALLS = 64  # attention calls measured per forward at most (a model that loops more is sampled by its first ones)


class AttentionProbe(TorchFunctionMode):
    """Entered around a sampled training forward: per attention call, the per-head largest logit and mean entropy.

    ``calls`` holds ``(maxima, entropies)`` device vectors (one value per head) in call order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, Any]] = []
        self.entered = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if len(self.calls) < MAX_CALLS:
            try:
                if func in SOFTMAXES:
                    self._softmax(args, kwargs, result)
                elif func is SDPA:
                    self._sdpa(args, kwargs)
            except Exception:  # a call we cannot read is no attention we know: skip it, never fail the forward
                pass
        return result

    @torch.no_grad()
    def _softmax(self, args: Any, kwargs: Any, probs: Any) -> None:
        logits = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(logits, torch.Tensor) or not isinstance(probs, torch.Tensor) or not logits.is_floating_point():
            return
        if dim is None or dim % logits.dim() != logits.dim() - 1 or not _attention_shaped(logits):
            return
        self._record(logits.detach(), probs.detach())

    @torch.no_grad()
    def _sdpa(self, args: Any, kwargs: Any) -> None:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        given = dict(zip(names, args)) | kwargs
        query, key = given.get("query"), given.get("key")
        if not isinstance(query, torch.Tensor) or not isinstance(key, torch.Tensor) or query.dim() != 4 or given.get("enable_gqa"):
            return
        scale = given.get("scale") or 1.0 / math.sqrt(query.shape[-1])
        logits = (query.detach().float() @ key.detach().float().transpose(-2, -1)) * scale
        mask = given.get("attn_mask")
        if given.get("is_causal"):
            rows, cols = logits.shape[-2:]
            logits = logits.masked_fill(~torch.ones(rows, cols, dtype=torch.bool, device=logits.device).tril(), -math.inf)
        elif isinstance(mask, torch.Tensor):
            logits = logits.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else logits + mask.float()
        self._record(logits, torch.softmax(logits, dim=-1))

    def _record(self, logits: torch.Tensor, probs: torch.Tensor) -> None:
        logits, probs = logits.float(), probs.float()
        heads = (0, *range(2, logits.dim())) if logits.dim() == 4 else tuple(range(logits.dim()))
        maxima = logits.amax(dim=heads).reshape(-1)
        plogp = torch.where(probs > 0, probs * probs.clamp_min(1e-30).log(), torch.zeros((), device=probs.device))
        entropy = -plogp.sum(-1)
        entropies = entropy.mean(dim=heads[:-1]).reshape(-1) if logits.dim() == 4 else entropy.mean().reshape(1)
        self.calls.append((maxima, entropies))


def _attention_shaped(logits: torch.Tensor) -> bool:
    """``[batch, heads, query, key]`` with as many queries as keys or one query (decoding), or square ``[batch, query, key]``."""
    if logits.dim() == 4:
        return logits.shape[-2] in (logits.shape[-1], 1) and logits.shape[-1] > 1
    return logits.dim() == 3 and logits.shape[-1] == logits.shape[-2] > 1


def output_logits(output: Any) -> torch.Tensor | None:
    """The logits among a model's outputs: the tensor itself, ``.logits`` (Hugging Face), or a tuple's first tensor."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    logits = getattr(output, "logits", output)
    if isinstance(logits, torch.Tensor) and logits.is_floating_point() and logits.dim() >= 2 and logits.shape[-1] >= 2:
        return logits
    return None


@torch.no_grad()
def log_partition(logits: torch.Tensor) -> torch.Tensor:
    """Mean ``logsumexp`` over the last axis: the output log-partition (a 1-element device tensor)."""
    return torch.logsumexp(logits.detach().float(), dim=-1).mean().reshape(1)


def attention_names(model: torch.nn.Module) -> list[str]:
    """Modules that look like attention (class name holding "Attention" or "Attn"), outermost only, in order."""
    found: list[str] = []
    for name, module in named_modules(model):
        kind = type(module).__name__.lower()
        if name and ("attention" in kind or "attn" in kind) and not any(name.startswith((outer + ".", outer + "[")) for outer in found):
            found.append(name)
    return found


__all__ = ["AttentionProbe", "attention_names", "log_partition", "output_logits"]

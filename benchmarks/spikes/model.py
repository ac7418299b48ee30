"""A tiny character-level GPT-style model whose attention logits and output log-partition can be read each step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model: vocabulary, context, width, depth, heads, and whether queries/keys are layer-normed."""

    vocab: int = 128
    context: int = 64
    width: int = 64
    layers: int = 2
    heads: int = 4
    qk_norm: bool = False


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention written out, so the logits before the softmax can be measured."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"width {config.width} is not a multiple of heads {config.heads}")
        self.heads = config.heads
        self.head_width = config.width // config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.out = nn.Linear(config.width, config.width)
        self.q_norm = nn.LayerNorm(self.head_width) if config.qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_width) if config.qk_norm else None
        mask = torch.ones(config.context, config.context, dtype=torch.bool).tril()
        self.register_buffer("mask", mask, persistent=False)
        self.max_logit = 0.0  # largest attention logit of the latest forward pass (any head)
        self.min_entropy = 0.0  # lowest mean attention entropy over heads (nats) of the latest forward pass
        self.measure = False  # record max_logit in each forward pass
        self.measure_entropy = False  # record min_entropy too (doubles the cost of a step at this size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, length, self.heads, self.head_width)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))  # (batch, heads, length, head_width)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_width)
        mask = self.mask[:length, :length]  # type: ignore[index]
        logits = logits.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.measure:
            self.max_logit = float(logits.detach().amax())
        if self.measure_entropy:
            with torch.no_grad():
                plogp = torch.where(probs > 0, probs * torch.log(probs.clamp_min(1e-30)), torch.zeros_like(probs))
                self.min_entropy = float((-plogp.sum(-1)).mean(dim=(0, 2)).min())
        y = (probs @ v).transpose(1, 2).reshape(batch, length, width)
        out: torch.Tensor = self.out(y)
        return out


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention and a 4x MLP, each on a residual branch."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, 4 * config.width), nn.GELU(), nn.Linear(4 * config.width, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        out: torch.Tensor = x + self.mlp(self.ln_mlp(x))
        return out


class TinyGPT(nn.Module):
    """Token and position embeddings, pre-LN blocks, a final LayerNorm and an untied output layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab, config.width)
        self.position = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_out = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.vocab, bias=False)
        self.apply(_init)
        for block in self.blocks:  # residual outputs scaled down with depth (GPT-2 style)
            assert isinstance(block, Block)
            for last in (block.attn.out, block.mlp[2]):
                assert isinstance(last, nn.Linear)
                nn.init.normal_(last.weight, std=0.02 / math.sqrt(2 * config.layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next character at every position, shape (batch, length, vocab)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token(tokens) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.ln_out(x))
        return logits

    def attention_layers(self) -> list[CausalSelfAttention]:
        return [cast(Block, block).attn for block in self.blocks]

    def measure_attention(self, logits: bool, entropy: bool = False) -> None:
        """Record the largest attention logit (cheap) and the lowest attention entropy in every forward pass."""
        for attn in self.attention_layers():
            attn.measure = logits
            attn.measure_entropy = entropy


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor, z_loss: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Cross-entropy plus ``z_loss`` x mean(logsumexp(logits)^2); returns (total, cross-entropy, mean logsumexp)."""
    flat = logits.reshape(-1, logits.shape[-1])
    cross_entropy = F.cross_entropy(flat, targets.reshape(-1))
    log_partition = torch.logsumexp(flat, dim=-1)
    total = cross_entropy + z_loss * (log_partition**2).mean() if z_loss > 0 else cross_entropy
    return total, cross_entropy, float(log_partition.detach().mean())

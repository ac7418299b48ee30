"""Tiny LightningModules and loaders shared by the Lightning tests and clinic cases."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradwatch.integrations.demo import deep_mlp, teacher_data


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, lr: float = 0.05) -> None:
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def sick(lr: float = 0.05) -> Classifier:
    return Classifier(deep_mlp(nn.Sigmoid, remedied=False), lr)


def healthy(lr: float = 0.05) -> Classifier:
    return Classifier(deep_mlp(nn.ReLU, remedied=True), lr)


def loader(batch_size: int = 64, n: int = 2048) -> DataLoader:
    x, y = teacher_data(n)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


def trainer(**overrides: Any) -> L.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=160,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=20,
    )
    options.update(overrides)
    return L.Trainer(**options)

"""Lightning clinic cases: tiny LightningModules under ``GradWatchCallback``."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradwatch import Report
from gradwatch.demo import deep_mlp, teacher_data
from gradwatch.integrations.lightning import GradWatchCallback

from .case import Case


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


def run(model: L.LightningModule, **trainer_options: Any) -> Report:
    callback = GradWatchCallback(print_report=False, warn_on=None)
    trainer(callbacks=[callback], max_steps=300, **trainer_options).fit(model, loader())
    return callback.report


def dead_after_norm() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    nn.init.constant_(net[2].bias, -6.0)
    return Classifier(net)


CASES = [
    Case("lightning_deep_sigmoid", "lightning", "vanishing_gradients", lambda: run(sick()), "10 Sigmoid layers"),
    Case("lightning_dead_relu", "lightning", "dead_relu", lambda: run(dead_after_norm()), "hidden bias -6"),
    Case("lightning_huge_lr", "lightning", "nonfinite", lambda: run(Classifier(deep_mlp(nn.ReLU, remedied=False), lr=1e4)), "SGD lr 1e4"),
    Case("lightning_relu_bn", "lightning", None, lambda: run(healthy()), "10 layers ReLU+BN+He"),
    Case("lightning_bf16", "lightning", None, lambda: run(healthy(), precision="bf16-mixed"), "trap: bf16-mixed"),
    Case("lightning_accumulate", "lightning", None, lambda: run(healthy(), accumulate_grad_batches=4), "trap: accumulate 4"),
]

"""PyTorch Lightning: one callback.

python examples/lightning_mlp.py --steps 300
"""

import argparse

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradwatch.integrations.lightning import GradWatchCallback

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--summary", default="gradwatch-lightning.json")
args = parser.parse_args()


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(*[m for _ in range(8) for m in (nn.LazyLinear(64), nn.Tanh())], nn.Linear(64, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
x = torch.randn(2048, 16)
y = (x[:, :4].sum(1) > 0).long()
model = Classifier()
model.net(x[:1])  # materialise the lazy layers
trainer = L.Trainer(max_steps=args.steps, log_every_n_steps=20, logger=False, enable_checkpointing=False,
                    callbacks=[GradWatchCallback(summary_path=args.summary)])  # fmt: skip
trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))

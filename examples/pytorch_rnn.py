"""A vanilla RNN that must remember the first of 100 time steps: gradwatch shows the gradient dying out in time.

python examples/pytorch_rnn.py --steps 200
"""

import argparse

import torch
from torch import nn

from gradwatch.integrations.pytorch import watch

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--cell", default="RNN", choices=["RNN", "GRU", "LSTM"])
parser.add_argument("--summary", default="gradwatch-rnn.json")
args = parser.parse_args()

torch.manual_seed(0)
x = torch.randn(2048, 100, 1)
y = (x[:, 0, 0] > 0).long()  # the label is decided by the very first time step


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = getattr(nn, args.cell)(1, 32, batch_first=True)
        self.out = nn.Linear(32, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(inputs)[0][:, -1])


model = Classifier()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
with watch(model, optimizer, summary_path=args.summary) as watcher:
    for _ in range(args.steps):
        batch = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)

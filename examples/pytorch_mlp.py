"""Plain PyTorch: two lines of gradwatch around an ordinary training loop.

python examples/pytorch_mlp.py --steps 300
"""

import argparse

import torch
from torch import nn

from gradwatch.integrations.pytorch import watch

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--summary", default="gradwatch-pytorch.json")
args = parser.parse_args()

torch.manual_seed(0)
x = torch.randn(2048, 16)
y = (x[:, :4].sum(1) > 0).long()
model = nn.Sequential(*[m for _ in range(8) for m in (nn.LazyLinear(64), nn.Sigmoid())], nn.Linear(64, 2))
model(x[:1])  # materialise the lazy layers
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

with watch(model, optimizer, summary_path=args.summary) as watcher:
    for _ in range(args.steps):
        batch = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)

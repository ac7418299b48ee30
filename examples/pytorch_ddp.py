"""Plain PyTorch under torch.distributed: the same two lines of gradwatch on every rank.

    torchrun --standalone --nproc-per-node 2 examples/pytorch_ddp.py --steps 200                   # DDP
    torchrun --standalone --nproc-per-node 2 examples/pytorch_ddp.py --steps 200 --sharding fsdp2  # FSDP2 (fully_shard)

Every rank measures; the statistics are combined across ranks (FSDP2: from each
rank's own shards, never a gathered parameter) and only rank 0 warns, prints
the report and writes the summary.
"""

import argparse
import itertools

import torch
import torch.distributed as dist
from torch import nn

from gradwatch.integrations.pytorch import watch

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--sharding", choices=["ddp", "fsdp2"], default="ddp")
parser.add_argument("--summary", default="gradwatch-ddp.json")
args = parser.parse_args()

torch.set_num_threads(1)
dist.init_process_group("gloo")  # torchrun provides rank, world size and address
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)  # the same data and initial weights on every rank
x = torch.randn(2048, 16)
y = (x[:, :4].sum(1) > 0).long()
widths = [16] + [64] * 8
model = nn.Sequential(*[m for a, b in itertools.pairwise(widths) for m in (nn.Linear(a, b), nn.Sigmoid())], nn.Linear(64, 2))
if args.sharding == "ddp":
    model = nn.parallel.DistributedDataParallel(model)
else:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

with watch(model, optimizer, summary_path=args.summary) as watcher:
    for _ in range(args.steps):
        batch = torch.randint(0, len(x), (64,))[rank::world]  # each rank trains on its share of the batch
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)
dist.barrier()  # rank 0 may still be printing the report: leave together
dist.destroy_process_group()

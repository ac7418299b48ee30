"""``gradwatch run`` on multi-process training: every rank is watched, rank 0 alone reports, the exit code is the launcher's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.torch.test_run import finished, lines, script, started

pytestmark = pytest.mark.distributed

REPORTED = "sampled of 40 steps"

DDP = """
import sys
import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
torch.manual_seed(0)
layers = [nn.Linear(8, 32), nn.Sigmoid()]
for _ in range(8):  # deep sigmoids under plain SGD: the gradients vanish
    layers += [nn.Linear(32, 32), nn.Sigmoid()]
model = nn.parallel.DistributedDataParallel(nn.Sequential(*layers, nn.Linear(32, 1)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
y = x.sum(1, keepdim=True)
for step in range(40):
    loss = nn.functional.mse_loss(model(x[rank::world]), y[rank::world])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
weights = sum(p.double().sum().item() for p in model.parameters())
sys.stdout.write(f"rank {rank} final {loss.item().hex()} {weights.hex()}\\n")  # one write: the ranks share the launcher's stdout
sys.stdout.flush()
dist.destroy_process_group()
"""


def torchrun() -> str:
    return str(Path(sys.executable).with_name("torchrun"))


def test_gradwatch_run_torchrun_watches_every_rank_and_rank_zero_alone_reports(tmp_path):
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    script(plain, DDP)
    script(watched, DDP)
    launcher = [torchrun(), "--standalone", "--nproc-per-node", "2", "train.py"]
    runs = [
        started(plain, *launcher),  # python .../torchrun: the launcher is a Python script
        started(watched, "-m", "gradwatch.cli", "run", *launcher),
    ]
    alone, run = (finished(r) for r in runs)
    assert alone.returncode == 0, alone.stderr
    assert run.returncode == 0, run.stderr
    assert sorted(lines(run.stdout, "rank")) == sorted(lines(alone.stdout, "rank")), "the training is the same on every rank"
    assert run.stderr.count(REPORTED) == 1, "one report, from rank 0"
    assert sorted(p.name for p in watched.glob("*.json")) == ["gradwatch-train.json"]
    summary = json.loads((watched / "gradwatch-train.json").read_text())
    assert (summary["framework"], summary["steps"]) == ("pytorch", 40)
    assert "vanishing_gradients" in {f["symptom"] for f in summary["findings"]}


LIGHTNING_DDP = """
import sys
import torch
from torch import nn
import lightning.pytorch as pl


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=40, enable_progress_bar=False, logger=False,
        enable_checkpointing=False, enable_model_summary=False,
    )
    model = Tiny()
    trainer.fit(model, data)
    weights = sum(p.double().sum().item() for p in model.parameters())
    sys.stdout.write(f"rank {trainer.global_rank} weights {weights.hex()}\\n")  # one write: the ranks share the parent's stdout
    sys.stdout.flush()
    sys.exit(4)
"""


def test_lightnings_own_spawning_is_watched_on_every_rank_once_and_reported_once(tmp_path):
    script(tmp_path, LIGHTNING_DDP, name="fit.py")
    run = finished(started(tmp_path, "-m", "gradwatch.cli", "run", "fit.py"))
    assert run.returncode == 4, run.stderr
    assert sorted(line.split()[0:2] for line in lines(run.stdout, "rank")) == [["rank", "0"], ["rank", "1"]]
    assert len({line.split()[-1] for line in lines(run.stdout, "rank")}) == 1, "DDP keeps the ranks' weights equal"
    assert run.stderr.count("gradwatch · ") == 1, "one report, from rank 0"
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["gradwatch-fit.json"]
    summary = json.loads((tmp_path / "gradwatch-fit.json").read_text())
    assert (summary["framework"], summary["steps"]) == ("lightning", 40)

"""``gradwatch run`` on an unmodified Lightning script: its Trainer gets the callback, the torch hooks stay out of the way."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
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


torch.manual_seed(0)
x = torch.randn(256, 8)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)
trainer = pl.Trainer(max_steps=30, enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False)
trainer.fit(Tiny(), data)
sys.exit(4)
"""


def test_a_lightning_script_gets_a_summary_from_its_trainer(tmp_path):
    (tmp_path / "fit.py").write_text(SCRIPT, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "gradwatch.cli", "run", "fit.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 4, run.stderr
    summary = json.loads((tmp_path / "gradwatch-fit.json").read_text())
    assert (summary["framework"], summary["steps"]) == ("lightning", 30)
    assert run.stderr.count("gradwatch · ") == 1  # one report: the callback's, not also the torch hooks'
    assert sorted(p.name for p in tmp_path.glob("gradwatch-*.json")) == ["gradwatch-fit.json"]

"""Mistakes in a LightningModule named as such: manual optimisation that never clears the gradients."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.clinic.lightning_cases import loader, trainer
from gradwatch.integrations.lightning import GradWatchCallback


class Manual(L.LightningModule):
    """Manual optimisation as Lightning's docs show it, with or without ``opt.zero_grad()``."""

    def __init__(self, *, clears: bool) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.clears = clears
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        optimizer = self.optimizers()
        loss = F.cross_entropy(self.net(x), y)
        if self.clears:
            optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize("clears", [False, True])
def test_manual_optimisation_without_zero_grad_is_named_with_the_lightning_fix(clears):
    callback = GradWatchCallback(print_report=False, warn_on=None)
    trainer(callbacks=[callback], max_steps=60).fit(Manual(clears=clears), loader())
    found = callback.report.finding("gradients_not_cleared")
    if clears:
        assert found is None and callback.report.healthy
    else:
        assert found is not None and callback.report.findings[0] is found
        assert "opt.zero_grad() in training_step before self.manual_backward(loss)" in found.remedies[0].why


class Classifier(L.LightningModule):
    """Automatic optimisation; ``softmax``: the network ends in nn.Softmax under F.cross_entropy (the mistake)."""

    def __init__(self, *, softmax: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3), *([nn.Softmax(dim=1)] if softmax else []))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize("softmax", [True, False])
def test_a_softmax_before_cross_entropy_is_read_from_the_loss_before_lightning_detaches_it(softmax):
    callback = GradWatchCallback(print_report=False, warn_on=None)
    trainer(callbacks=[callback], max_steps=20).fit(Classifier(softmax=softmax), loader())
    found = callback.report.finding("output_loss_mismatch")
    assert (found is not None and "softmax" in found.message) if softmax else found is None


def test_every_steps_gradient_norm_reaches_the_samples_before_lightnings_clipping(monkeypatch):  # type: ignore[no-untyped-def]
    from gradwatch.session import Session

    seen = []
    observe = Session.observe
    monkeypatch.setattr(Session, "observe", lambda self, stats: seen.append(stats) or observe(self, stats))
    callback = GradWatchCallback(print_report=False, warn_on=None, every_n_steps=10)
    trainer(callbacks=[callback], max_steps=30, gradient_clip_val=1e-3).fit(Classifier(softmax=False), loader())
    assert [s.step for s in seen] == [0, 1, 2, 4, 8, 10, 20]
    covered = [len(s.step_grad_norms) for s in seen]
    assert covered == [1, 1, 1, 2, 4, 2, 10], covered  # every optimizer step since the previous sample, this one last
    assert min(n for s in seen for n in s.step_grad_norms) > 1e-2  # read before the clipping to 1e-3

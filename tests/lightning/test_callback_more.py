"""Lightning callback: DDP, stop_on, loggers, manual optimization, the pytorch_lightning flavour."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.clinic.lightning_cases import healthy, loader, trainer
from gradwatch import GradWatchWarning
from gradwatch.integrations.lightning import GradWatchCallback


class SplitReLU(L.LightningModule):
    """Identity layer then ReLU on positive data; rank 0 negates its inputs, so all its units are dead."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.layer, self.act, self.head = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(4))
            self.layer.bias.zero_()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = -x if self.global_rank == 0 else x  # rank 0: every pre-activation negative
        return F.cross_entropy(self.head(self.act(self.layer(x))), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        callback = next(c for c in self.trainer.callbacks if isinstance(c, GradWatchCallback))
        path = callback.session.summary_path if callback.session.main else None
        Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(None if path is None else str(path)))


@pytest.mark.flaky(reruns=2, only_rerun=["SIGABRT"])  # gloo on this CPU machine sometimes aborts a rank at exit (also before gradwatch's changes)
def test_ddp_spawn_combines_activation_statistics_and_writes_one_summary(tmp_path):
    data = DataLoader(TensorDataset(torch.ones(64, 4), torch.zeros(64, dtype=torch.long)), batch_size=8)
    model = SplitReLU(str(tmp_path))
    callback = GradWatchCallback(summary_path=tmp_path / "gw.json", print_report=False, every_n_steps=1)
    run = trainer(callbacks=[callback], strategy="ddp_spawn", devices=2, max_steps=3, use_distributed_sampler=True)
    run.fit(model, data)
    summary = json.loads((tmp_path / "gw.json").read_text())
    dead = next(layer for layer in summary["layers"] if layer["name"] == "act")["history"]["dead_share"]
    assert dead == [0.5, 0.5, 0.5], "rank 0 sees 100% dead units, rank 1 none: the combined share is the mean"
    writers = {json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")}
    assert writers == {str(tmp_path / "gw.json"), None}, "only rank 0 owns the summary"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == ["gw.json", "rank0.json", "rank1.json"]


def test_scalars_reach_every_logger(tmp_path):
    logger = L.loggers.CSVLogger(tmp_path, name="run")
    trainer(callbacks=[GradWatchCallback(print_report=False, log_layers=True)], logger=logger, max_steps=45).fit(healthy(), loader())
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    logged = [r for r in rows if r.get("gradwatch/grad_norm")]
    assert [int(r["step"]) for r in logged] == [1, 2, 3, 5, 9, 17, 21, 41]
    assert float(logged[0]["gradwatch/grad_norm"]) > 0 and "gradwatch/grad_norm/net.0" in rows[0]


class TwoOptimizers(L.LightningModule):
    """Manual optimization with one optimizer per sub-network (the GAN pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3)), nn.Linear(16, 3)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        for optimizer, net in zip(self.optimizers(), (self.a, self.b)):
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.a.parameters(), 1e-3), torch.optim.SGD(self.b.parameters(), 0.1)]


def test_manual_optimization_with_two_optimizers():
    callback = GradWatchCallback(print_report=False, strict=True)
    trainer(callbacks=[callback], max_steps=60).fit(TwoOptimizers(), loader())
    names = {layer["name"] for layer in callback.report.layers}
    assert {"a[0]", "a[2]", "b"} <= names and callback.report.healthy


class RecordedTwoOptimizers(TwoOptimizers):
    """``TwoOptimizers`` that records, per batch and network, the gradient norm its optimizer stepped with and the update."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, tuple[float, float]]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        seen = {}
        for optimizer, net, name in zip(self.optimizers(), (self.a, self.b), ("a", "b")):
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            params = list(net.parameters()) if name == "b" else list(net[0].parameters())
            grad = float(torch.cat([p.grad.flatten() for p in params]).norm())
            before = [p.detach().clone() for p in params]
            optimizer.step()
            seen[name] = (grad, float(torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)]).norm()))
        self.seen.append(seen)
        return loss


def test_manual_optimization_with_two_optimizers_measures_each_networks_own_step():
    """Each optimizer's parameters are read before its own step: no stale gradients, no zero updates."""
    module = RecordedTwoOptimizers()
    callback = GradWatchCallback(print_report=False, strict=True, every_n_steps=1, warn_on=None)
    trainer(callbacks=[callback], max_steps=12).fit(module, loader())
    layers = {layer["name"]: layer["history"] for layer in callback.report.layers}
    assert layers["b"]["step"] == [0, 2, 4, 6, 8, 10], "a batch is labelled with the step it started at"
    for name, layer in (("a", "a[0]"), ("b", "b")):
        assert layers[layer]["grad_norm"] == pytest.approx([seen[name][0] for seen in module.seen], rel=1e-4)
        assert layers[layer]["update_norm"] == pytest.approx([seen[name][1] for seen in module.seen], rel=1e-3)


class AlternatingOptimizers(TwoOptimizers):
    """The second network steps on every other batch only (a discriminator trained half as often)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        for optimizer, net in list(zip(self.optimizers(), (self.a, self.b)))[: 2 if batch_idx % 2 == 0 else 1]:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss


def test_an_optimizer_that_does_not_step_leaves_its_layers_unmeasured_not_zero():
    callback = GradWatchCallback(print_report=False, strict=True, every_n_steps=1, warn_on=None)
    trainer(callbacks=[callback], max_steps=9).fit(AlternatingOptimizers(), loader())
    b = next(layer["history"] for layer in callback.report.layers if layer["name"] == "b")
    assert b["step"] == [0, 2, 3, 5, 6, 8]  # a batch of two steps, then one of one, ...
    assert [u is not None for u in b["update_norm"]] == [True, False] * 3, "no update is not a zero update"
    assert all(w > 0.1 for w in b["weight_norm"]), "the weight norm of a layer that did not step is still measured"


def test_pytorch_lightning_trainer_accepts_the_same_callback():
    pl = pytest.importorskip("pytorch_lightning")

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    callback = GradWatchCallback(print_report=False)
    options = dict(accelerator="cpu", devices=1, max_steps=30, logger=False, enable_checkpointing=False)
    pl.Trainer(callbacks=[callback], enable_progress_bar=False, enable_model_summary=False, **options).fit(Module(), loader())
    assert callback.report.steps == 30 and callback.report.framework == "lightning"


def _raise(*args, **kwargs):
    raise RuntimeError("injected fault")


FAULTS = {
    "pytorch collector": ("gradwatch.integrations.torch_stats.TorchCollector", "capture_gradients"),
    "activation hook": ("gradwatch.integrations.torch_probes.ForwardProbes", "_hold"),
    "lightning logging": ("gradwatch.integrations.lightning", "_log"),
    "detector vanishing_gradients": ("gradwatch.detectors.vanishing.VanishingGradients", "observe"),
    "JSON writer": ("gradwatch.report.Report", "write_json"),
    "console report": ("gradwatch.console", "build"),
}


@pytest.mark.parametrize("part", FAULTS)
def test_fault_in_each_part_warns_once_and_the_fit_finishes(monkeypatch, tmp_path, part):
    target, name = FAULTS[part]
    monkeypatch.setattr(f"{target}.{name}", _raise)
    logger = L.loggers.CSVLogger(tmp_path, name="run")
    callback = GradWatchCallback(summary_path=tmp_path / "gw.json")
    with pytest.warns(GradWatchWarning) as caught:
        run = trainer(callbacks=[callback], logger=logger, max_steps=45)
        run.fit(healthy(), loader())
    faults = [str(w.message) for w in caught if "failed and is now disabled" in str(w.message)]
    assert faults == [f"gradwatch: {part} failed and is now disabled (RuntimeError: injected fault); training continues"]
    assert run.global_step == 45 and callback.report.steps == 45

"""Training functions run on each spawned rank (module level, so spawn can import them)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.clinic.torch_cases import HIDDEN, he, mlp
from gradwatch import GradWatchWarning
from gradwatch.demo import deep_mlp, teacher_data
from gradwatch.detectors.vanishing import VanishingGradients
from gradwatch.integrations.pytorch import watch
from gradwatch.integrations.torch_facts import local
from gradwatch.integrations.torch_stats import TorchCollector

BATCH = 64  # global batch; each of the ranks trains on its share of it


def build(name: str) -> nn.Module:
    if name == "sick":
        return deep_mlp(nn.Sigmoid, remedied=False)
    model = mlp(HIDDEN, init=he)
    if name == "dead":
        nn.init.constant_(model[2].bias, -6.0)  # the second hidden layer never fires
        for i, module in enumerate(model):  # a ReLU applied functionally: units are judged by gradient rows
            if isinstance(module, nn.ReLU):
                model[i] = FunctionalReLU()
    return model


class FunctionalReLU(nn.Module):
    """``F.relu`` in a module gradwatch does not recognise, as in code that calls it inside ``forward``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


def wrap(model: nn.Module, how: str) -> nn.Module:
    if how == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    if how == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, nn.Linear):
                fully_shard(module)
        fully_shard(model)
    return model


def fit(
    rank: int,
    world_size: int,
    *,
    model: str = "sick",
    how: str = "ddp",
    steps: int = 60,
    summary: str | None = None,
    fault: str | None = None,
    fault_rank: int = 1,
    stop_on: str | None = None,
    late_init: bool = False,
    clip: float | None = None,
) -> dict[str, Any]:
    """Train ``model`` wrapped ``how`` under ``watch()``; what this rank saw, said and wrote.

    ``late_init``: create the process group only after ``watch()`` (from the torchrun variables). ``clip``:
    clip the global gradient norm at this before each optimizer step.
    """
    torch.set_num_threads(1)
    net = wrap(build(model), how)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    if fault is not None and rank == fault_rank:
        _inject(fault)
    x, y = teacher_data(512)
    err = io.StringIO()
    steps_run = 0
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        summary = summary.format(rank=rank) if summary else None
        watcher = watch(net, optimizer, summary_path=summary, every_n_steps=10)
        watcher.session.stop_on = stop_on
        if late_init:
            torch.distributed.init_process_group("gloo")
        collector = watcher.cycle.collector
        sizes = [(local(p).numel(), p.numel()) for p in collector.params]
        step_grads: list[tuple[float, ...]] = []  # each sample's per-step total gradient norms
        observe = watcher.session.observe
        watcher.session.observe = lambda stats: step_grads.append(stats.step_grad_norms) or observe(stats)  # type: ignore[method-assign]
        for i in range(steps):
            start = (i * BATCH) % (len(x) - BATCH)
            batch = torch.arange(start, start + BATCH)[rank::world_size]
            loss = F.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            watcher.step(loss)
            steps_run += 1
            if watcher.session.stop_requested:
                break
        report = watcher.close()
    return {
        "findings": {f.symptom: f.severity for f in report.findings},
        "notes": report.notes,
        "layers": report.layers,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, GradWatchWarning)],
        "printed": err.getvalue(),
        "wrote": summary is not None and Path(summary).exists(),
        "steps_run": steps_run,
        "sizes": sizes,
        "step_grads": step_grads,
    }


def _inject(part: str) -> None:
    """Make one of the collector's methods (or the vanishing detector) fail from its second call on (this rank only)."""
    owner = VanishingGradients if part == "observe" else TorchCollector
    original = getattr(owner, part)
    calls = [0]

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] >= 2:
            raise RuntimeError(f"injected fault in {part}")
        return original(self, *args, **kwargs)

    setattr(owner, part, failing)


def lightning_fit(rank: int, world_size: int, *, model: str = "sick", steps: int = 40, summary: str | None = None) -> dict[str, Any]:
    """A Lightning fit under ``ModelParallelStrategy`` (FSDP2 ``fully_shard`` in ``configure_model``)."""
    import lightning.pytorch as L
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.distributed.fsdp import fully_shard

    from benchmarks.clinic.lightning_cases import Classifier, loader
    from gradwatch.integrations.lightning import GradWatchCallback

    class Sharded(Classifier):
        def configure_model(self) -> None:
            mesh = self.device_mesh["data_parallel"]
            for module in self.net.modules():
                if isinstance(module, nn.Linear):
                    fully_shard(module, mesh=mesh)
            fully_shard(self.net, mesh=mesh)

    module = Sharded(build(model))
    callback = GradWatchCallback(summary_path=summary.format(rank=rank) if summary else None, print_report=False)
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        trainer = L.Trainer(
            accelerator="cpu",
            devices=world_size,
            strategy=ModelParallelStrategy(data_parallel_size=world_size, tensor_parallel_size=1),
            max_steps=steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=10,
            callbacks=[callback],
        )
        trainer.fit(module, loader(batch_size=64, n=1024))
    report = callback.report
    assert report is not None
    return {
        "findings": {f.symptom: f.severity for f in report.findings},
        "notes": report.notes,
        "layers": report.layers,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, GradWatchWarning)],
        "wrote": summary is not None and Path(summary.format(rank=rank)).exists(),
        "sharded": sum(k > 1 for k in callback.cycle.collector.shards),
    }


def trainer_fit(rank: int, world_size: int, *, lr: float, steps: int = 20, stop_on: str | None = None) -> dict[str, Any]:
    """A Hugging Face Trainer run on a tiny GPT-2 with ``GradWatchCallback``; accelerate sets up DDP (gloo)."""
    import tempfile

    from gradwatch.integrations.transformers import GradWatchCallback
    from tests.transformers.test_callback import train

    callback = GradWatchCallback(print_report=True, every_n_steps=2, stop_on=stop_on)
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err), tempfile.TemporaryDirectory() as out:
        warnings.simplefilter("always")
        trainer, report = train(Path(out), callback, lr=lr, max_grad_norm=0.0, steps=steps, logging_steps=5, optim="sgd")
    return {
        "findings": {f.symptom: f.severity for f in report.findings},
        "notes": report.notes,
        "layers": report.layers,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, GradWatchWarning)],
        "printed": "gradwatch" in err.getvalue(),
        "world_size": trainer.args.world_size,
        "global_step": trainer.state.global_step,
        "logged": [entry for entry in trainer.state.log_history if "gradwatch/grad_norm" in entry],
    }

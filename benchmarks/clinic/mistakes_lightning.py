"""Lightning programs of the mistakes clinic (``lightning.pytorch``), under ``GradWatchCallback`` or the oracle.

Each program is ``program(make_callback)``: it builds its LightningModule, the digits loader and a
Trainer whose callbacks are ``[make_callback(probe)]``; under gradwatch that is ``GradWatchCallback``,
under the oracle a callback that runs ``mistakes_oracle.Recorder`` inside the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .mistakes_oracle import MistakeCase, Probe, Recorder, build_cases
from .mistakes_torch import digits, mlp

MakeCallback = Callable[[Probe], L.Callback]
Program = Callable[[MakeCallback], None]
MANUAL = "https://lightning.ai/docs/pytorch/stable/model/manual_optimization.html"
OPTIMIZERS = "https://lightning.ai/docs/pytorch/stable/common/lightning_module.html#configure-optimizers"
PRECISION = "https://lightning.ai/docs/pytorch/stable/common/precision_basic.html (precision='64-true')"


def fit(module: L.LightningModule, callback: L.Callback, *, epochs: int = 8, **options: Any) -> None:
    """Train ``module`` on the digits (batch 64, shuffled) for ``epochs`` epochs on one CPU device."""
    x, y, _, _ = digits()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(
        callbacks=[callback],
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=20,
        **options,
    )
    trainer.fit(module, loader)


def probe() -> Probe:
    _, _, px, py = digits()
    return Probe(px, py)


# -- manual optimisation (Lightning docs): training_step with or without opt.zero_grad() -----------------


class ManualClassifier(L.LightningModule):
    """``automatic_optimization = False``: the step calls the optimizer itself; ``clear=False`` forgets zero_grad."""

    def __init__(self, clear: bool) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.clear = mlp(64, 64, 64, 10), clear

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        assert isinstance(opt, L.core.optimizer.LightningOptimizer)
        x, y = batch
        if self.clear:
            opt.zero_grad()
        loss = F.cross_entropy(self.net(x), y)
        self.manual_backward(loss)
        opt.step()
        return loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def manual(make_callback: MakeCallback, *, clear: bool = True) -> None:
    torch.manual_seed(0)
    fit(ManualClassifier(clear), make_callback(probe()))


# -- configure_optimizers: which parameters, which scheduler interval ------------------------------------


class Classifier(L.LightningModule):
    """An encoder and a classifier head; ``optimize`` = ``all`` or ``encoder`` (the head forgotten);
    ``interval``: StepLR(step_size=5, gamma=0.1) per ``epoch`` or per ``step``, or None (no scheduler);
    ``softmax``: the head ends in nn.Softmax, under F.cross_entropy all the same."""

    def __init__(self, optimize: str = "all", interval: str | None = None, softmax: bool = False) -> None:
        super().__init__()
        self.encoder = mlp(64, 64, 64)
        self.act = nn.ReLU()
        self.classifier = nn.Sequential(nn.Linear(64, 10), *([nn.Softmax(dim=1)] if softmax else []))
        self.optimize, self.interval = optimize, interval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.act(self.encoder(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        params = self.encoder.parameters() if self.optimize == "encoder" else self.parameters()
        optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        if self.interval is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


def classifier(make_callback: MakeCallback, *, epochs: int = 8, precision: str | None = None, **options: Any) -> None:
    torch.manual_seed(0)
    extra = {"precision": precision} if precision else {}
    fit(Classifier(**options), make_callback(probe()), epochs=epochs, **extra)


PROGRAMS: dict[str, Program] = {
    "lt_manual_zero_grad_forgotten": partial(manual, clear=False),
    "lt_manual_zero_grad": manual,
    "lt_head_not_in_optimizer": partial(classifier, optimize="encoder"),
    "lt_all_params_in_optimizer": classifier,
    "lt_steplr_interval_step": partial(classifier, interval="step", epochs=10),
    "lt_steplr_interval_epoch": partial(classifier, interval="epoch", epochs=10),
    "lt_float64": partial(classifier, precision="64-true"),
    "lt_softmax_into_ce": partial(classifier, softmax=True),
    "lt_logits_into_ce": classifier,
}


# -- running them -----------------------------------------------------------------------------------------


def gradwatch_run(program: Program) -> Callable[[], Any]:
    """``run`` for a Lightning program: ``GradWatchCallback`` (quiet) and its report."""

    def run() -> Any:
        from gradwatch.integrations.lightning import GradWatchCallback

        torch.set_num_threads(1)
        callbacks: list[Any] = []

        def make(probe: Probe) -> L.Callback:
            callbacks.append(GradWatchCallback(print_report=False, warn_on=None))
            return callbacks[-1]

        program(make)
        return callbacks[0].report

    return run


class OracleCallback(L.Callback):
    """Runs ``Recorder`` inside the fit: hooks from ``on_fit_start``, the loss at every ``on_train_batch_end``."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.recorder: Recorder | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recorder = Recorder(pl_module, trainer.optimizers[0], self.probe)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self.recorder is not None
        self.recorder.step(outputs["loss"] if isinstance(outputs, dict) else outputs)


def oracle(program: Program) -> dict[str, Any]:
    torch.set_num_threads(1)
    callbacks: list[OracleCallback] = []

    def make(probe: Probe) -> L.Callback:
        callbacks.append(OracleCallback(probe))
        return callbacks[-1]

    program(make)
    recorder = callbacks[0].recorder
    assert recorder is not None
    recorder.close()
    return recorder.numbers()


# name -> (mistake, topic, words (None: the topic's), about, source, twin)
# fmt: off
LABELS: dict[str, tuple[str | None, str, tuple[str, ...] | None, str, str, str | None]] = {
    "lt_manual_zero_grad_forgotten": ("gradients_not_cleared", "gradients_not_cleared", None, "manual optimisation: manual_backward and opt.step(), never opt.zero_grad()", MANUAL, "lt_manual_zero_grad"),
    "lt_manual_zero_grad": (None, "gradients_not_cleared", None, "manual optimisation: opt.zero_grad(), manual_backward, opt.step()", MANUAL, "lt_manual_zero_grad_forgotten"),
    "lt_head_not_in_optimizer": ("params_not_in_optimizer", "params_not_in_optimizer", None, "configure_optimizers over self.encoder.parameters(): the classifier head is left out", OPTIMIZERS, "lt_all_params_in_optimizer"),
    "lt_all_params_in_optimizer": (None, "params_not_in_optimizer", None, "configure_optimizers over self.parameters()", OPTIMIZERS, "lt_head_not_in_optimizer"),
    "lt_softmax_into_ce": ("output_loss_mismatch", "output_loss_mismatch", ("softmax",), "the head ends in nn.Softmax(dim=1), then F.cross_entropy in training_step", "https://lightning.ai/docs/pytorch/stable/starter/introduction.html (a LightningModule whose training_step computes the loss)", "lt_logits_into_ce"),
    "lt_logits_into_ce": (None, "output_loss_mismatch", None, "raw logits into F.cross_entropy in training_step", "https://lightning.ai/docs/pytorch/stable/starter/introduction.html", "lt_softmax_into_ce"),
    "lt_steplr_interval_step": ("lr_schedule_collapse", "lr_schedule_collapse", None, "StepLR(step_size=5, gamma=0.1) with interval='step' where 'epoch' was meant", OPTIMIZERS, "lt_steplr_interval_epoch"),
    "lt_steplr_interval_epoch": (None, "lr_schedule_collapse", None, "StepLR(step_size=5, gamma=0.1) with interval='epoch'", OPTIMIZERS, "lt_steplr_interval_step"),
    "lt_float64": (None, "precision", None, "Trainer(precision='64-true'), otherwise lt_all_params_in_optimizer", PRECISION, None),
}
# fmt: on
SLOW: set[str] = set()  # all under 1 s

# fmt: off
ORACLE: dict[str, dict[str, Any]] = {
    'lt_manual_zero_grad_forgotten': {'steps': 192, 'loss0': 2.31, 'loss_end': 3.37, 'chance': 2.3, 'metric_end': 0.104, 'stale_share': 0.995, 'backwards_per_step': 1.0, 'grad_growth': 71.3, 'loss_max/loss0': 3.6},
    'lt_manual_zero_grad': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.467, 'chance': 2.3, 'metric_end': 0.781, 'stale_share': 0.0, 'backwards_per_step': 1.0, 'grad_growth': 3.77, 'loss_max/loss0': 1.0},
    'lt_head_not_in_optimizer': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.109, 'chance': 2.3, 'metric_end': 0.899, 'orphan_share': 0.0725, 'orphan_moved': 0.0},
    'lt_all_params_in_optimizer': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.0276, 'chance': 2.3, 'metric_end': 0.899, 'orphan_share': 0.0, 'orphan_moved': 0.0},
    'lt_steplr_interval_step': {'steps': 240, 'loss0': 2.31, 'loss_end': 2.27, 'chance': 2.3, 'metric_end': 0.165, 'lr_end/lr0': 1e-47, 'lr_low_share': 0.917, 'lr_returns': 0},
    'lt_steplr_interval_epoch': {'steps': 240, 'loss0': 2.31, 'loss_end': 0.028, 'chance': 2.3, 'metric_end': 0.939, 'lr_end/lr0': 0.1, 'lr_low_share': 0.0, 'lr_returns': 0},
    'lt_float64': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.0276, 'chance': 2.3, 'metric_end': 0.899, 'dtype': 'float64', 'loss_end/loss0': 0.0119},
    'lt_softmax_into_ce': {'steps': 192, 'loss0': 2.3, 'loss_end': 1.63, 'chance': 2.3, 'metric_end': 0.828, 'out_kind': 'probs', 'expects': 'logits'},
    'lt_logits_into_ce': {'steps': 192, 'loss0': 2.31, 'loss_end': 0.0276, 'chance': 2.3, 'metric_end': 0.899, 'out_kind': 'logits', 'expects': 'logits'},
}
# fmt: on


CASES: list[MistakeCase] = build_cases(
    "lightning", LABELS, ORACLE, SLOW, lambda name: (gradwatch_run(PROGRAMS[name]), partial(oracle, PROGRAMS[name]))
)

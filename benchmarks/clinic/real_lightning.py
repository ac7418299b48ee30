"""Real public Lightning 2.x programs (``lightning.pytorch``), ported small, healthy and with faults.

Each program is ``program(make_callback)``: it builds its LightningModule, data and Trainer and passes
``make_callback(probe)`` into ``Trainer(callbacks=[...])``; under gradwatch that is
``GradWatchCallback``, under the oracle (``real_oracle``) a callback that records and probes the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradwatch import Report
from gradwatch.integrations.lightning import GradWatchCallback

from .case import Case
from .real_oracle import OracleRecorder, Probe, summarise
from .real_torch import mnist, split

MakeCallback = Callable[[Probe], L.Callback]
Program = Callable[[MakeCallback], None]


def trainer(callback: L.Callback, **options: Any) -> L.Trainer:
    return L.Trainer(
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def gradwatch_run(program: Program) -> Callable[[], Report]:
    """``Case.run`` for a Lightning program: ``GradWatchCallback`` and its report."""

    def run() -> Report:
        torch.set_num_threads(1)
        callbacks: list[GradWatchCallback] = []

        def make(probe: Probe) -> L.Callback:
            callbacks.append(GradWatchCallback(print_report=False, warn_on=None))
            return callbacks[-1]

        program(make)
        return callbacks[0].report

    return run


class OracleCallback(L.Callback):
    """Runs ``real_oracle``'s recorder inside the Trainer: loss every step, probes at 11 points."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.recorder: OracleRecorder | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recorder = OracleRecorder(pl_module, self.probe)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        assert self.recorder is not None
        self.recorder.step(outputs["loss"] if isinstance(outputs, dict) else outputs)


def oracle_of(program: Program, reference_loss: float | None = None) -> dict[str, Any]:
    callbacks: list[OracleCallback] = []

    def make(probe: Probe) -> L.Callback:
        callbacks.append(OracleCallback(probe))
        return callbacks[-1]

    program(make)
    recorder = callbacks[0].recorder
    assert recorder is not None
    recorder.close()
    return summarise(recorder, reference_loss)


# -- Lightning README / quick start: LitAutoEncoder ----------------------------------------------------


class LitAutoEncoder(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.view(x.size(0), -1)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        x = x.view(x.size(0), -1)
        return F.mse_loss(self.decoder(self.encoder(x)), x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def autoencoder(make_callback: MakeCallback, *, lr: float = 1e-3, max_steps: int = 250) -> None:
    torch.manual_seed(0)
    x, y, px, _ = split(*mnist(8512))
    model = LitAutoEncoder(lr)
    probe = Probe(px, px.flatten(1), F.mse_loss, max_steps, classify=False)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    trainer(make_callback(probe), max_steps=max_steps).fit(model, loader)


# -- Lightning-AI/tutorials lightning_examples/mnist-hello-world: LitMNIST -----------------------------


class LitMNIST(L.LightningModule):
    def __init__(
        self,
        hidden: int = 64,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        bias: float | None = None,
    ) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, 10),
        )  # fmt: skip
        if bias is not None:  # fault: a large negative bias in front of the second ReLU
            second = self.model[4]
            assert isinstance(second, nn.Linear)
            nn.init.constant_(second.bias, bias)
        self.lr, self.weight_decay = lr, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.model(x), dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.nll_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def mnist_hello(make_callback: MakeCallback, *, max_steps: int = 375, **options: Any) -> None:
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(8512))
    x, px = (x - 0.1307) / 0.3081, (px - 0.1307) / 0.3081
    model = LitMNIST(**options)
    probe = Probe(px, py, F.nll_loss, max_steps)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    trainer(make_callback(probe), max_steps=max_steps).fit(model, loader)


PROGRAMS: dict[str, Program] = {
    "rl_autoencoder": autoencoder,
    "rl_autoencoder_short": partial(autoencoder, max_steps=20),
    "rl_autoencoder_lr_div1e4": partial(autoencoder, lr=1e-7),
    "rl_mnist_hello": mnist_hello,
    "rl_mnist_hello_bias_neg": partial(mnist_hello, bias=-10.0),
    "rl_mnist_hello_wd": partial(mnist_hello, weight_decay=10.0),
    "rl_mnist_hello_lr_x1000_short": partial(mnist_hello, lr=0.2, max_steps=25),
}

TWINS: dict[str, str] = {}

README = "Lightning-AI/pytorch-lightning README.md (LitAutoEncoder)"
HELLO = "Lightning-AI/tutorials lightning_examples/mnist-hello-world/hello-world.py (LitMNIST)"

# (expected, allowed, about, source); the oracle's numbers are in ORACLE below.
LABELS: dict[str, tuple[str | None, tuple[str, ...], str, str]] = {
    "rl_autoencoder": (None, (), "784-64-3-64-784 autoencoder, Adam 1e-3, MSE", README),
    "rl_autoencoder_short": (None, (), "the same, a 20-step run", README),
    "rl_autoencoder_lr_div1e4": (
        "early_stagnation",
        (),
        "fault: Adam lr / 1e4",
        README,
    ),
    "rl_mnist_hello": (
        None,
        (),
        "784-64-64-10 ReLU + dropout, log_softmax + NLL, Adam 2e-4",
        HELLO,
    ),
    "rl_mnist_hello_bias_neg": (
        "dead_relu",
        ("early_stagnation",),
        "fault: bias -10 before the second ReLU",
        HELLO,
    ),
    "rl_mnist_hello_wd": (
        "early_stagnation",
        ("weight_collapse",),
        "fault: Adam weight_decay=10 (weights down to 27% of init, loss frozen)",
        HELLO,
    ),
    "rl_mnist_hello_lr_x1000_short": (
        "exploding_gradients",
        ("dead_relu", "early_stagnation"),
        "fault: Adam lr x1000 (0.2); a 25-step run",
        HELLO,
    ),
}

# fmt: off
ORACLE: dict[str, dict[str, object]] = {
    'rl_autoencoder': {'steps': 250, 'loss0': 0.157, 'loss20': 0.0713, 'loss_end': 0.0542, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 0.432, 'ratio_end': 0.429, 'w_end/w0': 1.04, 'dead_max_end': 0.438, 'train_loss_max/first': 1.06, 'label': 'healthy', 'also': ''},
    'rl_autoencoder_short': {'steps': 20, 'loss0': 0.157, 'loss20': 0.141, 'loss_end': 0.102, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 0.22, 'ratio_end': 0.262, 'w_end/w0': 1.0, 'dead_max_end': 0.375, 'train_loss_max/first': 1.06, 'label': 'healthy', 'also': ''},
    'rl_autoencoder_lr_div1e4': {'steps': 250, 'loss0': 0.157, 'loss20': 0.157, 'loss_end': 0.156, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.03, 'ratio_end': 1.02, 'w_end/w0': 1.0, 'dead_max_end': 0.328, 'train_loss_max/first': 1.2, 'label': 'early_stagnation', 'also': ''},
    'rl_mnist_hello': {'steps': 375, 'loss0': 2.33, 'loss20': 1.33, 'loss_end': 0.314, 'first_nonfinite': None, 'grad_growth': 1.9, 'ratio_med': 0.857, 'ratio_end': 0.857, 'w_end/w0': 1.17, 'dead_max_end': 0.0469, 'acc0': 0.0352, 'acc_end': 0.906, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rl_mnist_hello_bias_neg': {'steps': 375, 'loss0': 2.31, 'loss20': 2.31, 'loss_end': 2.31, 'first_nonfinite': None, 'grad_growth': math.nan, 'ratio_med': math.nan, 'ratio_end': math.nan, 'w_end/w0': 1.0, 'dead_max_end': 1.0, 'acc0': 0.0781, 'acc_end': 0.0781, 'train_loss_max/first': 1.0, 'label': 'dead_relu', 'also': 'early_stagnation'},
    'rl_mnist_hello_wd': {'steps': 375, 'loss0': 2.33, 'loss20': 2.31, 'loss_end': 2.3, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 16.7, 'ratio_end': 20.9, 'w_end/w0': 0.269, 'dead_max_end': 0.25, 'acc0': 0.0352, 'acc_end': 0.0781, 'train_loss_max/first': 1.01, 'label': 'early_stagnation', 'also': ''},
    'rl_mnist_hello_lr_x1000_short': {'steps': 25, 'loss0': 2.33, 'loss20': 53.9, 'loss_end': 3.53, 'first_nonfinite': None, 'grad_growth': 584.0, 'ratio_med': 0.759, 'ratio_end': 2.39, 'w_end/w0': 37.3, 'dead_max_end': 0.938, 'acc0': 0.0352, 'acc_end': 0.18, 'train_loss_max/first': 159.0, 'label': 'exploding_gradients', 'also': 'dead_relu,early_stagnation'},
}
# fmt: on


def _case(name: str) -> Case:
    expected, allowed, about, source = LABELS[name]
    return Case(
        name,
        "lightning",
        expected,
        gradwatch_run(PROGRAMS[name]),
        about,
        allowed,
        source,
        ORACLE.get(name, {}),
    )


CASES: list[Case] = [_case(name) for name in PROGRAMS if name in LABELS]

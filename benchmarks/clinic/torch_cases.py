"""Plain PyTorch clinic cases: small real models on generated data or sklearn's digits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradwatch import Report
from gradwatch.demo import deep_mlp, teacher_data
from gradwatch.integrations.pytorch import watch

from .case import Case

STEPS = 300
BATCH = 64


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8×8 handwritten digits (ships with sklearn, no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    steps: int = STEPS,
    schedule: Callable[[int], float] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    seed: int = 0,
) -> Report:
    """A plain training loop under ``watch``; ``schedule(step)`` multiplies the base learning rate."""
    x, y = data if data is not None else teacher_data(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule else None
    watcher = watch(model, optimizer, print_report=False, warn_on=None)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (BATCH,), generator=gen)
        loss = loss_fn(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)
        if scheduler:
            scheduler.step()
    return watcher.close()


def mlp(
    widths: list[int],
    activation: Callable[[], nn.Module] = nn.ReLU,
    *,
    init: Callable[[nn.Linear], None] | None = None,
    seed: int = 0,
    dropout: float = 0.0,
) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        linear = nn.Linear(fan_in, fan_out)
        if init:
            init(linear)
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def he(linear: nn.Linear) -> None:
    nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    nn.init.zeros_(linear.bias)


def sgd(model: nn.Module, lr: float, **kwargs: float) -> torch.optim.SGD:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, **kwargs)


HIDDEN = [16] + [64] * 6 + [3]


# -- sick: each one a Setup, so a remedy trial can rebuild it from factories ---------------------------------


@dataclass(frozen=True)
class Setup:
    """A clinic run as factories: a fresh model, an optimizer for its parameters, the data, loss and steps."""

    make_model: Callable[[], nn.Module]
    make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    data: Callable[[], tuple[torch.Tensor, torch.Tensor]] = teacher_data
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    steps: int = STEPS

    def run(self) -> Report:
        model = self.make_model()
        optimizer = self.make_optimizer(p for p in model.parameters() if p.requires_grad)
        return fit(model, optimizer, self.data(), steps=self.steps, loss_fn=self.loss_fn)

    def batches(self, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batches ``fit`` draws, in the same order."""
        x, y = self.data()
        gen = torch.Generator().manual_seed(seed)
        return [(x[i], y[i]) for i in (torch.randint(0, len(x), (BATCH,), generator=gen) for _ in range(self.steps))]


def sgd_for(lr: float, **kwargs: float) -> Callable[[Iterable[nn.Parameter]], torch.optim.SGD]:
    return lambda params: torch.optim.SGD(params, lr=lr, **kwargs)


def dead_bias_mlp() -> nn.Sequential:
    model = mlp(HIDDEN, init=he)
    nn.init.constant_(model[2].bias, -6.0)  # second hidden layer never fires
    return model


class FunctionalReLUNet(nn.Module):
    """Uses F.relu, so no activation module can be hooked: dead units show as zero gradient rows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.out = nn.Linear(16, 64), nn.Linear(64, 64), nn.Linear(64, 3)
        nn.init.constant_(self.fc2.bias, -6.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


def big_init_mlp() -> nn.Sequential:
    def big(linear: nn.Linear) -> None:
        nn.init.normal_(linear.weight, std=3.0 * math.sqrt(2.0 / linear.in_features))

    return mlp(HIDDEN, init=big)


def regression_targets() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = teacher_data()
    return x, y.float()[:, None] * 10


SICK: dict[str, Setup] = {
    "deep_sigmoid_mlp": Setup(lambda: deep_mlp(nn.Sigmoid, remedied=False), sgd_for(0.05, momentum=0.9)),
    "deep_sigmoid_digits": Setup(lambda: mlp([64] + [64] * 8 + [10], nn.Sigmoid), sgd_for(0.1, momentum=0.9), digits),
    "dead_relu_bias": Setup(dead_bias_mlp, sgd_for(0.05, momentum=0.9)),
    "dead_relu_functional": Setup(FunctionalReLUNet, sgd_for(0.05, momentum=0.9)),
    "exploding_init": Setup(big_init_mlp, sgd_for(0.01)),
    "huge_lr_nan": Setup(lambda: mlp([16, 64, 64, 1], init=he), sgd_for(5.0), regression_targets, F.mse_loss),
    "heavy_l2": Setup(lambda: mlp(HIDDEN, init=he), sgd_for(0.1, weight_decay=1.0)),
    "tiny_lr": Setup(lambda: mlp(HIDDEN, init=he), sgd_for(1e-7)),
}


# -- healthy and traps ---------------------------------------------------------------------------


def relu_batchnorm() -> Report:
    model = deep_mlp(nn.ReLU, remedied=True)
    return fit(model, sgd(model, 0.05, momentum=0.9))


def shallow_sigmoid() -> Report:
    model = mlp([16, 32, 3], nn.Sigmoid)
    return fit(model, sgd(model, 0.5, momentum=0.9))


def warmup() -> Report:
    model = mlp(HIDDEN, init=he)
    return fit(model, sgd(model, 0.05, momentum=0.9), schedule=lambda s: min(1.0, (s + 1) / 100) * 1e-3 if s < 10 else min(1.0, (s + 1) / 100))


def adamw_decay() -> Report:
    model = mlp(HIDDEN, init=he)
    return fit(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05))


def frozen_bottom() -> Report:
    model = mlp(HIDDEN, init=he)
    for layer in list(model)[:6]:
        layer.requires_grad_(False)
    return fit(model, sgd(model, 0.05, momentum=0.9))


def cnn_digits() -> Report:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )  # fmt: skip
    return fit(model, torch.optim.Adam(model.parameters(), lr=3e-3), digits())


def dropout_mlp() -> Report:
    model = mlp(HIDDEN, init=he, dropout=0.3)
    return fit(model, torch.optim.Adam(model.parameters(), lr=1e-3))


def cosine_to_zero() -> Report:
    model = mlp(HIDDEN, init=he)
    return fit(model, sgd(model, 0.05, momentum=0.9), schedule=lambda s: 0.5 * (1 + math.cos(math.pi * s / STEPS)))


def late_plateau() -> Report:
    model = mlp([64, 64, 10], init=he)
    return fit(model, torch.optim.Adam(model.parameters(), lr=1e-2), digits(), steps=600)


def few_dead_units() -> Report:
    model = mlp(HIDDEN, init=he)
    with torch.no_grad():
        model[2].bias[:12] = -6.0  # 12 of 64 units (19%) dead from the start
    return fit(model, sgd(model, 0.05, momentum=0.9))


def first_step_task(steps: int, n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Long-range task: a noise sequence whose label is the sign of its first time step."""
    x = torch.randn(n, steps, 1, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0, 0] > 0).long()


class Recurrent(nn.Module):
    def __init__(self, cell: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = getattr(nn, cell)(1, 32, batch_first=True)
        self.out = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0][:, -1])


def recurrent_setup(cell: str, steps: int) -> Setup:
    return Setup(lambda: Recurrent(cell), lambda params: torch.optim.Adam(params, lr=1e-3), lambda: first_step_task(steps), steps=120)


def recurrent(cell: str, steps: int) -> Callable[[], Report]:
    return recurrent_setup(cell, steps).run


SICK["rnn_first_step_T100"] = recurrent_setup("RNN", 100)


class Residual(nn.Module):
    """Eight residual blocks x + f(x) around ReLU layers: deep, but the skip path keeps gradients alive."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.out = nn.Linear(16, 64), nn.Linear(64, 3)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)) for _ in range(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return self.out(torch.relu(x))


def residual_mlp() -> Report:
    model = Residual()
    return fit(model, torch.optim.Adam(model.parameters(), lr=1e-3))


CASES = [
    Case("deep_sigmoid_mlp", "pytorch", "vanishing_gradients", SICK["deep_sigmoid_mlp"].run, "10 Sigmoid layers, SGD"),
    Case("deep_sigmoid_digits", "pytorch", "vanishing_gradients", SICK["deep_sigmoid_digits"].run, "8 Sigmoid layers on digits"),
    Case("dead_relu_bias", "pytorch", "dead_relu", SICK["dead_relu_bias"].run, "hidden bias -6 behind nn.ReLU"),
    Case("dead_relu_functional", "pytorch", "dead_relu", SICK["dead_relu_functional"].run, "bias -6 behind F.relu"),
    Case("exploding_init", "pytorch", "exploding_gradients", SICK["exploding_init"].run, "ReLU MLP, init 3x He"),
    Case("huge_lr_nan", "pytorch", "nonfinite", SICK["huge_lr_nan"].run, "regression, SGD lr 5"),
    Case("heavy_l2", "pytorch", "weight_collapse", SICK["heavy_l2"].run, "SGD weight_decay 1.0"),
    Case("tiny_lr", "pytorch", "early_stagnation", SICK["tiny_lr"].run, "SGD lr 1e-7"),
    Case("relu_batchnorm", "pytorch", None, relu_batchnorm, "10 layers ReLU+BN+He"),
    Case("shallow_sigmoid", "pytorch", None, shallow_sigmoid, "trap: 1 hidden Sigmoid layer"),
    Case("lr_warmup", "pytorch", None, warmup, "trap: tiny LR for 10 steps, linear warmup to 100"),
    Case("adamw_decay", "pytorch", None, adamw_decay, "trap: AdamW weight_decay 0.05"),
    Case("frozen_bottom", "pytorch", None, frozen_bottom, "trap: bottom 3 layers frozen"),
    Case("cnn_digits", "pytorch", None, cnn_digits, "2-conv CNN on digits, Adam"),
    Case("dropout_mlp", "pytorch", None, dropout_mlp, "trap: dropout 0.3"),
    Case("cosine_to_zero", "pytorch", None, cosine_to_zero, "trap: cosine LR decay to 0"),
    Case("late_plateau", "pytorch", None, late_plateau, "trap: converges, then flat for 400 steps"),
    Case("few_dead_units", "pytorch", None, few_dead_units, "trap: 19% of one layer dead"),
    Case("rnn_first_step_T100", "pytorch", "vanishing_gradients", recurrent("RNN", 100), "vanilla RNN, label = first of 100 steps"),
    Case("gru_first_step_T10", "pytorch", None, recurrent("GRU", 10), "GRU, label = first of 10 steps"),
    Case("lstm_first_step_T10", "pytorch", None, recurrent("LSTM", 10), "LSTM, label = first of 10 steps"),
    Case("residual_mlp", "pytorch", None, residual_mlp, "18 layers with skip connections, Adam"),
]

"""Real public PyTorch programs, ported small, healthy and with faults from bug studies.

Each program is written once as ``program(attach)`` (see ``real_oracle``): the same code runs under
gradwatch (``Case.run``) and under the independent oracle that labelled it. Sources are cited per case;
the ports are our own shrunk rewrites (MNIST test digits or sklearn data, narrower layers, fewer steps).
"""

from __future__ import annotations

import functools
import gzip
import itertools
import math
import operator
import sysconfig
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gradwatch import Report
from gradwatch.integrations.pytorch import watch

from .case import Case
from .real_oracle import Attach, Probe

# The 10,000 MNIST test digits (LeCun, Cortes and Burges; CC BY-SA 3.0), as published in idx format.
DATA = Path(__file__).resolve().parent / "data"
Program = Callable[[Attach], None]


def gradwatch_run(program: Program) -> Callable[[], Report]:
    """``Case.run`` for a program: attach gradwatch's ``watch`` and return its report."""

    def run() -> Report:
        torch.set_num_threads(1)
        watchers: list[Any] = []

        def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, probe: Probe) -> Any:
            watchers.append(watch(model, optimizer, print_report=False, warn_on=None))
            return watchers[-1]

        program(attach)
        return watchers[0].close()

    return run


# -- data ------------------------------------------------------------------------------------------


def mnist(n: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` MNIST test digits [n, 1, 28, 28] in [0, 1], with labels (shipped in ``data/``)."""
    images = np.frombuffer(gzip.decompress((DATA / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    labels = np.frombuffer(gzip.decompress((DATA / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    x = torch.tensor(images.reshape(-1, 1, 28, 28)[:n], dtype=torch.float32) / 255.0
    return x, torch.tensor(labels[:n], dtype=torch.long)


def split(x: torch.Tensor, y: torch.Tensor, n_probe: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train rows and a held-out probe batch (the last ``n_probe`` rows)."""
    return x[:-n_probe], y[:-n_probe], x[-n_probe:], y[-n_probe:]


def char_text() -> str:
    """An English text that ships with Python (its LICENSE.txt), reduced to lowercase letters and spaces as d2l does."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    raw = path.read_text() if path.exists() else " ".join(["the zen of python beautiful is better than ugly"] * 300)
    return " ".join("".join(c if c.isalpha() else " " for c in raw.lower()).split())


def char_corpus() -> tuple[torch.Tensor, int]:
    text = char_text()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text]), len(vocab)


def random_windows(corpus: torch.Tensor, batch: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(corpus) - length - 1, (batch,), generator=gen)
    x = torch.stack([corpus[s : s + length] for s in starts.tolist()])
    y = torch.stack([corpus[s + 1 : s + length + 1] for s in starts.tolist()])
    return x, y


# -- pytorch/tutorials: quickstart ------------------------------------------------------------------


class QuickstartNet(nn.Module):
    """Flatten -> Linear -> ReLU -> Linear -> ReLU -> Linear (512 wide in the tutorial, 128 here)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = [
            nn.Linear(784, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        ]
        self.linear_relu_stack = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


def quickstart(
    attach: Attach,
    *,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    epochs: int = 5,
    max_steps: int | None = None,
) -> None:
    """The tutorial's lr 1e-3 is 1e-2 here, to fit its 5 x 938 steps of learning into 5 x 125."""
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(8512))
    model = QuickstartNet()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    batch = 64
    steps = max_steps or epochs * math.ceil(len(x) / batch)
    inst = attach(model, optimizer, Probe(px, py, loss_fn, steps))
    for step in range(steps):
        i = step * batch % len(x)  # the tutorial's DataLoader does not shuffle
        loss = loss_fn(model(x[i : i + batch]), y[i : i + batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        inst.step(loss)


# -- pytorch/tutorials: nn_tutorial (hand-written SGD, no torch.optim) -------------------------------


class MnistLogistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return self.lin(xb)


def nn_tutorial(attach: Attach, *, lr: float = 0.5, epochs: int = 2) -> None:
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(8512))
    x, px = x.flatten(1), px.flatten(1)
    model = MnistLogistic()
    batch = 64
    steps = epochs * math.ceil(len(x) / batch)
    inst = attach(model, None, Probe(px, py, F.cross_entropy, steps))
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    assert p.grad is not None
                    p -= p.grad * lr  # type: ignore[misc]  # the tutorial's in-place update
                model.zero_grad()
            inst.step(loss)


# -- d2l: linear regression (concise model, hand-written minibatch SGD) with a NaN guard -------------


def d2l_linreg_unscaled(attach: Attach) -> None:
    """Features in the thousands (fault: unscaled inputs); the loop stops itself once the loss is not finite."""
    torch.manual_seed(0)
    true_w, true_b = torch.tensor([2.0, -3.4]), 4.2
    x = torch.normal(0, 1, (1000, 2)) * 1000 + 2000  # e.g. floor area and price in raw units
    y = (x @ true_w + true_b + torch.normal(0, 0.01, (1000,)))[:, None]
    px, py = x[-256:], y[-256:]
    net = nn.Linear(2, 1)
    nn.init.normal_(net.weight, 0, 0.01)
    nn.init.zeros_(net.bias)
    lr, batch, epochs = 0.03, 10, 3
    inst = attach(net, None, Probe(px, py, F.mse_loss, epochs * 100, classify=False))
    for _ in range(epochs):
        order = torch.randperm(1000)
        for i in range(0, 1000, batch):
            rows = order[i : i + batch]
            loss = F.mse_loss(net(x[rows]), y[rows])
            if not torch.isfinite(loss):
                print(f"loss is {loss.item()}, stopping")
                return
            loss.backward()
            with torch.no_grad():
                for p in net.parameters():
                    assert p.grad is not None
                    p -= lr * p.grad  # type: ignore[misc]
                    p.grad.zero_()
            inst.step(loss)


# -- d2l: MLP (concise) and mutations ---------------------------------------------------------------


def d2l_mlp(
    attach: Attach,
    *,
    hidden: tuple[int, ...] = (256,),
    activation: type[nn.Module] = nn.ReLU,
    bias: float = 0.0,
    epochs: int = 10,
) -> None:
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(8512))
    layers: list[nn.Module] = [nn.Flatten()]
    widths = (784, *hidden)
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    net = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.constant_(m.bias, bias if m.out_features != 10 else 0.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    batch = 256
    steps = epochs * math.ceil(len(x) / batch)
    inst = attach(net, optimizer, Probe(px, py, F.cross_entropy, steps))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            rows = order[i : i + batch]
            loss = F.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            inst.step(loss)


# -- pytorch/tutorials: nn_tutorial, the nn.Sequential CNN (ReLU on the 10 pooled outputs) -----------


def nn_tutorial_cnn(attach: Attach, *, lr: float = 0.1, epochs: int = 2) -> None:
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(6000 + 512))
    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    batch = 64
    steps = epochs * math.ceil(len(x) / batch)
    inst = attach(model, optimizer, Probe(px, py, F.cross_entropy, steps))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            rows = order[i : i + batch]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            inst.step(loss)


# -- Lightning-AI/tutorials, UvA DL course 3: BaseNetwork and its initialisations ----------------------


def uva_base_network(attach: Attach, *, init: str = "kaiming", epochs: int = 3) -> None:
    """ReLU MLP (512-256-256-128 in the tutorial, 128-64-64-32 here), normalised inputs, Adam lr 1e-3."""
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(8192 + 512))
    x, px = ((x - 0.1307) / 0.3081).flatten(1), ((px - 0.1307) / 0.3081).flatten(1)
    widths = (784, 128, 64, 64, 32)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if init == "const":  # the tutorial's const_init(model, fill=0.005)
                param.fill_(0.005)
            elif name.endswith(".bias"):
                param.fill_(0.0)
            else:  # the tutorial's kaiming_init: std sqrt(2 / fan_in), sqrt(1 / fan_in) for the first layer
                param.normal_(
                    0,
                    math.sqrt((1.0 if name.startswith("0.") else 2.0) / param.shape[1]),
                )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = 256
    steps = epochs * math.ceil(len(x) / batch)
    inst = attach(model, optimizer, Probe(px, py, F.cross_entropy, steps))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            rows = order[i : i + batch]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            inst.step(loss)


# -- d2l: RNN language model (concise), gradient clipping --------------------------------------------


class RNNModel(nn.Module):
    """d2l's RNNModel: one-hot characters -> nn.RNN/GRU -> Linear over the vocabulary."""

    def __init__(self, vocab: int, hidden: int, cell: type[nn.Module] = nn.RNN) -> None:
        super().__init__()
        self.vocab = vocab
        self.rnn = cell(vocab, hidden)
        self.linear = nn.Linear(hidden, vocab)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.one_hot(inputs.T.long(), self.vocab).float() if inputs.dtype == torch.long else inputs
        out, _ = self.rnn(x)  # time-major, as in d2l
        return self.linear(out.reshape(-1, out.shape[-1]))


def lm_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, y.T.reshape(-1))


def d2l_rnn_lm(
    attach: Attach,
    *,
    lr: float = 1.0,
    clip: float | None = 1.0,
    cell: type[nn.Module] = nn.RNN,
    steps: int = 250,
) -> None:
    torch.manual_seed(0)
    corpus, vocab = char_corpus()
    gen = torch.Generator().manual_seed(0)
    px, py = random_windows(corpus, 256, 35, torch.Generator().manual_seed(1))
    net = RNNModel(vocab, 64, cell)
    updater = torch.optim.SGD(net.parameters(), lr=lr)
    inst = attach(net, updater, Probe(px, py, lm_loss, steps, classify=False))
    for _ in range(steps):
        x, y = random_windows(corpus, 32, 35, gen)
        loss = lm_loss(net(x), y)
        updater.zero_grad()
        loss.backward()
        if clip is not None:  # d2l's grad_clipping: scale all gradients to a global norm <= theta
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            norm = torch.sqrt(functools.reduce(operator.add, [torch.sum(g**2) for g in grads]))
            if norm > clip:
                for g in grads:
                    g[:] *= clip / norm
        updater.step()
        inst.step(loss)


# -- yunjey/pytorch-tutorial: RNN over image rows, with padding ---------------------------------------


class RowRNN(nn.Module):
    def __init__(self, cell: type[nn.Module], hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.rnn = cell(28, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


def row_rnn(
    attach: Attach,
    *,
    cell: type[nn.Module],
    pad: int,
    pad_before: bool,
    epochs: int = 2,
    lr: float = 0.01,
    layers: int = 2,
) -> None:
    """MNIST read row by row (28 steps of 28 pixels) plus ``pad`` zero rows before or after the image."""
    torch.manual_seed(0)
    x, y, px, py = split(*mnist(6000 + 512))
    zeros = torch.zeros(len(x) + len(px), pad, 28)
    rows = torch.cat([x, px]).squeeze(1)
    seq = torch.cat([zeros, rows], 1) if pad_before else torch.cat([rows, zeros], 1)
    x, px = seq[: len(x)], seq[len(x) :]
    model = RowRNN(cell, layers=layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch = 100
    steps = epochs * math.ceil(len(x) / batch)
    probe = Probe(
        px,
        py,
        F.cross_entropy,
        steps,
        time_axis=1,
        informative_from=pad if pad_before else 0,
    )
    inst = attach(model, optimizer, probe)
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            inst.step(loss)


# -- karpathy/ng-video-lecture gpt.py: a tiny character GPT --------------------------------------------


class Head(nn.Module):
    tril: torch.Tensor

    def __init__(self, n_embd: int, head_size: int, block: int) -> None:
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block, block)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        k, q = self.key(x), self.query(x)
        weights = (q @ k.transpose(-2, -1)) * k.shape[-1] ** -0.5
        weights = weights.masked_fill(self.tril[:t, :t] == 0, float("-inf")).softmax(-1)
        return weights @ self.value(x)


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(n_embd, n_embd // n_head, block) for _ in range(n_head))
        self.proj = nn.Linear(n_embd, n_embd)
        self.ffwd = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd))
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.proj(torch.cat([head(h) for head in self.heads], -1))
        return x + self.ffwd(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(
        self,
        vocab: int,
        n_embd: int = 32,
        n_head: int = 4,
        n_layer: int = 2,
        block: int = 32,
    ) -> None:
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab, n_embd)
        self.position_embedding_table = nn.Embedding(block, n_embd)
        self.blocks = nn.Sequential(*(Block(n_embd, n_head, block) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(idx.shape[1]))
        return self.lm_head(self.ln_f(self.blocks(x)))


def gpt_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def tiny_gpt(attach: Attach, *, lr: float = 1e-3, steps: int = 300) -> None:
    torch.manual_seed(0)
    corpus, vocab = char_corpus()
    gen = torch.Generator().manual_seed(0)
    px, py = random_windows(corpus, 256, 32, torch.Generator().manual_seed(1))
    model = TinyGPT(vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    inst = attach(model, optimizer, Probe(px, py, gpt_loss, steps, classify=False))
    for _ in range(steps):
        xb, yb = random_windows(corpus, 16, 32, gen)
        loss = gpt_loss(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- patrickloeber/pytorchTutorial: full-batch logistic and linear regression --------------------------


class LogisticModel(nn.Module):
    def __init__(self, n_features: int, squash: str = "sigmoid") -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        self.squash = squash

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.softmax(z, dim=1) if self.squash == "softmax" else torch.sigmoid(z)


def breast_cancer(attach: Attach, *, scale: bool = True, squash: str = "sigmoid", epochs: int = 100) -> None:
    """Full batch: one optimizer step per epoch on sklearn's breast-cancer data."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    data = load_breast_cancer()
    x_train, x_test, y_train, _ = train_test_split(data.data, data.target, test_size=0.2, random_state=1234)
    if scale:
        scaler = StandardScaler()
        x_train, x_test = scaler.fit_transform(x_train), scaler.transform(x_test)
    x = torch.tensor(x_train, dtype=torch.float32)
    y = torch.tensor(y_train, dtype=torch.float32)[:, None]
    model = LogisticModel(x.shape[1], squash)
    criterion = nn.BCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    inst = attach(model, optimizer, Probe(x, y, criterion, epochs, classify=False))
    for _ in range(epochs):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        inst.step(loss)


def make_regression_line(attach: Attach, *, epochs: int = 20, lr: float = 0.01, sigmoid_output: bool = False, nan_stop: bool = False) -> None:
    """One feature, full batch, nn.Linear under MSE and SGD lr 0.01 (the tutorial runs 100 epochs)."""
    from sklearn.datasets import make_regression

    torch.manual_seed(0)
    x_np, y_np = make_regression(n_samples=100, n_features=1, noise=20, random_state=4)
    x = torch.tensor(x_np, dtype=torch.float32)
    y = torch.tensor(y_np, dtype=torch.float32)[:, None]
    linear = nn.Linear(1, 1)
    model = nn.Sequential(linear, nn.Sigmoid()) if sigmoid_output else linear
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    inst = attach(model, optimizer, Probe(x, y, criterion, epochs, classify=False))
    for epoch in range(epochs):
        loss = criterion(model(x), y)
        if nan_stop and torch.isnan(loss):
            print(f"epoch {epoch}: loss is nan, stopping")
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        inst.step(loss)


# -- discuss.pytorch.org/t/96648 "Neural network could not learn on this type of data, why?" ------------


class CubicNet(nn.Module):
    """fc1 (1 -> 50) -> ReLU -> fc2 (50 -> 1), as in the thread."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(1, 50), nn.ReLU(), nn.Linear(50, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


def forum_cubic(attach: Attach, *, normalise: bool = True, epochs: int = 300) -> None:
    """Fit x**3 for x = 1..3999, full batch, Adam lr 1e-3 under MSE (1000 epochs in the thread)."""
    torch.manual_seed(0)
    x = torch.arange(1, 4000, dtype=torch.float32)[:, None]
    y = x**3
    if normalise:  # the answer's fix: standardise input and target
        x, y = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    model = CubicNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.MSELoss()
    inst = attach(model, optimizer, Probe(x, y, criterion, epochs, classify=False))
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        inst.step(loss)


PROGRAMS: dict[str, Program] = {
    "rt_quickstart": quickstart,
    "rt_quickstart_lr_div1e4": partial(quickstart, lr=1e-6),
    "rt_quickstart_wd": partial(quickstart, weight_decay=1.0),
    "rt_quickstart_lr_x1000_short": partial(quickstart, lr=10.0, max_steps=20),
    "rt_nn_tutorial_manual": nn_tutorial,
    "rt_nn_tutorial_manual_lr_div1e4": partial(nn_tutorial, lr=5e-5),
    "rt_linreg_unscaled_nanstop": d2l_linreg_unscaled,
    "rt_d2l_mlp": d2l_mlp,
    "rt_d2l_mlp_deep_sigmoid": partial(d2l_mlp, hidden=(256, 128, 128, 128, 128, 64, 64, 64), activation=nn.Sigmoid),
    "rt_d2l_mlp_bias_neg": partial(d2l_mlp, bias=-1.0),
    "rt_nn_tutorial_cnn": nn_tutorial_cnn,
    "rt_uva_kaiming": uva_base_network,
    "rt_uva_const_init": partial(uva_base_network, init="const"),
    "rt_d2l_rnn_lm_clip": d2l_rnn_lm,
    "rt_d2l_rnn_lm_noclip_lr100": partial(d2l_rnn_lm, lr=100.0, clip=None),
    "rt_d2l_gru_lm_clip": partial(d2l_rnn_lm, cell=nn.GRU),
    "rt_lstm_prepadded": partial(row_rnn, cell=nn.LSTM, pad=28, pad_before=True),
    "rt_gru_prepadded": partial(row_rnn, cell=nn.GRU, pad=28, pad_before=True),
    "rt_rnn_postpadded": partial(row_rnn, cell=nn.RNN, pad=56, pad_before=False, lr=1e-3),
    "rt_tiny_gpt": tiny_gpt,
    "rt_tiny_gpt_lr_x1000": partial(tiny_gpt, lr=1.0),
    "rt_logreg_fullbatch": breast_cancer,
    "rt_logreg_unscaled": partial(breast_cancer, scale=False),
    "rt_logreg_softmax_one_unit": partial(breast_cancer, squash="softmax"),
    "rt_linreg_fullbatch_short": make_regression_line,
    "rt_linreg_lr_x1000_nanstop": partial(make_regression_line, lr=10.0, nan_stop=True, epochs=100),
    "rt_linreg_sigmoid_output": partial(make_regression_line, sigmoid_output=True, epochs=100),
    "rt_forum_cubic": forum_cubic,
    "rt_forum_cubic_unscaled": partial(forum_cubic, normalise=False),
}

TWINS: dict[str, str] = {"rt_uva_const_init": "rt_uva_kaiming"}  # sick program -> its healthy version

TUTORIALS = "pytorch/tutorials beginner_source/"
D2L = "d2l-ai/d2l-en (PyTorch) "
UVA = "Lightning-AI/tutorials course_UvA-DL/03-initialization-and-optimization/Initialization_and_Optimization.py"
YUNJEY = "yunjey/pytorch-tutorial tutorials/02-intermediate/recurrent_neural_network/main.py"
GPT = "karpathy/ng-video-lecture gpt.py"
LOEBER = "patrickloeber/pytorchTutorial "
FORUM = "discuss.pytorch.org/t/96648 'Neural network could not learn on this type of data, why?'"

# (expected, allowed, about, source); the oracle's numbers are in ORACLE below.
LABELS: dict[str, tuple[str | None, tuple[str, ...], str, str]] = {
    "rt_quickstart": (
        None,
        (),
        "MLP 784-128-128-10, SGD lr 1e-2, unshuffled batches, 625 steps",
        TUTORIALS + "basics/quickstart_tutorial.py",
    ),
    "rt_quickstart_lr_div1e4": (
        "early_stagnation",
        (),
        "fault: lr / 1e4 (1e-6)",
        TUTORIALS + "basics/quickstart_tutorial.py",
    ),
    "rt_quickstart_wd": (
        "weight_collapse",
        ("early_stagnation",),
        "fault: SGD weight_decay=1.0",
        TUTORIALS + "basics/quickstart_tutorial.py",
    ),
    "rt_quickstart_lr_x1000_short": (
        "exploding_gradients",
        ("dead_relu", "early_stagnation"),
        "fault: lr x1000 (10); a 20-step run",
        TUTORIALS + "basics/quickstart_tutorial.py",
    ),
    "rt_nn_tutorial_manual": (
        None,
        (),
        "logistic regression, hand-written p -= lr * p.grad (no torch.optim)",
        TUTORIALS + "nn_tutorial.py",
    ),
    "rt_nn_tutorial_manual_lr_div1e4": (
        "early_stagnation",
        (),
        "hand-written SGD; fault: lr / 1e4",
        TUTORIALS + "nn_tutorial.py",
    ),
    "rt_linreg_unscaled_nanstop": (
        "nonfinite",
        ("exploding_gradients",),
        "hand-written SGD; fault: inputs in the thousands; the loop breaks when the loss is not finite (3 steps)",
        D2L + "chapter_linear-regression/linear-regression-scratch.md",
    ),
    "rt_d2l_mlp": (
        None,
        (),
        "784-256-10 ReLU, N(0, 0.01) init, SGD lr 0.1",
        D2L + "chapter_multilayer-perceptrons/mlp-implementation.md",
    ),
    "rt_d2l_mlp_deep_sigmoid": (
        "vanishing_gradients",
        ("early_stagnation",),
        "fault: 8 Sigmoid hidden layers",
        D2L + "chapter_multilayer-perceptrons/mlp-implementation.md",
    ),
    "rt_d2l_mlp_bias_neg": (
        "dead_relu",
        ("early_stagnation",),
        "fault: hidden bias -1 before ReLU",
        D2L + "chapter_multilayer-perceptrons/mlp-implementation.md",
    ),
    "rt_nn_tutorial_cnn": (
        None,
        (),
        "3 stride-2 convs, ReLU on the pooled logits, SGD momentum; slow first 20%",
        TUTORIALS + "nn_tutorial.py",
    ),
    "rt_uva_kaiming": (None, (), "ReLU MLP 128-64-64-32, Kaiming init, Adam", UVA),
    "rt_uva_const_init": (
        "early_stagnation",
        (),
        "fault: every parameter 0.005 (the tutorial's const_init), trained",
        UVA,
    ),
    "rt_d2l_rnn_lm_clip": (
        None,
        (),
        "char RNN LM, SGD lr 1, clip_grad_norm 1",
        D2L + "chapter_recurrent-neural-networks/rnn-concise.md + grad_clipping of rnn-scratch.md",
    ),
    "rt_d2l_rnn_lm_noclip_lr100": (
        "exploding_gradients",
        ("vanishing_gradients", "early_stagnation"),
        "fault: clipping removed and lr x100",
        D2L + "chapter_recurrent-neural-networks/rnn-concise.md",
    ),
    "rt_lstm_prepadded": (
        None,
        (),
        "2-layer LSTM over image rows after 28 zero rows (early steps carry nothing)",
        YUNJEY,
    ),
    "rt_rnn_postpadded": (
        "vanishing_gradients",
        ("early_stagnation",),
        "fault: vanilla nn.RNN, 56 zero rows after the image, Adam 1e-3",
        YUNJEY,
    ),
    "rt_d2l_gru_lm_clip": (
        None,
        (),
        "char GRU LM, SGD lr 1, clip_grad_norm 1",
        D2L + "chapter_recurrent-modern/gru.md (concise) + grad_clipping of rnn-scratch.md",
    ),
    "rt_gru_prepadded": (
        None,
        (),
        "2-layer GRU over image rows after 28 zero rows (early steps carry nothing)",
        YUNJEY,
    ),
    "rt_linreg_lr_x1000_nanstop": (
        "nonfinite",
        ("exploding_gradients",),
        "full batch; fault: lr x1000 (10); the loop breaks when the loss is NaN (29 steps)",
        LOEBER + "07_linear_regression.py",
    ),
    "rt_linreg_sigmoid_output": (
        "early_stagnation",
        (),
        "full batch; fault: a sigmoid on the output of an unbounded regression (targets about -200..200)",
        LOEBER + "07_linear_regression.py",
    ),
    "rt_tiny_gpt": (None, (), "2-layer char GPT, AdamW lr 1e-3", GPT),
    "rt_tiny_gpt_lr_x1000": (
        "exploding_gradients",
        (),
        "fault: AdamW lr x1000 (1.0)",
        GPT,
    ),
    "rt_logreg_fullbatch": (
        None,
        (),
        "full batch: 1 SGD step per epoch, sigmoid + BCELoss, scaled inputs",
        LOEBER + "08_logistic_regression.py",
    ),
    "rt_logreg_unscaled": (
        "early_stagnation",
        (),
        "full batch; fault: StandardScaler removed (features up to 4254)",
        LOEBER + "08_logistic_regression.py",
    ),
    "rt_logreg_softmax_one_unit": (
        "early_stagnation",
        (),
        "full batch; fault: softmax over the single output unit",
        LOEBER + "08_logistic_regression.py",
    ),
    "rt_linreg_fullbatch_short": (
        None,
        (),
        "full batch nn.Linear + MSE, 20 epochs",
        LOEBER + "07_linear_regression.py",
    ),
    "rt_forum_cubic": (
        None,
        (),
        "the answer: normalised input and target, Adam, full batch",
        FORUM,
    ),
    "rt_forum_cubic_unscaled": (
        "early_stagnation",
        (),
        "the question: raw inputs 1..3999, raw cubes as targets",
        FORUM,
    ),
}

# fmt: off
ORACLE: dict[str, dict[str, object]] = {
    'rt_quickstart': {'steps': 625, 'loss0': 2.3, 'loss20': 2.25, 'loss_end': 1.23, 'first_nonfinite': None, 'grad_growth': 3.14, 'ratio_med': 1.6, 'ratio_end': 1.24, 'w_end/w0': 1.05, 'dead_max_end': 0.102, 'acc0': 0.0723, 'acc_end': 0.732, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_quickstart_lr_div1e4': {'steps': 625, 'loss0': 2.3, 'loss20': 2.3, 'loss_end': 2.3, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 3.06, 'ratio_end': 3.07, 'w_end/w0': 1.0, 'dead_max_end': 0.0469, 'acc0': 0.0723, 'acc_end': 0.0723, 'train_loss_max/first': 1.01, 'label': 'early_stagnation', 'also': ''},
    'rt_quickstart_wd': {'steps': 625, 'loss0': 2.3, 'loss20': 2.3, 'loss_end': 2.3, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 0.699, 'ratio_end': 0.0418, 'w_end/w0': 0.00187, 'dead_max_end': 0.508, 'acc0': 0.0723, 'acc_end': 0.113, 'train_loss_max/first': 1.0, 'label': 'weight_collapse', 'also': 'early_stagnation'},
    'rt_quickstart_lr_x1000_short': {'steps': 20, 'loss0': 2.3, 'loss20': 206.0, 'loss_end': 3.0, 'first_nonfinite': None, 'grad_growth': 738000.0, 'ratio_med': 0.03, 'ratio_end': math.nan, 'w_end/w0': 225000.0, 'dead_max_end': 1.0, 'acc0': 0.0723, 'acc_end': 0.105, 'train_loss_max/first': 45400.0, 'label': 'exploding_gradients', 'also': 'dead_relu,early_stagnation'},
    'rt_nn_tutorial_manual': {'steps': 250, 'loss0': 2.37, 'loss20': 0.544, 'loss_end': 0.197, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.0, 'ratio_end': 1.0, 'w_end/w0': 4.6, 'dead_max_end': 0.0, 'acc0': 0.0469, 'acc_end': 0.941, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_nn_tutorial_manual_lr_div1e4': {'steps': 250, 'loss0': 2.37, 'loss20': 2.37, 'loss_end': 2.35, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.0, 'ratio_end': 1.0, 'w_end/w0': 1.0, 'dead_max_end': 0.0, 'acc0': 0.0469, 'acc_end': 0.0625, 'train_loss_max/first': 1.03, 'label': 'early_stagnation', 'also': ''},
    'rt_linreg_unscaled_nanstop': {'steps': 3, 'loss0': 22200000.0, 'loss20': math.inf, 'loss_end': math.inf, 'first_nonfinite': 3, 'grad_growth': 1.0, 'ratio_med': math.nan, 'ratio_end': math.nan, 'w_end/w0': 1.46e+19, 'dead_max_end': 0.0, 'train_loss_max/first': 2.49e+22, 'label': 'nonfinite', 'also': 'exploding_gradients'},
    'rt_d2l_mlp': {'steps': 320, 'loss0': 2.3, 'loss20': 1.31, 'loss_end': 0.278, 'first_nonfinite': None, 'grad_growth': 6.33, 'ratio_med': 0.978, 'ratio_end': 1.04, 'w_end/w0': 1.7, 'dead_max_end': 0.0, 'acc0': 0.145, 'acc_end': 0.922, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_d2l_mlp_deep_sigmoid': {'steps': 320, 'loss0': 2.3, 'loss20': 2.3, 'loss_end': 2.31, 'first_nonfinite': None, 'grad_growth': 1.22, 'ratio_med': 2.63e-12, 'ratio_end': 2.12e-12, 'w_end/w0': 1.0, 'dead_max_end': 0.0, 'acc0': 0.0781, 'acc_end': 0.105, 'train_loss_max/first': 1.01, 'label': 'vanishing_gradients', 'also': 'early_stagnation'},
    'rt_d2l_mlp_bias_neg': {'steps': 320, 'loss0': 2.3, 'loss20': 2.3, 'loss_end': 2.3, 'first_nonfinite': None, 'grad_growth': math.nan, 'ratio_med': math.nan, 'ratio_end': math.nan, 'w_end/w0': 1.0, 'dead_max_end': 1.0, 'acc0': 0.105, 'acc_end': 0.113, 'train_loss_max/first': 1.0, 'label': 'dead_relu', 'also': 'early_stagnation'},
    'rt_nn_tutorial_cnn': {'steps': 188, 'loss0': 2.3, 'loss20': 2.3, 'loss_end': 1.09, 'first_nonfinite': None, 'grad_growth': 62.7, 'ratio_med': 0.14, 'ratio_end': 0.0629, 'w_end/w0': 2.76, 'dead_max_end': 0.0625, 'acc0': 0.0918, 'acc_end': 0.648, 'train_loss_max/first': 1.01, 'label': 'healthy', 'also': ''},
    'rt_uva_kaiming': {'steps': 96, 'loss0': 2.92, 'loss20': 0.558, 'loss_end': 0.159, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.93, 'ratio_end': 1.55, 'w_end/w0': 1.02, 'dead_max_end': 0.219, 'acc0': 0.111, 'acc_end': 0.943, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_uva_const_init': {'steps': 96, 'loss0': 2.3, 'loss20': 2.07, 'loss_end': 2.01, 'first_nonfinite': None, 'grad_growth': 149.0, 'ratio_med': 0.0488, 'ratio_end': 0.0749, 'w_end/w0': 2.91, 'dead_max_end': 0.0, 'acc0': 0.105, 'acc_end': 0.221, 'train_loss_max/first': 1.0, 'ref_loss': 0.159, 'label': 'early_stagnation', 'also': ''},
    'rt_d2l_rnn_lm_clip': {'steps': 250, 'loss0': 3.32, 'loss20': 2.52, 'loss_end': 1.93, 'first_nonfinite': None, 'grad_growth': 1.52, 'ratio_med': 0.687, 'ratio_end': 0.69, 'w_end/w0': 2.38, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_d2l_rnn_lm_noclip_lr100': {'steps': 250, 'loss0': 3.32, 'loss20': 2690.0, 'loss_end': 2720.0, 'first_nonfinite': None, 'grad_growth': 34.1, 'ratio_med': 3.75e-06, 'ratio_end': 9.67e-06, 'w_end/w0': 3590.0, 'dead_max_end': 0.0, 'train_loss_max/first': 1250.0, 'label': 'exploding_gradients', 'also': 'vanishing_gradients,early_stagnation'},
    'rt_d2l_gru_lm_clip': {'steps': 250, 'loss0': 3.29, 'loss20': 2.79, 'loss_end': 2.27, 'first_nonfinite': None, 'grad_growth': 2.31, 'ratio_med': 0.408, 'ratio_end': 0.441, 'w_end/w0': 1.51, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_lstm_prepadded': {'steps': 120, 'loss0': 2.3, 'loss20': 1.63, 'loss_end': 0.605, 'first_nonfinite': None, 'grad_growth': 153.0, 'ratio_med': 1.41, 'ratio_end': 1.29, 'w_end/w0': 2.0, 'dead_max_end': 0.0, 'acc0': 0.104, 'acc_end': 0.797, 'time_ratio_med': 1.04, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_gru_prepadded': {'steps': 120, 'loss0': 2.3, 'loss20': 1.36, 'loss_end': 0.372, 'first_nonfinite': None, 'grad_growth': 25.4, 'ratio_med': 1.16, 'ratio_end': 1.91, 'w_end/w0': 2.08, 'dead_max_end': 0.0, 'acc0': 0.105, 'acc_end': 0.867, 'time_ratio_med': 0.339, 'train_loss_max/first': 1.01, 'label': 'healthy', 'also': ''},
    'rt_rnn_postpadded': {'steps': 120, 'loss0': 2.31, 'loss20': 2.3, 'loss_end': 2.3, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 3.67e-13, 'ratio_end': 4.29e-13, 'w_end/w0': 0.997, 'dead_max_end': 0.0, 'acc0': 0.104, 'acc_end': 0.104, 'time_ratio_med': 1.75e-18, 'train_loss_max/first': 1.01, 'label': 'vanishing_gradients', 'also': 'early_stagnation'},
    'rt_tiny_gpt': {'steps': 300, 'loss0': 3.48, 'loss20': 2.67, 'loss_end': 2.29, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 0.111, 'ratio_end': 0.106, 'w_end/w0': 1.0, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_tiny_gpt_lr_x1000': {'steps': 300, 'loss0': 3.48, 'loss20': 52.0, 'loss_end': 2.83, 'first_nonfinite': None, 'grad_growth': 11.7, 'ratio_med': 0.0393, 'ratio_end': 5.1, 'w_end/w0': 4.96, 'dead_max_end': 0.0, 'train_loss_max/first': 24.5, 'label': 'exploding_gradients', 'also': ''},
    'rt_logreg_fullbatch': {'steps': 100, 'loss0': 0.682, 'loss20': 0.456, 'loss_end': 0.24, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.0, 'ratio_end': 1.0, 'w_end/w0': 1.48, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_logreg_unscaled': {'steps': 100, 'loss0': 28.6, 'loss20': 36.7, 'loss_end': 36.7, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': math.nan, 'ratio_end': math.nan, 'w_end/w0': 1.38, 'dead_max_end': 0.0, 'train_loss_max/first': 1.28, 'label': 'early_stagnation', 'also': ''},
    'rt_logreg_softmax_one_unit': {'steps': 100, 'loss0': 36.7, 'loss20': 36.7, 'loss_end': 36.7, 'first_nonfinite': None, 'grad_growth': math.nan, 'ratio_med': math.nan, 'ratio_end': math.nan, 'w_end/w0': 1.0, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'early_stagnation', 'also': ''},
    'rt_linreg_fullbatch_short': {'steps': 20, 'loss0': 5610.0, 'loss20': 4850.0, 'loss_end': 2760.0, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.0, 'ratio_end': 1.0, 'w_end/w0': 3180.0, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_linreg_lr_x1000_nanstop': {'steps': 29, 'loss0': 5610.0, 'loss20': math.inf, 'loss_end': math.nan, 'first_nonfinite': 14, 'grad_growth': 1.8e+25, 'ratio_med': 1.0, 'ratio_end': math.nan, 'w_end/w0': math.inf, 'dead_max_end': 0.0, 'train_loss_max/first': 2.09e+30, 'label': 'nonfinite', 'also': 'exploding_gradients'},
    'rt_linreg_sigmoid_output': {'steps': 100, 'loss0': 5610.0, 'loss20': 5560.0, 'loss_end': 5560.0, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 1.0, 'ratio_end': 1.0, 'w_end/w0': 616.0, 'dead_max_end': 0.0, 'train_loss_max/first': 1.0, 'label': 'early_stagnation', 'also': ''},
    'rt_forum_cubic': {'steps': 300, 'loss0': 0.667, 'loss20': 0.158, 'loss_end': 0.00755, 'first_nonfinite': None, 'grad_growth': 1.0, 'ratio_med': 0.201, 'ratio_end': 0.194, 'w_end/w0': 1.09, 'dead_max_end': 0.2, 'train_loss_max/first': 1.0, 'label': 'healthy', 'also': ''},
    'rt_forum_cubic_unscaled': {'steps': 300, 'loss0': 5.85e+20, 'loss20': 5.85e+20, 'loss_end': 5.85e+20, 'first_nonfinite': None, 'grad_growth': 1.81, 'ratio_med': 0.328, 'ratio_end': 0.478, 'w_end/w0': 1.4, 'dead_max_end': 0.44, 'train_loss_max/first': 1.0, 'label': 'early_stagnation', 'also': ''},
}
# fmt: on


def _case(name: str) -> Case:
    expected, allowed, about, source = LABELS[name]
    return Case(
        name,
        "pytorch",
        expected,
        gradwatch_run(PROGRAMS[name]),
        about,
        allowed,
        source,
        ORACLE.get(name, {}),
    )


CASES: list[Case] = [_case(name) for name in PROGRAMS if name in LABELS]

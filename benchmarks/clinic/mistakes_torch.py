"""Plain PyTorch programs of the mistakes clinic, each with one everyday mistake on purpose or without it.

Each program is ``program(attach)``: it builds its model, optimizer and data, calls ``attach(model,
optimizer, probe)`` once before its loop and ``.step(loss)`` once per step. Under gradwatch ``attach``
is ``watch(...)``; under the oracle (``mistakes_oracle``) a ``Recorder``. The programs are our own
shrunk rewrites of the cited public ones, on sklearn's digits (8x8, 1797 images), breast-cancer or
diabetes tables, a few hundred steps each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .mistakes_oracle import Attach, Probe

Program = Callable[[Attach], None]
TUTORIALS = "pytorch/tutorials beginner_source/"
D2L = "d2l-ai/d2l-en "


def gradwatch_run(program: Program) -> Callable[[], Any]:
    """``run`` for a program: attach gradwatch's ``watch`` (quiet) and return its report."""

    def run() -> Any:
        from gradwatch.integrations.pytorch import watch

        torch.set_num_threads(1)
        watchers: list[Any] = []

        def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, probe: Probe | None) -> Any:
            watchers.append(watch(model, optimizer, print_report=False, warn_on=None))
            return watchers[-1]

        program(attach)
        return watchers[0].close()

    return run


# -- data -------------------------------------------------------------------------------------------


def digits(n_probe: int = 297) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits, pixels in [0, 1], flattened: 1500 training rows and a held-out probe batch."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xt, yt = torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y)
    return xt[:-n_probe], yt[:-n_probe], xt[-n_probe:], yt[-n_probe:]


def table(name: str, n_probe: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An sklearn table (``breast_cancer`` or ``diabetes``) with standardised features (and target, for diabetes)."""
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))
    xt, yt = xt[perm], yt[perm]
    xt = (xt - xt.mean(0)) / xt.std(0)
    if name == "diabetes":
        yt = (yt - yt.mean()) / yt.std()
    return xt[:-n_probe], yt[:-n_probe], xt[-n_probe:], yt[-n_probe:]


def batches(n: int, size: int, epochs: int, seed: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, row indices) of shuffled mini-batches, as a DataLoader with ``shuffle=True`` gives them."""
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, size):
            yield epoch, order[i : i + size]


def mlp(*widths: int, head: nn.Module | None = None) -> nn.Sequential:
    """Linear/ReLU layers of the given widths; the last Linear is the output (then ``head``, if any)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers, *([head] if head is not None else []))


# -- pytorch/tutorials basics/optimization_tutorial: train_loop with zero_grad, accumulation, dtype ------


def optimization_tutorial(attach: Attach, *, clear: str = "each", dtype: torch.dtype = torch.float32, epochs: int = 8) -> None:
    """The tutorial's Flatten-Linear-ReLU stack (512 wide, 64 here), CrossEntropyLoss, SGD; batch 64.

    ``clear``: ``each`` step zeroes the gradients (the tutorial), ``never`` forgets ``zero_grad()``,
    ``accumulate`` adds 4 micro-batches of 16 (loss / 4) before each step and zero_grad.
    """
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = mlp(64, 64, 64, 10).to(dtype)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inst = attach(model, optimizer, Probe(px.to(dtype), py))
    micro = 4 if clear == "accumulate" else 1
    for k, (_, rows) in enumerate(batches(len(x), 64 // micro, epochs)):
        loss = loss_fn(model(x[rows].to(dtype)), y[rows]) / micro
        loss.backward()
        inst.step(loss * micro)
        if (k + 1) % micro == 0:
            optimizer.step()
            if clear != "never":
                optimizer.zero_grad()


# -- output layer vs loss: d2l softmax regression (concise) and the classifier of the 60-minute blitz ----


def output_and_loss(attach: Attach, *, head: str = "logits", epochs: int = 8) -> None:
    """Linear-ReLU-Linear classifier, SGD(0.1, momentum 0.9), batch 64.

    ``head``: ``logits`` into CrossEntropyLoss (healthy), ``softmax`` (nn.Softmax) or ``relu`` before
    CrossEntropyLoss; a model that ends in ``softmax_nll`` (nn.Softmax) or ``log_softmax_nll``
    (nn.LogSoftmax, healthy) under F.nll_loss, which expects log-probabilities.
    """
    torch.manual_seed(0)
    x, y, px, py = digits()
    last = {"softmax": nn.Softmax(dim=1), "relu": nn.ReLU(), "softmax_nll": nn.Softmax(dim=1), "log_softmax_nll": nn.LogSoftmax(dim=1)}.get(head)
    model = mlp(64, 128, 10, head=last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nll = head.endswith("nll")
    inst = attach(model, optimizer, Probe(px, py, expects="log_probs" if nll else "logits"))
    for _, rows in batches(len(x), 64, epochs):
        out = model(x[rows])
        loss = F.nll_loss(out, y[rows]) if nll else F.cross_entropy(out, y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


class BinaryNet(nn.Module):
    """30 -> 16 -> 1; ``squash`` applies torch.sigmoid in forward (the mistake under BCEWithLogitsLoss)."""

    def __init__(self, squash: bool) -> None:
        super().__init__()
        self.hidden, self.out, self.squash = nn.Linear(30, 16), nn.Linear(16, 1), squash

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.out(F.relu(self.hidden(x)))
        return torch.sigmoid(z) if self.squash else z


def bce_with_logits(attach: Attach, *, squash: bool = False, epochs: int = 20) -> None:
    """Breast-cancer table (standardised), BCEWithLogitsLoss, Adam(1e-2), batch 32."""
    torch.manual_seed(0)
    x, y, px, py = table("breast_cancer", 169)
    model = BinaryNet(squash)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inst = attach(model, optimizer, Probe(px, py, task="binary"))
    for _, rows in batches(len(x), 32, epochs):
        loss = loss_fn(model(x[rows]), y[rows, None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- a loss that broadcasts: regression with outputs [N, 1] against targets [N] ------------------------


def regression(attach: Attach, *, target_column: bool = True, epochs: int = 30) -> None:
    """Diabetes table (features and target standardised), 10-32-1 MLP, MSELoss, Adam(1e-2), batch 64.

    ``target_column=False`` passes targets of shape [N] against outputs [N, 1]: the loss is taken
    over the [N, N] broadcast (PyTorch warns once) and the model learns the mean.
    """
    torch.manual_seed(0)
    x, y, px, py = table("diabetes", 92)
    model = mlp(10, 32, 1)
    loss_fn = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inst = attach(model, optimizer, Probe(px, py[:, None] if target_column else py, task="regression", expects="values"))
    for _, rows in batches(len(x), 64, epochs):
        target = y[rows, None] if target_column else y[rows]
        loss = loss_fn(model(x[rows]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- model.eval() left on: optimization_tutorial's train_loop / test_loop with BatchNorm and Dropout ---


def train_and_validate(attach: Attach, *, train_call: str = "each_epoch", epochs: int = 8) -> None:
    """Linear-BatchNorm-ReLU-Dropout(0.3)-Linear, Adam(1e-3), batch 64, validation after every epoch.

    ``train_call``: ``each_epoch`` (the tutorial: model.train() in train_loop, model.eval() in
    test_loop), ``once`` (model.train() before the first epoch only: eval mode from the first
    validation on), ``never`` (model.eval() before training, no train() at all).
    """
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inst = attach(model, optimizer, Probe(px, py))
    model.train(train_call != "never")
    epoch_seen = -1
    for epoch, rows in batches(len(x), 64, epochs):
        if epoch != epoch_seen:
            if epoch_seen >= 0:  # test_loop of the previous epoch
                model.eval()
                with torch.no_grad():
                    _ = (model(px).argmax(1) == py).float().mean()
            if train_call == "each_epoch":
                model.train()
            epoch_seen = epoch
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- a new head and the optimizer: d2l fine-tuning (replace fc, then build the optimizer) ---------------


class Backbone(nn.Module):
    """Linear-BatchNorm-ReLU features and an ``fc`` head, as torchvision models name it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU())
        self.fc = nn.Linear(64, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def finetune(attach: Attach, *, fault: str = "", epochs: int = 8) -> None:
    """Replace ``fc`` by a 10-class head and train with SGD(0.05, momentum 0.9), batch 64.

    ``fault``: ``head_after_optimizer`` builds the optimizer before the head is replaced (the new
    head gets gradients but is in no param group); ``frozen`` freezes every nn.Linear to keep the
    features, which also freezes the new head (only the BatchNorm scales and shifts train).
    """
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = Backbone()
    if fault == "head_after_optimizer":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.fc = nn.Linear(64, 10)
    else:
        model.fc = nn.Linear(64, 10)
        if fault == "frozen":
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.requires_grad_(False)
        optimizer = torch.optim.SGD((p for p in model.parameters() if p.requires_grad), lr=0.05, momentum=0.9)
    inst = attach(model, optimizer, Probe(px, py))
    for _, rows in batches(len(x), 64, epochs):
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- learning-rate schedulers: transfer_learning_tutorial's StepLR, stepped per epoch or per batch -------


def scheduled(attach: Attach, *, schedule: str = "step_epoch", epochs: int = 10) -> None:
    """MLP 64-64-64-10, SGD(0.1, momentum 0.9), batch 64 (24 steps per epoch).

    ``schedule``: ``step_epoch`` StepLR(step_size=5, gamma=0.1) stepped per epoch (healthy);
    ``step_batch`` the same stepped per batch; ``exp_batch`` ExponentialLR(0.9) per batch;
    ``cosine`` CosineAnnealingLR over all the run's batches, reaching 0 at the very end (healthy);
    ``cosine_epochs_batch`` CosineAnnealingLR(T_max=epochs) stepped every batch: down to 0 and back every 20 steps.
    """
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = mlp(64, 64, 64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    per_epoch = math.ceil(len(x) / 64)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if schedule == "exp_batch":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * per_epoch)
    elif schedule == "cosine_epochs_batch":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.1)
    inst = attach(model, optimizer, Probe(px, py))
    for k, (_, rows) in enumerate(batches(len(x), 64, epochs)):
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)
        if schedule != "step_epoch" or (k + 1) % per_epoch == 0:
            scheduler.step()


# -- inputs and labels that do not correspond -----------------------------------------------------------


def shuffled_dataset(attach: Attach, *, separately: bool = False, epochs: int = 8) -> None:
    """Shuffle the training set once, then train an MLP with Adam(1e-3), batch 64.

    ``separately``: the labels get a permutation of their own (``y = y[torch.randperm(n)]``) instead of
    the inputs' one, so no label belongs to its image any more.
    """
    torch.manual_seed(0)
    x, y, px, py = digits()
    perm = torch.randperm(len(x))
    x, y = x[perm], y[torch.randperm(len(y)) if separately else perm]
    model = mlp(64, 64, 64, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inst = attach(model, optimizer, Probe(px, py))
    for _, rows in batches(len(x), 64, epochs):
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


class RowGRU(nn.Module):
    """Reads an 8x8 image row by row with a sequence-first nn.GRU; ``view`` reshapes where permute was meant."""

    def __init__(self, view: bool) -> None:
        super().__init__()
        self.gru, self.fc, self.view = nn.GRU(8, 64), nn.Linear(64, 10), view

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = images.reshape(len(images), 8, 8)  # [batch, row, pixel]
        seq = rows.view(8, len(images), 8) if self.view else rows.permute(1, 0, 2)  # [row, batch, pixel]
        out, _ = self.gru(seq)
        return self.fc(out[-1])


def row_rnn(attach: Attach, *, view: bool = False, epochs: int = 8) -> None:
    """yunjey/pytorch-tutorial's RNN over image rows with ``batch_first=False``; Adam(1e-2), batch 64."""
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = RowGRU(view)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inst = attach(model, optimizer, Probe(px, py))
    for _, rows in batches(len(x), 64, epochs):
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- a summed loss over a large batch under plain SGD -----------------------------------------------------


def large_batch(attach: Attach, *, reduction: str = "mean", epochs: int = 30) -> None:
    """MLP 64-64-64-10, CrossEntropyLoss(reduction=...), plain SGD(lr=0.1), batch 256 (6 steps per epoch)."""
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = mlp(64, 64, 64, 10)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inst = attach(model, optimizer, Probe(px, py))
    for _, rows in batches(len(x), 256, epochs):
        loss = loss_fn(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


# -- initialisation scale: d2l numerical stability and initialisation, an 8-layer ReLU MLP ---------------


def initialised(attach: Attach, *, init: str = "he", epochs: int = 8) -> None:
    """8 Linear layers (64-128x7-10) with ReLU, Adam(1e-3), batch 64; weights N(0, std) or He, biases 0."""
    torch.manual_seed(0)
    x, y, px, py = digits()
    model = mlp(64, *[128] * 7, 10)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if init == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=float(init))
            nn.init.zeros_(m.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inst = attach(model, optimizer, Probe(px, py))
    for _, rows in batches(len(x), 64, epochs):
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        inst.step(loss)


PROGRAMS: dict[str, Program] = {
    "pt_zero_grad_forgotten": partial(optimization_tutorial, clear="never"),
    "pt_zero_grad": optimization_tutorial,
    "pt_grad_accumulation": partial(optimization_tutorial, clear="accumulate"),
    "pt_float64": partial(optimization_tutorial, dtype=torch.float64),
    "pt_bfloat16": partial(optimization_tutorial, dtype=torch.bfloat16),
    "pt_softmax_into_ce": partial(output_and_loss, head="softmax"),
    "pt_relu_into_ce": partial(output_and_loss, head="relu"),
    "pt_softmax_into_nll": partial(output_and_loss, head="softmax_nll"),
    "pt_logits_into_ce": output_and_loss,
    "pt_log_softmax_into_nll": partial(output_and_loss, head="log_softmax_nll"),
    "pt_sigmoid_into_bce_logits": partial(bce_with_logits, squash=True),
    "pt_bce_logits": bce_with_logits,
    "pt_mse_broadcast": partial(regression, target_column=False),
    "pt_mse_shapes_match": regression,
    "pt_eval_after_validation": partial(train_and_validate, train_call="once"),
    "pt_eval_before_training": partial(train_and_validate, train_call="never"),
    "pt_train_eval_each_epoch": train_and_validate,
    "pt_head_after_optimizer": partial(finetune, fault="head_after_optimizer"),
    "pt_frozen_with_head": partial(finetune, fault="frozen"),
    "pt_head_then_optimizer": finetune,
    "pt_steplr_per_batch": partial(scheduled, schedule="step_batch"),
    "pt_exponential_per_batch": partial(scheduled, schedule="exp_batch"),
    "pt_steplr_per_epoch": scheduled,
    "pt_cosine_to_zero": partial(scheduled, schedule="cosine"),
    "pt_cosine_epochs_per_batch": partial(scheduled, schedule="cosine_epochs_batch"),
    "pt_labels_shuffled_apart": partial(shuffled_dataset, separately=True),
    "pt_shuffled_together": shuffled_dataset,
    "pt_view_not_permute": partial(row_rnn, view=True),
    "pt_permute": row_rnn,
    "pt_sum_loss_sgd": partial(large_batch, reduction="sum"),
    "pt_mean_loss_sgd": large_batch,
    "pt_init_std1": partial(initialised, init="1.0"),
    "pt_init_std0001": partial(initialised, init="0.001"),
    "pt_init_he": initialised,
}

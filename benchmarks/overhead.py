"""``python -m benchmarks.overhead``: the cost of gradwatch on a training loop.

Plain loop vs the same loop under ``watch()`` (and peers: Lightning's
``grad_norm`` logged, Keras TensorBoard histograms, ``wandb.watch`` with
``--peers``), all sampling every ``--every`` steps (default 20, gradwatch's
default; ``--every 1`` measures every step, which magnifies the per-sample
cost twentyfold). Runs are interleaved, median of ``--repeats`` runs each.
Every run first takes ``--warmup`` untimed steps (which also covers
gradwatch's denser sampling of steps 1, 2, 4, 8, 16), so the ratio is the
steady-state cost.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from gradwatch.integrations.pytorch import watch

Model = Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]]


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """6 hidden layers of 1024 ReLU units, batch 256."""
    layers: list[nn.Module] = [nn.Linear(784, 1024), nn.ReLU()]
    for _ in range(5):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(1024, 10)), torch.randn(256, 784), torch.randint(0, 10, (256,))


def cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Three conv blocks on 32×32×3 images, batch 64."""
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    return model, torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))


class LastStep(nn.Module):
    """Two-layer LSTM over 50 steps, classifying from the last output."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(32, 256, num_layers=2, batch_first=True)
        self.out = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x)[0][:, -1])


def lstm() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """2-layer LSTM (hidden 256) on 50-step sequences, batch 64."""
    return LastStep(), torch.randn(64, 50, 32), torch.randint(0, 10, (64,))


class TinyGPT(nn.Module):
    """A decoder-only transformer: 4 pre-norm layers of width 256, 4 heads, causal, over 256 byte tokens."""

    def __init__(self, context: int = 128) -> None:
        super().__init__()
        self.token = nn.Embedding(256, 256)
        self.position = nn.Parameter(torch.zeros(context, 256))
        layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(256, 256)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.blocks(x, mask=self.mask, is_causal=True))  # type: ignore[arg-type]


def gpt() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``TinyGPT`` on 128-token sequences, batch 16, trained with AdamW (the attention and Adam precursors run)."""
    tokens = torch.randint(0, 256, (16, 129))
    return TinyGPT(), tokens[:, :-1], tokens[:, 1:]


MODELS: dict[str, Model] = {"mlp": mlp, "cnn": cnn, "lstm": lstm, "gpt": gpt}


def run(make: Model, *, variant: str, steps: int, warmup: int, every: int = 20, device: str = "cpu") -> float:
    """Seconds per step over ``steps`` timed steps: ``plain``, ``gradwatch``, ``gradwatch_sampled_only`` (without
    the total gradient norm read at every step) or ``wandb`` (watch gradients, offline)."""
    torch.manual_seed(0)
    model, x, y = make()
    model, x, y = model.to(device), x.to(device), y.to(device)
    adam = make is gpt
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4) if adam else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    watched = variant.startswith("gradwatch")
    watcher = watch(model, optimizer, every_n_steps=every, print_report=False, warn_on=None) if watched else None
    if watcher is not None and variant == "gradwatch_sampled_only":
        watcher.cycle.collector.note_step_gradients = lambda scale=None: None
    if variant == "wandb":
        import wandb

        wandb_run = wandb.init(mode="offline", project="gradwatch-bench", reinit="finish_previous", dir=tempfile.mkdtemp())
        wandb.watch(model, log="gradients", log_freq=every)

    def step() -> None:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten())  # a GPT's [batch, length, vocab] too
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if watcher is not None:
            watcher.step(loss)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start
    if watcher is not None:
        watcher.close()
    if variant == "wandb":
        wandb_run.finish()
    return elapsed / steps


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_keras(variant: str, *, steps: int, warmup: int, every: int = 20) -> float:
    """Seconds per step of Keras ``fit`` (TensorFlow) on the 6×1024 MLP: plain, gradwatch, TensorBoard histograms."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np

    from gradwatch.integrations.keras import GradWatchCallback

    keras.utils.set_random_seed(0)
    layers = [keras.Input((784,))] + [keras.layers.Dense(1024, activation="relu") for _ in range(6)] + [keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(256 * every, 784)).astype("float32")  # one epoch = `every` steps
    y = np.random.default_rng(1).integers(0, 10, size=256 * every)

    class Clock(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
            if self.seen == warmup:
                self.start = time.perf_counter()
            self.seen += 1

        def on_train_end(self, logs: object = None) -> None:
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    callbacks: list[keras.callbacks.Callback] = [clock]
    if variant == "gradwatch":
        callbacks.append(GradWatchCallback(every_n_steps=every, print_report=False, warn_on=None))
    elif variant == "tensorboard":  # one epoch = `every` steps, so histograms come as often as gradwatch samples
        callbacks.append(keras.callbacks.TensorBoard(tempfile.mkdtemp(), histogram_freq=1, write_graph=False))
    model.fit(x, y, batch_size=256, epochs=-(-(warmup + steps) // every), verbose=0, callbacks=callbacks)
    return clock.seconds / (clock.seen - warmup)


def run_lightning(make: Model, *, variant: str, steps: int, warmup: int, every: int = 20) -> float:
    """Seconds per step of ``Trainer.fit`` with no diagnostics, gradwatch, or grad_norm logged every ``every`` steps."""
    import lightning.pytorch as L
    from lightning.pytorch.utilities import grad_norm

    from gradwatch.integrations.lightning import GradWatchCallback

    torch.manual_seed(0)
    net, x, y = make()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch: object, batch_idx: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self.net(x), y)

        def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
            if variant == "grad_norm" and self.global_step % every == 0:
                self.log_dict(grad_norm(self, norm_type=2))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.global_step == warmup:
                self.start = time.perf_counter()

        def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    callbacks: list[L.Callback] = [clock]
    if variant == "gradwatch":
        callbacks.append(GradWatchCallback(print_report=False, warn_on=None, every_n_steps=every))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=warmup + steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(Module(), [0] * (warmup + steps))
    return clock.seconds / steps


def table_row(name: str, base: list[float], other: list[float]) -> str:
    b, o = statistics.median(base), statistics.median(other)
    return f"{name:<28} {1e3 * b:>14.2f} {1e3 * o:>16.2f} {o / b:>7.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--frameworks", nargs="*", default=["pytorch", "lightning", "keras"], choices=["pytorch", "lightning", "keras"])
    parser.add_argument("--every", type=int, default=20, help="sampling period of gradwatch and of every peer (default: gradwatch's default)")
    parser.add_argument("--peers", action="store_true", help="add wandb.watch rows (pip install wandb)")
    parser.add_argument("--device", default="cpu", help="torch device for the PyTorch rows, e.g. cuda")
    parser.add_argument(
        "--step-norm", action="store_true", help="add a PyTorch row: watch() against watch() without the gradient norm read at every step"
    )
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} runs × {args.steps} steps, sampling every {args.every} steps"
    )
    print(f"{'configuration':<28} {'base ms/step':>14} {'with ms/step':>16} {'ratio':>7}")
    for name in args.models:
        make = MODELS[name]
        if "pytorch" in args.frameworks:
            variants = ["plain", "gradwatch"] + (["wandb"] if args.peers else []) + (["gradwatch_sampled_only"] if args.step_norm else [])
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
                for variant in variants:
                    times[variant].append(run(make, variant=variant, steps=args.steps, warmup=args.warmup, every=args.every, device=args.device))
            print(table_row(f"{name} pytorch: watch()", times["plain"], times["gradwatch"]), flush=True)
            if args.peers:
                print(table_row(f"{name} pytorch: wandb.watch", times["plain"], times["wandb"]), flush=True)
            if args.step_norm:
                print(table_row(f"{name} pytorch: per-step norm", times["gradwatch_sampled_only"], times["gradwatch"]), flush=True)
        if "lightning" in args.frameworks and name not in ("lstm", "gpt"):
            runs: dict[str, list[float]] = {"none": [], "gradwatch": [], "grad_norm": []}
            for _ in range(args.repeats):
                for variant, samples in runs.items():
                    samples.append(run_lightning(make, variant=variant, steps=args.steps, warmup=args.warmup, every=args.every))
            print(table_row(f"{name} lightning: callback", runs["none"], runs["gradwatch"]), flush=True)
            print(table_row(f"{name} lightning: grad_norm/{args.every}", runs["none"], runs["grad_norm"]), flush=True)
    if "keras" in args.frameworks:
        keras_runs: dict[str, list[float]] = {"plain": [], "gradwatch": []}
        if importlib.util.find_spec("tensorboard") is not None:  # the peer needs the [bench] extra
            keras_runs["tensorboard"] = []
        for _ in range(args.repeats):
            for variant, samples in keras_runs.items():
                samples.append(run_keras(variant, steps=args.steps, warmup=args.warmup, every=args.every))
        print(table_row("mlp keras/tf: callback", keras_runs["plain"], keras_runs["gradwatch"]), flush=True)
        if "tensorboard" in keras_runs:
            print(table_row("mlp keras/tf: TensorBoard hist", keras_runs["plain"], keras_runs["tensorboard"]), flush=True)


if __name__ == "__main__":
    main()

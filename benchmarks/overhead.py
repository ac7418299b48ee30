"""``python -m benchmarks.overhead``: the cost of gradwatch on a training loop.

Plain loop vs the same loop under ``watch()`` at default settings, runs
interleaved, median of ``--repeats`` runs each. Every run first takes
``--warmup`` untimed steps (which also covers gradwatch's denser sampling of
steps 1, 2, 4, 8, 16), so the ratio is the steady-state cost.
"""

from __future__ import annotations

import argparse
import statistics
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


def run(make: Model, *, watched: bool, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` timed steps."""
    torch.manual_seed(0)
    model, x, y = make()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    watcher = watch(model, optimizer, print_report=False, warn_on=None) if watched else None

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if watcher is not None:
            watcher.step(loss)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    if watcher is not None:
        watcher.close()
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} runs × {args.steps} steps")
    print(f"{'model':<6} {'plain ms/step':>14} {'watched ms/step':>16} {'ratio':>7}")
    for name in args.models:
        make = {"mlp": mlp, "cnn": cnn}[name]
        plain, watched = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
            plain.append(run(make, watched=False, steps=args.steps, warmup=args.warmup))
            watched.append(run(make, watched=True, steps=args.steps, warmup=args.warmup))
        p, w = statistics.median(plain), statistics.median(watched)
        print(f"{name:<6} {1e3 * p:>14.2f} {1e3 * w:>16.2f} {w / p:>7.3f}")


if __name__ == "__main__":
    main()

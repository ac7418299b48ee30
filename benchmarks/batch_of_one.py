"""Healthy regressions trained one row per batch: no finding at warning level or above is right.

Single-row losses are far noisier than the batch means most programs report: one early batch can sit near 0
and one later batch far out, by chance. Each run fits a small ReLU MLP with plain SGD (lr 0.01) to a linear
target plus noise, 400 rows, 3 epochs of 1-row batches (1,200 steps), watched at the defaults.

    python -m benchmarks.batch_of_one                 # 8 seeds, Gaussian noise
    python -m benchmarks.batch_of_one --noise t2      # Student-t noise with 2 degrees of freedom (infinite variance)
"""

from __future__ import annotations

import argparse

import numpy as np


def run(seed: int, noise: str, batch: int) -> list[str]:
    """One watched fit; the findings at warning level and above, as ``symptom (severity)``."""
    import torch
    from torch import nn

    from gradwatch.integrations.pytorch import watch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    extra = rng.standard_t(2, size=(400, 1)) if noise == "t2" else rng.normal(size=(400, 1))
    y = (x @ rng.normal(size=(8, 1)) + extra).astype(np.float32)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
        for _ in range(3):
            for i in range(0, 400, batch):
                loss = nn.functional.mse_loss(model(inputs[i : i + batch]), targets[i : i + batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                watcher.step(loss)
    return [f"{f.symptom} ({f.severity})" for f in watcher.report().findings if f.at_least("warning")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--noise", choices=("gaussian", "t2"), default="gaussian")
    parser.add_argument("--batch", type=int, default=1, help="rows per batch (default 1)")
    args = parser.parse_args()
    alarmed = 0
    for seed in range(args.seeds):
        findings = run(seed, args.noise, args.batch)
        alarmed += bool(findings)
        print(f"seed {seed}: {', '.join(findings) or 'quiet'}")
    print(f"healthy runs alarmed: {alarmed}/{args.seeds} ({args.noise} noise, batches of {args.batch})")


if __name__ == "__main__":
    main()

"""``python -m benchmarks.scale``: gradwatch on big models, and a million-step stream through the core.

For a 500-layer MLP and a ~100M-parameter MLP: the time of a plain training
step, the extra time of a sampled step (gradient/weight/update reads, one
transfer), the physical floor of a sampled step (one fused pass over the
gradients and one over the weights: ``torch._foreach_norm`` of both) and the
ratio of the extra time to it, and the peak memory a sampled step adds
(resident set, measured in a fresh process per configuration). Then 50,000 samples (a 1M-step run sampled every
20 steps) through the core: time per sample and the size of the history kept.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _measure(config: str, watched: bool) -> dict[str, float]:
    """Runs in a child process: median step time and peak RSS for one configuration."""
    import torch
    from torch import nn

    from gradwatch.integrations.pytorch import watch

    torch.manual_seed(0)
    if config == "mlp500":
        width, depth, batch = 64, 500, 64
    else:  # ~100M parameters: 10 layers of 3200×3200
        width, depth, batch = 3200, 10, 32
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers)
    x = torch.randn(batch, width)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    watcher = watch(model, optimizer, every_n_steps=1, print_report=False, warn_on=None) if watched else None
    times = []
    for _ in range(6):
        start = time.perf_counter()
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if watcher is not None:
            watcher.step(loss)
        times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    floor = []
    if not watched:  # one read of the gradients and one of the weights, the way a sampled step must at least
        model(x).square().mean().backward()
        grads, weights = [p.grad for p in model.parameters()], list(model.parameters())
        for _ in range(6):
            start = time.perf_counter()
            with torch.no_grad():
                torch.stack(torch._foreach_norm(grads)).sum().item()
                torch.stack(torch._foreach_norm(weights)).sum().item()
            floor.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times[1:]),
        "floor": statistics.median(floor[1:]) if floor else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": params,
    }


def stream(samples: int = 50_000, layers: int = 10) -> dict[str, float]:
    """Feed ``samples`` synthetic samples through a Monitor; report time per sample and history size."""
    import tracemalloc

    from gradwatch import LayerStats, Monitor, StepStats

    monitor = Monitor(warn_on=None, every_n_steps=20)
    tracemalloc.start()
    start = time.perf_counter()
    for i in range(samples):
        stats = tuple(LayerStats(f"l{k}", 0.01 * (k + 1), 1.0, 1e-3, 0.0) for k in range(layers))
        monitor.observe(StepStats(i * 20, stats, loss=1.0 / (1 + i), lr=0.1))
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "us_per_sample": 1e6 * elapsed / samples,
        "history_points": len(monitor.history.steps),
        "peak_kb": peak / 1024,
        "summary_kb": len(json.dumps(monitor.report().to_summary())) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1] == "watched")))
        return
    print(
        f"{'model':<10} {'params':>12} {'plain s/step':>13} {'sampled s/step':>15} {'extra s':>8} {'floor s':>8} "
        f"{'extra/floor':>11} {'peak RSS MB plain':>18} {'added MB':>9}"
    )
    for config in ("mlp500", "mlp100m"):
        runs = {}
        for mode in ("plain", "watched"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", config, mode], capture_output=True, text=True, check=True)
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        plain, watched = runs["plain"], runs["watched"]
        extra = watched["seconds"] - plain["seconds"]
        print(
            f"{config:<10} {plain['params']:>12,} {plain['seconds']:>13.4f} {watched['seconds']:>15.4f} {extra:>8.4f} "
            f"{plain['floor']:>8.4f} {extra / plain['floor']:>11.1f} {plain['peak_rss_mb']:>18.0f} "
            f"{watched['peak_rss_mb'] - plain['peak_rss_mb']:>9.0f}"
        )
    result = stream()
    print(
        f"\n1M-step run (50,000 samples, 10 layers) through the core: {result['us_per_sample']:.0f} µs per sample, "
        f"{result['history_points']} history points kept, peak {result['peak_kb']:.0f} KiB traced, summary {result['summary_kb']:.0f} KiB"
    )


if __name__ == "__main__":
    main()

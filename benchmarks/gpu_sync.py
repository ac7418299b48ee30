"""``python -m benchmarks.gpu_sync``: on CUDA, prove unsampled steps never synchronise the host.

Every unsampled step runs under ``torch.cuda.set_sync_debug_mode("error")``,
which raises on any operation that would wait for the GPU; sampled steps (the
one transfer gradwatch makes) run in the normal mode. Exits non-zero on a
hidden sync or when no GPU is present.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from gradwatch.integrations.pytorch import watch


def main(steps: int = 200) -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.Sigmoid(), nn.Linear(1024, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    x, y = torch.randn(256, 784, device=device), torch.randint(0, 10, (256,), device=device)
    watcher = watch(model, optimizer, print_report=False, warn_on=None, strict=True)
    unsampled = 0
    for _ in range(steps):
        sampled = watcher.session.should_sample(watcher.global_step)
        torch.cuda.set_sync_debug_mode(0 if sampled else "error")
        try:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            watcher.step(loss)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        unsampled += not sampled
    report = watcher.close()
    print(f"ok: {unsampled} unsampled steps without a host sync; {len(report.layers[0]['history']['step'])} samples read")
    return 0


if __name__ == "__main__":
    sys.exit(main())

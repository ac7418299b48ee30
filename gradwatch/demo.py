"""``gradwatch demo``: a deep sigmoid MLP with vanishing gradients, then the same model remedied.

Data is generated (a fixed random "teacher" network labels Gaussian inputs),
so the demo needs no download and gives the same numbers on every run. The
demo is a PyTorch program: importing this module needs torch (``import
gradwatch`` does not import it).
"""

from __future__ import annotations

from pathlib import Path

from gradwatch.integrations._torch import torch
from gradwatch.integrations.pytorch import watch

DEPTH, WIDTH, FEATURES, CLASSES, BATCH = 10, 64, 16, 3, 64


def teacher_data(n: int = 4096, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by a random two-layer tanh network: learnable, not linear."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=gen)
    w1 = torch.randn(FEATURES, 32, generator=gen) / FEATURES**0.5
    w2 = torch.randn(32, CLASSES, generator=gen)
    return x, torch.tanh(x @ w1).matmul(w2).argmax(1)


def deep_mlp(activation: type[torch.nn.Module], *, remedied: bool, seed: int = 0) -> torch.nn.Sequential:
    """DEPTH hidden layers of WIDTH units; ``remedied`` adds BatchNorm and He initialisation."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = FEATURES
    for _ in range(DEPTH):
        linear = torch.nn.Linear(width, WIDTH)
        if remedied:
            torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            torch.nn.init.zeros_(linear.bias)
        layers += [linear, torch.nn.BatchNorm1d(WIDTH), activation()] if remedied else [linear, activation()]
        width = WIDTH
    layers.append(torch.nn.Linear(width, CLASSES))
    return torch.nn.Sequential(*layers)


def train(model: torch.nn.Module, summary: Path, *, steps: int, seed: int = 0) -> float:
    """Train with SGD under gradwatch; returns held-out accuracy."""
    x, y = teacher_data(seed=seed)
    x_train, y_train, x_test, y_test = x[:3072], y[:3072], x[3072:], y[3072:]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    with watch(model, optimizer, summary_path=summary) as watcher:
        for _ in range(steps):
            batch = torch.randint(0, len(x_train), (BATCH,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            watcher.step(loss)
    model.eval()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def run_demo(out: str | Path = "gradwatch-demo", *, steps: int = 300) -> dict[str, float]:
    """Train the sick and the remedied model, print both reports, write both summaries."""
    out = Path(out)
    results = {}
    for name, model in (
        ("sigmoid", deep_mlp(torch.nn.Sigmoid, remedied=False)),
        ("remedied", deep_mlp(torch.nn.ReLU, remedied=True)),
    ):
        print(f"\n=== training the {name} model ({DEPTH} hidden layers, {steps} steps) ===", flush=True)
        results[name] = train(model, out / f"{name}.json", steps=steps)
        print(f"held-out accuracy of the {name} model: {results[name]:.1%}  (summary: {out / f'{name}.json'})")
    _pictures(out, list(results))
    print(
        f"\nsame data, same optimizer: {results['sigmoid']:.1%} with Sigmoid, {results['remedied']:.1%} with "
        "ReLU + He init + BatchNorm, the top remedies gradwatch ranked for the sick model."
    )
    return results


def _pictures(out: Path, names: list[str]) -> None:
    """PNG and HTML next to each summary, where matplotlib is installed."""
    from gradwatch import load_summary
    from gradwatch.html import render_html
    from gradwatch.plot import plot_report

    for name in names:
        report = load_summary(out / f"{name}.json")
        try:
            png = plot_report(report, out / f"{name}.png")
        except ImportError as exc:
            print(f"no pictures: {exc}")
            return
        (out / f"{name}.html").write_text(render_html(report, png), encoding="utf-8")
        print(f"pictures: {out / f'{name}.png'}, {out / f'{name}.html'}")

"""gradwatch never breaks the user's training and never loses the summary."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jsonschema
import pytest
import torch
from torch import nn

import gradwatch.console
from gradwatch import load_summary
from gradwatch.detectors import VanishingGradients
from gradwatch.integrations.pytorch import watch
from gradwatch.integrations.torch_probes import ForwardProbes
from gradwatch.integrations.torch_stats import TorchCollector
from gradwatch.report import Report
from gradwatch.summary_check import schema_path


def train(model, optimizer, watcher, steps=25, make_input=lambda: torch.randn(16, 8)):
    for _ in range(steps):
        out = model(make_input())
        loss = out.float().square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)


def _raise(*args, **kwargs):
    raise RuntimeError("injected fault")


FAULTS = {
    "pytorch collector": (TorchCollector, "capture_gradients"),
    "activation hook": (ForwardProbes, "_hold"),
    "loss": (TorchCollector, "add_loss"),
    "detector vanishing_gradients": (VanishingGradients, "observe"),
    "JSON writer": (Report, "write_json"),
    "console report": (gradwatch.console, "build"),
}


@pytest.mark.parametrize("part", FAULTS)
def test_fault_in_each_part_warns_once_and_training_finishes(monkeypatch, tmp_path, part):
    owner, name = FAULTS[part]
    monkeypatch.setattr(owner, name, _raise)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch(model, optimizer, summary_path=tmp_path / "gw.json") as watcher:
            train(model, optimizer, watcher)
    faults = [str(w.message) for w in caught if "failed and is now disabled" in str(w.message)]
    assert faults == [f"gradwatch: {part} failed and is now disabled (RuntimeError: injected fault); training continues"]
    assert watcher.close().steps == 25


def test_killed_run_leaves_a_valid_summary(tmp_path):
    path = tmp_path / "gw.json"
    script = textwrap.dedent(
        f"""
        import torch
        from torch import nn
        from gradwatch.integrations.pytorch import watch
        model = nn.Sequential(nn.Linear(8, 32), nn.Sigmoid(), nn.Linear(32, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        watcher = watch(model, optimizer, summary_path={str(path)!r}, every_n_steps=5, autosave_every_n_steps=10)
        for step in range(10**7):
            loss = model(torch.randn(16, 8)).square().mean()
            optimizer.zero_grad(); loss.backward(); optimizer.step(); watcher.step(loss)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or load_summary(path).steps < 100):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
    summary = json.loads(path.read_text())
    jsonschema.validate(summary, json.loads(schema_path().read_text()))
    assert summary["steps"] >= 100 and process.returncode == -signal.SIGKILL


class Tied(nn.Module):
    """Input embedding shared with the output projection, as in language models."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.hidden = nn.Linear(8, 8)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("counts", torch.zeros(3, dtype=torch.long))
        self.register_buffer("phase", torch.zeros(2, dtype=torch.complex64))
        self.empty = nn.Linear(8, 0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.hidden(self.embed(tokens)))
        return self.out(hidden) + self.empty(hidden).sum()


ODD = {
    "tied weights, buffers, zero-size layer": lambda: (Tied(), lambda: torch.randint(0, 10, (16,))),
    "sparse gradients": lambda: (nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2)), lambda: torch.randint(0, 10, (16,))),
    "bfloat16 model": lambda: (
        nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2)).to(torch.bfloat16),
        lambda: torch.randn(16, 8, dtype=torch.bfloat16),
    ),
    "no activation at all": lambda: (nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)), lambda: torch.randn(16, 8)),
}


@pytest.mark.parametrize("case", ODD)
def test_odd_models_train_and_report_without_internal_errors(case):
    model, make_input = ODD[case]()
    sparse = case == "sparse gradients"
    groups = [{"params": [p for p in model.parameters()][:1]}, {"params": list(model.parameters())[1:], "lr": 0.001}]
    optimizer = torch.optim.SGD(groups, lr=0.01) if not sparse else torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch(model, optimizer, print_report=False, strict=True) as watcher:
            train(model, optimizer, watcher, make_input=make_input)
    assert not [w for w in caught if "failed" in str(w.message)]
    report = watcher.close()
    assert report.steps == 25 and report.layers


MODEL_SOURCE = """
import torch
from torch import nn


class Recurrent(nn.Module):  # every kind of hook gradwatch puts on a model: first-layer input, recurrent input, activations
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])
"""


def test_a_watched_model_can_be_saved_whole_and_copied(tmp_path, monkeypatch):
    """``torch.save(model)`` mid-run works and the file loads where gradwatch is not installed;
    a deep copy (an EMA model, say) trains without reporting into the run."""
    (tmp_path / "user_model.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    model = __import__("user_model").Recurrent()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 5, 8)
    with watch(model, optimizer, every_n_steps=1, print_report=False, strict=True) as watcher:
        train(model, optimizer, watcher, steps=3, make_input=lambda: x)
        torch.save(model, tmp_path / "model.pt")
        twin = copy.deepcopy(model)
        twin(x).square().mean().backward()  # a training-mode forward on a sampled step
        assert not watcher.cycle.collector.probes.seen.activations, "the copy reported into the run"
        train(model, optimizer, watcher, steps=2, make_input=lambda: x)
    assert watcher.close().steps == 5
    load = f"""
        import sys, torch
        sys.modules["gradwatch"] = None  # as if gradwatch were not installed
        sys.path.insert(0, {str(tmp_path)!r})
        model = torch.load({str(tmp_path / "model.pt")!r}, weights_only=False)
        print(model(torch.randn(4, 5, 8)).shape)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(load)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "torch.Size([4, 2])"

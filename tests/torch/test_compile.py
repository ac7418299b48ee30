"""``watch(torch.compile(model), optimizer)``: the numbers of the eager model, no recompiles on unsampled steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwatch.demo import teacher_data
from gradwatch.integrations.pytorch import watch

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters

STEPS, EVERY = 24, 8  # sampled: 0, 1, 2, 4, 8, 16


def run(compiled: bool) -> tuple[list[dict], list[tuple[int, int]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    net = torch.compile(model, backend="aot_eager") if compiled else model  # dynamo + AOTAutograd, no C++ build
    x, y = teacher_data(512)
    watcher = watch(net, optimizer, print_report=False, warn_on=None, every_n_steps=EVERY)
    graphs = []
    for i in range(STEPS):
        batch = slice(i * 16, (i + 1) * 16)
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)
        graphs.append((counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())))
    return watcher.close().layers, graphs


def test_compiled_model_measures_the_eager_numbers_without_recompiling_unsampled_steps():
    torch.set_num_threads(1)
    eager, _ = run(compiled=False)
    dynamo.reset()
    counters.clear()
    compiled, graphs = run(compiled=True)
    assert [layer["name"] for layer in compiled] == [layer["name"] for layer in eager], "layer names are the model's"
    for got, want in zip(compiled, eager):
        assert got["history"].keys() == want["history"].keys()
        for metric, values in want["history"].items():
            assert got["history"][metric] == pytest.approx(values, rel=1e-5, abs=1e-9), (got["name"], metric)
    assert all(breaks == 0 for _, breaks in graphs), "no graph breaks"
    # Step 0 (sampled, activation hooks armed) and step 3 (the first unsampled one) each compile a graph;
    # after that, neither unsampled nor sampled steps compile anything.
    assert graphs[3][0] == 2 and graphs[-1][0] == 2, graphs

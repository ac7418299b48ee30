"""The plain PyTorch adapter on real tiny models."""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import jsonschema
import pytest
import torch
from torch import nn

from benchmarks.clinic import torch_cases as cases
from gradwatch import GradWatchWarning
from gradwatch.demo import teacher_data
from gradwatch.integrations.pytorch import watch
from gradwatch.integrations.torch_stats import TorchCollector
from gradwatch.summary_check import schema_path

ROOT = Path(__file__).resolve().parents[2]


def loop(model, optimizer, watcher, steps=60, *, call_step=True):
    x, y = teacher_data(512)
    for i in range(steps):
        batch = slice((i * 32) % 480, (i * 32) % 480 + 32)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if call_step:
            watcher.step(loss)


def test_deep_sigmoid_warns_live_and_writes_a_valid_summary(tmp_path):
    model = cases.deep_mlp(nn.Sigmoid, remedied=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch(model, optimizer, summary_path=tmp_path / "gw.json", print_report=False) as watcher:
            loop(model, optimizer, watcher)
    live = [w for w in caught if issubclass(w.category, GradWatchWarning)]
    assert any("vanishing_gradients" in str(w.message) for w in live)
    assert all(w.filename == __file__ for w in live), "warnings point at the user's training loop"
    summary = json.loads((tmp_path / "gw.json").read_text())
    jsonschema.validate(summary, json.loads(schema_path().read_text()))
    assert summary["framework"] == "pytorch" and summary["steps"] == 60
    vanishing = next(f for f in summary["findings"] if f["symptom"] == "vanishing_gradients")
    assert vanishing["severity"] in ("warning", "critical") and vanishing["layers"][0] == "model[0]"
    assert vanishing["remedies"][0]["id"] == "relu_family"
    assert "10 of your 11 layers are followed by Sigmoid" in vanishing["remedies"][0]["why"]
    assert vanishing["evidence"]["saturated_share"], "sigmoid saturation is measured as mechanism evidence"


def test_statistics_match_a_direct_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    collector = TorchCollector(model)
    collector.probes.attach()
    x = torch.randn(256, 4)  # a full window for dead units
    out = model(x)
    hidden = torch.relu(model[0](x))
    loss = out.square().mean()
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    weight = torch.cat([b.flatten() for b in before[:2]]).norm()  # |W| before the step it is compared with
    collector.capture_gradients()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    collector.capture_updates()
    collector.add_loss(loss)
    stats = collector.flush(step=0, lr=0.1)
    first = stats.layers[0]
    grad = torch.cat([model[0].weight.grad.flatten(), model[0].bias.grad.flatten()]).norm()
    assert first.grad_norm == pytest.approx(float(grad), rel=1e-5)
    assert first.update_norm == pytest.approx(0.1 * float(grad), rel=1e-4)
    assert first.weight_norm == pytest.approx(float(weight), rel=1e-5)
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(list(model.parameters())[:2], before)]).norm()
    assert first.update_norm == pytest.approx(float(delta), rel=1e-4)
    dead = float(((hidden > 0).sum(0) == 0).float().mean())
    assert stats.activations[0].dead_share == pytest.approx(dead)
    rows = float((model[0].weight.grad.abs().sum(1) == 0).float().mean())
    assert first.zero_grad_rows == pytest.approx(rows)
    assert stats.loss == pytest.approx(float(loss.detach()))
    assert stats.input_mean_abs == pytest.approx(float(x.abs().mean())) and stats.input_std == pytest.approx(float(x.std()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_every_floating_dtype_is_measured_in_at_least_float32(dtype):
    """float64 is accumulated in float64 (never narrowed), half precision widened to float32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)
    x = torch.randn(64, 4, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, optimizer, print_report=False, warn_on=None, every_n_steps=1, strict=True) as watcher:
        for _ in range(3):
            loss = model(x).float().square().mean()
            optimizer.zero_grad()
            loss.backward()
            grad = torch.cat([model[0].weight.grad.flatten(), model[0].bias.grad.flatten()]).double().norm()
            optimizer.step()
            watcher.step(loss)
    report = watcher.report()
    assert report.sampled_steps == 3 and not report.notes
    assert report.layers[0]["history"]["grad_norm"][-1] == pytest.approx(float(grad), rel=1e-5)


class _Table(nn.Module):
    """A 6×6 parameter of a module that is not a Linear: stacked with the Linear weights of its shape, no units."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(6, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.table


def _spread(weight: torch.Tensor) -> float:
    """The spread of the first four units' weights about their mean over their size, computed directly."""
    rows = weight.detach().flatten(1)[:4].double()
    return float(((rows - rows.mean(0)).square().sum() / rows.square().sum()).sqrt())


def test_a_grouped_convs_units_are_not_compared():
    """Depthwise channels read different inputs: equal filters (an identity start) are no copies."""
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3))
    nn.init.dirac_(model[0].weight, groups=8)
    collector = TorchCollector(model)
    model(torch.randn(2, 8, 6, 6)).sum().backward()
    collector.capture_gradients()
    collector.capture_updates()
    assert [layer.unit_spread is None for layer in collector.flush(step=0).layers] == [True, False]


def test_units_spread_is_zero_for_copies_and_near_one_for_random_units():
    """The spread of a layer's first units about their mean; the weights of copies go on being read."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3),
        nn.Flatten(),
        nn.Linear(216, 6),
        nn.Linear(6, 6),
        _Table(),
        nn.Linear(6, 6),
        nn.Linear(6, 6),
        nn.Linear(6, 1),  # one unit: no spread
    )
    with torch.no_grad():
        model[3].weight.fill_(0.005)  # a constant initialisation
        model[5].weight[:] = model[5].weight[0]  # every unit a copy of the first
        model[6].weight.zero_()  # zero weights: no evidence either way (inputs a batch never sees stay zero)
    collector = TorchCollector(model)
    model(torch.randn(8, 1, 8, 8)).sum().backward()
    collector.capture_gradients()
    collector.capture_updates()
    spreads = {layer.name: layer.unit_spread for layer in collector.flush(step=0).layers}
    assert spreads["model[3]"] < 1e-6 and spreads["model[5]"] < 1e-6
    assert spreads["model[4]"] is None and spreads["model[6]"] is None and spreads["model[7]"] is None
    assert spreads["model[0]"] == pytest.approx(_spread(model[0].weight), rel=1e-5)
    assert spreads["model[2]"] == pytest.approx(_spread(model[2].weight), rel=1e-5) and 0.5 < spreads["model[2]"] < 1.0
    model(torch.randn(8, 1, 8, 8)).sum().backward()
    collector.capture_gradients()
    collector.capture_updates()
    again = {layer.name: layer.unit_spread for layer in collector.flush(step=1).layers}
    assert again["model[0]"] is None and again["model[2]"] is None, "units seen to differ are not read again"
    assert again["model[3]"] < 1e-6 and again["model[5]"] < 1e-6


class _Shifted(nn.Module):
    """A ReLU6 whose output the forward then overwrites in place (legal: its backward reads the input)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x).sub_(100.0)


def test_dead_units_of_many_modules_match_a_direct_computation():
    """Unit maxima of many ReLU modules, reduced in groups of like shape, come in forward order whatever the batch
    size; an output overwritten after its forward is left out once, then measured in its own hook."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),  # channels are the units
        nn.Flatten(),
        nn.Linear(144, 16),
        nn.ReLU(),
        nn.Linear(16, 8),
        nn.ReLU(),
        nn.Linear(8, 16),
        nn.ReLU(),  # the shape of module 4's output again, after another shape
        nn.Linear(16, 8),
        nn.ReLU6(),  # the shape of module 6's output, another kind
        nn.Linear(8, 8),
        _Shifted(),
        nn.Linear(8, 2),
    )
    with torch.no_grad():
        model[5].bias[:6] = -50.0  # six of module 6's eight units never fire
    collector = TorchCollector(model)
    collector.probes.attach()
    modules = ["1", "4", "6", "8", "10", "12.act"]
    names = ["model[1]", "model[4]", "model[6]", "model[8]", "model[10]", "model[12].act"]  # as gradwatch names them
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for module_name, name in zip(modules, names):
        model.get_submodule(module_name).register_forward_hook(lambda module, args, out, name=name: outputs[name].append(out.detach().clone()))
    samples = []
    for rows in (64, 48, 40):
        collector.probes.sampling = True
        model(torch.randn(rows, 1, 8, 8)).square().mean().backward()
        collector.capture_gradients()
        collector.capture_updates()
        model.zero_grad()
        samples.append(collector.flush(step=len(samples)))
    first, _, last = samples
    assert [a.name for a in first.activations] == names[:5], "forward order; the overwritten output is left out"
    assert [(a.name, a.kind) for a in last.activations][3:] == [("model[8]", "ReLU"), ("model[10]", "ReLU6"), ("model[12].act", "ReLU6")]
    assert [a.window for a in last.activations] == [40 * 36] + [88] * 5, "the windows go on across batch sizes"
    for stats, window in ((first, slice(0, 1)), (last, slice(1, 3))):
        for activation in stats.activations:
            kept = outputs[activation.name][window]
            out = torch.cat(kept[-1:] if activation.name == "model[1]" else kept)  # the conv's window is full after one batch
            units = out.transpose(0, 1).flatten(1) if out.dim() == 4 else out.t()
            assert activation.dead_share == pytest.approx(float((units.amax(1) <= 0).float().mean())), activation.name
    assert first.activations[2].dead_share >= 6 / 8


def test_dead_units_are_judged_over_256_rows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    collector = TorchCollector(model)
    collector.probes.attach()
    shares = []
    for _ in range(5):
        collector.probes.sampling = True
        model(torch.randn(64, 4)).square().mean().backward()
        collector.capture_gradients()
        collector.capture_updates()
        model.zero_grad()
        stats = collector.flush(step=0)
        shares.append([(a.dead_share, a.window) for a in stats.activations] + [stats.layers[0].zero_grad_window])
    assert [row[0][1] for row in shares] == [64, 128, 192, 256, 64]  # a window of 256 rows, then a new one
    assert [row[1] for row in shares] == [64, 128, 192, 256, 64]


def test_only_sampled_steps_reach_the_host(monkeypatch):
    flushes = []
    original = TorchCollector.flush
    monkeypatch.setattr(TorchCollector, "flush", lambda self, step, *rest: flushes.append(step) or original(self, step, *rest))
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, optimizer, every_n_steps=10, print_report=False) as watcher:
        loop(model, optimizer, watcher, steps=35)
    assert flushes == [0, 1, 2, 4, 8, 10, 20, 30, 34]  # and one last look at close


def test_frozen_layers_are_never_evidence():
    model = cases.deep_mlp(nn.Sigmoid, remedied=False)
    for layer in list(model)[:-4]:
        layer.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
        loop(model, optimizer, watcher)
    report = watcher.close()
    assert watcher.session.report() is report and watcher.report() is report, "one way to the report on every adapter"
    assert [layer["name"] for layer in report.layers if "grad_norm" in layer["history"]] == ["model[18]", "model[20]"]
    assert report.finding("vanishing_gradients") is None
    assert [layer.trainable for layer in report.facts.layers].count(True) == 2


def test_optimizer_created_after_watch_and_no_step_calls():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    with watch(model, print_report=False) as watcher:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        other = torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=0.1)  # not this model's: ignored
        other.step()
        loop(model, optimizer, watcher, steps=30, call_step=False)
    report = watcher.close()
    assert watcher.optimizer is optimizer
    assert report.steps == 30 and report.facts.optimizer == "Adam"
    assert report.layers[0]["history"]["step"] == [0, 1, 2, 4, 8, 16, 20]


def _small_regression():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def _recorded(monkeypatch, watcher):  # type: ignore[no-untyped-def]
    """The samples the watcher diagnoses from now on, by step."""
    sampled = {}
    observe = watcher.session.observe
    monkeypatch.setattr(watcher.session, "observe", lambda stats: sampled.update({stats.step: stats}) or observe(stats))
    return sampled


@pytest.mark.parametrize("given", [True, False], ids=["optimizer given", "optimizer found"])
@pytest.mark.parametrize("placement", ["after the optimizer", "before the optimizer", "before backward", "never"])
def test_each_sample_holds_its_own_steps_gradients_and_loss(monkeypatch, placement, given):
    """Wherever the loop calls ``watcher.step(loss)`` (or not at all), sample k holds step k's norms and loss,
    whether ``watch()`` was given the optimizer or finds it at its first step."""
    model, optimizer = _small_regression()
    actual, losses = [], []
    with watch(model, optimizer if given else None, every_n_steps=1, print_report=False, warn_on=None) as watcher:
        sampled = _recorded(monkeypatch, watcher)
        for i in range(8):
            loss = model(torch.randn(32, 4) * (i + 1)).square().mean()  # every step's gradients differ
            losses.append(loss.item())
            optimizer.zero_grad()
            if placement == "before backward":
                watcher.step(loss)
            loss.backward()
            actual.append(math.sqrt(sum(p.grad.square().sum().item() for p in model[0].parameters())))
            if placement == "before the optimizer":
                watcher.step(loss)
            optimizer.step()
            if placement == "after the optimizer":
                watcher.step(loss)
    assert sorted(sampled) == list(range(8)) and watcher.global_step == 8
    assert [sampled[k].layers[0].grad_norm for k in range(8)] == pytest.approx(actual, rel=1e-5)
    assert [sampled[k].layers[0].update_norm for k in range(8)] == pytest.approx([0.05 * g for g in actual], rel=1e-4)  # SGD: lr × |g|
    if placement != "never":
        assert [sampled[k].loss for k in range(8)] == pytest.approx(losses, rel=1e-5)


def test_an_update_by_hand_through_the_models_parts_is_measured_step_by_step(monkeypatch):
    """No optimizer, and the loop calls the model's layers, never the model: each step() still ends its own step."""
    model, _ = _small_regression()
    actual, losses = [], []
    with watch(model, every_n_steps=1, print_report=False, warn_on=None) as watcher:
        sampled = _recorded(monkeypatch, watcher)
        for i in range(6):
            loss = model[2](model[1](model[0](torch.randn(32, 4) * (i + 1)))).square().mean()
            losses.append(loss.item())
            loss.backward()
            actual.append(math.sqrt(sum(p.grad.square().sum().item() for p in model[0].parameters())))
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.05 * p.grad
                    p.grad = None
            watcher.step(loss)
    assert sorted(sampled) == list(range(6)) and watcher.global_step == 6
    assert [sampled[k].layers[0].grad_norm for k in range(6)] == pytest.approx(actual, rel=1e-5)
    assert [sampled[k].layers[0].update_norm for k in range(6)] == pytest.approx([0.05 * g for g in actual], rel=1e-4)
    assert [sampled[k].loss for k in range(6)] == pytest.approx(losses, rel=1e-5)


def test_gradient_accumulation_with_a_step_call_per_micro_batch(monkeypatch):
    """step(loss) after every micro-batch, the optimizer every second one: a sample is one optimizer step."""
    model, optimizer = _small_regression()
    actual, losses = [], []
    with watch(model, optimizer, every_n_steps=1, print_report=False, warn_on=None) as watcher:
        sampled = _recorded(monkeypatch, watcher)
        for i in range(12):
            loss = model(torch.randn(32, 4) * (i + 1)).square().mean()
            losses.append(loss.item())
            loss.backward()
            if i % 2 == 1:
                actual.append(math.sqrt(sum(p.grad.square().sum().item() for p in model[0].parameters())))
                optimizer.step()
                optimizer.zero_grad()
            watcher.step(loss)
    assert sorted(sampled) == list(range(6))
    assert [sampled[k].layers[0].grad_norm for k in range(6)] == pytest.approx(actual, rel=1e-5)
    assert [sampled[k].loss for k in range(6)] == pytest.approx([(a + b) / 2 for a, b in zip(losses[::2], losses[1::2])], rel=1e-5)


def test_a_new_optimizer_for_a_second_stage_is_followed_and_noted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    first = torch.optim.SGD(model.parameters(), lr=0.05)
    with watch(model, first, every_n_steps=5, print_report=False, warn_on=None) as watcher:
        loop(model, first, watcher, steps=10)
        second = torch.optim.Adam(model.parameters(), lr=1e-3)  # fine-tuning stage
        loop(model, second, watcher, steps=30)
    report = watcher.close()
    assert watcher.optimizer is second and report.facts.optimizer == "Adam"
    assert report.steps == 40 and max(report.layers[0]["history"]["step"]) >= 35
    assert any("another optimizer (Adam)" in note and "step 10 was not measured" in note for note in report.notes)


def test_watching_a_model_again_closes_the_earlier_watcher():
    """A notebook cell run twice: one watcher measures, the earlier one is closed, not left hooked."""
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    first = watch(model, optimizer, print_report=False)
    with pytest.warns(GradWatchWarning, match="already watched; the earlier watcher is closed"):
        second = watch(model, optimizer, print_report=False)
    assert first.session.final is not None and first.session.final.steps == 0
    assert len(model[1]._forward_hooks) == 1 and len(optimizer._optimizer_step_pre_hooks) == 1
    loop(model, optimizer, second, steps=5)
    assert second.close().steps == 5 and first.global_step == 0


@pytest.mark.parametrize("optimizer_first", [True, False])
def test_lazy_modules_are_measured_once_they_have_parameters(optimizer_first):
    """d2l-style ``nn.LazyLinear`` models: watch() before their first forward, with or without the optimizer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05) if optimizer_first else None
    with watch(model, optimizer, every_n_steps=5, print_report=False, warn_on=None) as watcher:
        if optimizer is None:
            model(torch.zeros(1, 16))  # the dry run the PyTorch docs advise before making the optimizer
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        loop(model, optimizer, watcher, steps=20)
    report = watcher.close()
    trained = {layer["name"]: layer["history"] for layer in report.layers if "grad_norm" in layer["history"]}
    assert set(trained) == {"model[0]", "model[2]"} and report.sampled_steps == 7 and report.facts.layers[0].fan_in == 16


def test_injected_collector_fault_warns_once_and_training_continues(monkeypatch):
    def boom(self, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(TorchCollector, "capture_gradients", boom)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch(model, optimizer, print_report=False) as watcher:
            loop(model, optimizer, watcher, steps=30)
    faults = [w for w in caught if "failed and is now disabled" in str(w.message)]
    assert len(faults) == 1 and "RuntimeError: injected" in str(faults[0].message)
    assert watcher.close().steps == 30
    with pytest.raises(RuntimeError, match="injected"):
        with watch(model, optimizer, print_report=False, strict=True) as watcher:
            loop(model, optimizer, watcher, steps=2)


def test_close_removes_every_hook_and_releases_the_model():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    watcher = watch(model, optimizer, print_report=False)
    loop(model, optimizer, watcher, steps=5)
    watcher.close()
    assert not model[1]._forward_hooks and not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    ref = weakref.ref(model)
    del model, optimizer, watcher
    gc.collect()
    assert ref() is None


class _Saved:
    """What autograd saved for backward (a detached copy: no cycle through the output's own node), boxed so that
    a weak reference tells when the graph is freed."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor.detach()


def test_a_sampled_forward_without_backward_keeps_no_graph_alive():
    """ReLU outputs held for grouped reductions are reduced by the end of the forward pass: a graph the training
    code drops (a forward in train mode that never reaches backward) is freed at once, not at the next sample."""
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    saved: list[weakref.ref[_Saved]] = []

    def pack(tensor: torch.Tensor) -> _Saved:
        box = _Saved(tensor)
        saved.append(weakref.ref(box))
        return box

    with watch(model, optimizer, every_n_steps=1, print_report=False) as watcher:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
            out = model(torch.randn(32, 16))
        assert saved and watcher.cycle.collector.probes.measures("model[3]")
        del out
        assert [ref for ref in saved if ref() is not None] == []
        loop(model, optimizer, watcher, steps=2)
    probes = TorchCollector(model).probes  # a loop that calls only the model's parts: no end of its forward
    probes.attach()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        out = model[4](model[3](model[2](model[1](model[0](torch.randn(32, 16))))))
    assert probes.measures("model[3]")
    del out
    assert [ref for ref in saved if ref() is not None] == []
    assert len(probes.take().dead) == 2


def test_summary_is_written_when_training_raises(tmp_path):
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(KeyboardInterrupt):
        with watch(model, optimizer, summary_path=tmp_path / "gw.json", print_report=False) as watcher:
            loop(model, optimizer, watcher, steps=10)
            raise KeyboardInterrupt
    assert json.loads((tmp_path / "gw.json").read_text())["steps"] == 10


def test_watcher_state_dict_round_trip_continues_the_diagnosis():
    def run(split):
        model = cases.deep_mlp(nn.Sigmoid, remedied=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        watcher = watch(model, optimizer, print_report=False, warn_on=None)
        loop(model, optimizer, watcher, steps=split)
        if split < 60:
            state = json.loads(json.dumps(watcher.state_dict()))  # survives a JSON checkpoint
            watcher.close()
            watcher = watch(model, optimizer, print_report=False, warn_on=None)
            watcher.load_state_dict(state)
            loop(model, optimizer, watcher, steps=60 - split)
        return watcher.close().to_summary()

    resumed, straight = run(25), run(60)
    assert resumed["steps"] == straight["steps"] == 60
    assert [(f["symptom"], f["first_step"]) for f in resumed["findings"]] == [(f["symptom"], f["first_step"]) for f in straight["findings"]]


def test_bad_arguments_fail_with_one_line_errors():
    with pytest.raises(TypeError, match="watch\\(\\) needs a torch.nn.Module, got str"):
        watch("model")
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 1 or None, got 0"):
        watch(nn.Linear(2, 2), every_n_steps=0)
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="^the optimizer trains none of the model's parameters: pass the one"):
        watch(nn.Linear(2, 2), other)
    with pytest.raises(ValueError, match="^watch\\(\\) got a Sequential with no parameters: there is nothing to train"):
        watch(nn.Sequential(nn.ReLU(), nn.Flatten()))


def test_an_optimizer_class_of_the_users_own_is_measured_as_an_update_by_hand():
    """A hand-written optimizer (as in d2l or a course) has no step hooks: steps end at watcher.step()."""

    class PlainSGD:
        def __init__(self, params, lr):  # type: ignore[no-untyped-def]
            self.params, self.lr = list(params), lr

        def zero_grad(self):  # type: ignore[no-untyped-def]
            for p in self.params:
                p.grad = None

        @torch.no_grad()
        def step(self):  # type: ignore[no-untyped-def]
            for p in self.params:
                p -= self.lr * p.grad

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = PlainSGD(model.parameters(), lr=0.05)
    with watch(model, optimizer, every_n_steps=5, print_report=False, warn_on=None) as watcher:
        loop(model, optimizer, watcher, steps=20)
    report = watcher.close()
    history = report.layers[0]["history"]
    assert report.steps == 20 and history["step"] == [0, 1, 2, 4, 5, 10, 15]
    assert all(u is not None and u > 0 for u in history["update_norm"])
    assert any("PlainSGD is not a torch.optim.Optimizer" in note for note in report.notes)
    with pytest.raises(TypeError, match="an object with a step\\(\\) method, or None; got int"):
        watch(model, 3)
    wrapped = type("Wrapper", (), {"optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "step": lambda self: None})()
    with watch(model, wrapped, print_report=False) as watcher:
        assert watcher.optimizer is wrapped.optimizer  # a wrapper (Lightning's, say) is seen through


@pytest.mark.parametrize("constant", [True, False])
def test_a_constant_initialisation_is_named_and_a_random_one_is_not(constant):
    """Every weight zero: the sigmoid units of each layer stay copies, and the loss sits at chance (ln 3)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 3))
    if constant:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradWatchWarning)
        with watch(model, optimizer, print_report=False) as watcher:
            loop(model, optimizer, watcher, steps=40)
    copies = [f for f in watcher.report().findings if f.symptom == "early_stagnation" and "unit_spread" in f.evidence]
    if constant:
        assert copies and copies[0].first_step == 2 and set(copies[0].layers) == {"model[0]", "model[2]"}
        assert copies[0].remedies[0].id == "random_init"
    else:
        assert not copies


def test_a_model_that_is_never_trained_gets_no_clean_bill():
    """watch(model), then the loop trains a re-created model: forty steps, none of them measured."""
    watched = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    trained = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.05)
    with watch(watched, print_report=False) as watcher:
        loop(trained, optimizer, watcher, steps=40)
    report = watcher.close()
    assert report.steps == 40 and report.sampled_steps == 0 and report.too_little_measured
    assert any(note.startswith("no step could be measured") for note in report.notes)


def test_time_profile_matches_autograd_and_leaves_training_unchanged():
    torch.manual_seed(0)
    rnn, head = nn.RNN(3, 8, batch_first=True), nn.Linear(8, 2)
    model = nn.Sequential()  # container so the collector sees both layers
    model.rnn, model.head = rnn, head
    x = torch.randn(4, 12, 3)

    def loss_of(inputs):
        return head(rnn(inputs)[0][:, -1]).square().mean()

    reference = x.clone().requires_grad_(True)
    loss_of(reference).backward()
    expected = reference.grad.square().sum((0, 2)).sqrt()
    expected_param_grads = [p.grad.clone() for p in rnn.parameters()]
    model.zero_grad()

    collector = TorchCollector(model)
    collector.probes.attach()
    loss_of_model = head(model.rnn(x)[0][:, -1]).square().mean()
    loss_of_model.backward()
    for p, g in zip(rnn.parameters(), expected_param_grads):
        assert torch.allclose(p.grad, g)
    collector.capture_gradients()
    collector.capture_updates()
    profile = collector.flush(step=0).sequences[0]
    assert profile.name == "rnn" and len(profile.grad_by_step) == 12
    assert profile.grad_by_step == pytest.approx(expected.tolist(), rel=1e-5)


@pytest.mark.parametrize("fan_in, kept", [(2048, 1 / 32), (256, 1 / 8)])  # 2M weights: 1/64 kept; 262k: 2^14 kept
def test_update_of_a_large_parameter_is_estimated_from_a_fixed_subset(fan_in, kept):
    torch.manual_seed(0)
    layer = nn.Linear(fan_in, 1024)
    collector = TorchCollector(layer)
    layer(torch.randn(8, fan_in)).square().mean().backward()
    before = [p.detach().clone() for p in layer.parameters()]
    collector.capture_gradients()
    assert sum(t.numel() for t in collector._sample.before[None]) < layer.weight.numel() * kept, "no full copy is kept"
    with torch.no_grad():
        for p in layer.parameters():
            p -= 0.1 * p.grad + 1e-4 * torch.randn_like(p)
    collector.capture_updates()
    exact = torch.cat([(p.detach() - b).flatten() for p, b in zip(layer.parameters(), before)]).norm()
    assert collector.flush(step=0).layers[0].update_norm == pytest.approx(float(exact), rel=0.02)


def test_a_loop_that_updates_weights_by_hand_is_measured():
    """No torch.optim optimizer: the backward pass and watcher.step() delimit the step (d2l-style SGD)."""
    model = cases.deep_mlp(nn.Sigmoid, remedied=False)
    x, y = teacher_data(512)
    seen = []
    with watch(model, print_report=False, warn_on=None) as watcher:
        for i in range(60):
            batch = slice((i * 32) % 480, (i * 32) % 480 + 32)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            with torch.no_grad():
                if i == 0:
                    seen = [float(torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()) for layer in (model[0], model[-1])]
                for p in model.parameters():
                    p -= 0.05 * p.grad
                    p.grad.zero_()  # zeroed inside the update, before watcher.step
            watcher.step(loss)
    report = watcher.report()
    assert report.sampled_steps == 8 and report.steps == 60  # steps 0, 1, 2, 4, 8, 16, 20, 40
    first, last = report.layers[0]["history"], next(layer for layer in report.layers if layer["name"] == "model[20]")["history"]
    assert first["grad_norm"][0] == pytest.approx(seen[0], rel=1e-5)
    assert last["grad_norm"][0] == pytest.approx(seen[1], rel=1e-5)
    assert last["update_norm"][0] == pytest.approx(0.05 * seen[1], rel=1e-4)
    assert report.finding("vanishing_gradients") is not None


def test_watch_without_steps_gives_no_clean_bill():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with watch(model, print_report=False) as watcher:
        model(torch.randn(8, 4)).sum()  # no backward, no step
    report = watcher.report()
    assert report.too_little_measured and not report.findings
    assert any("call watcher.step(loss)" in note for note in watcher.close().notes)


def test_gradient_norm_before_the_users_clipping_is_measured():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = teacher_data(64)
    samples, totals = [], []
    original = TorchCollector.flush

    def spy(self, step, *rest):  # type: ignore[no-untyped-def]
        stats = original(self, step, *rest)
        samples.append(stats)
        return stats

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TorchCollector, "flush", spy)
        with watch(model, optimizer, print_report=False) as watcher:
            for _ in range(3):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                totals.append(float(nn.utils.clip_grad_norm_(model.parameters(), 0.01)))
                optimizer.step()
                watcher.step()
    for stats, total in zip(samples, totals):
        assert stats.grad_norm_unclipped == pytest.approx(total, rel=1e-5)
        clipped = sum(layer.grad_norm**2 for layer in stats.layers) ** 0.5
        assert clipped == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("clip", [False, True])
def test_gradients_are_read_again_only_when_the_training_code_changed_them(clip, monkeypatch):
    """One read at the end of backward serves the optimizer step too, unless clipping rewrote the gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = teacher_data(64)
    reads, original = [], TorchCollector._read_gradients
    monkeypatch.setattr(TorchCollector, "_read_gradients", lambda self: reads.append(1) or original(self))
    norms = []
    with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
            optimizer.step()
            watcher.step()
    assert len(reads) == (6 if clip else 3)
    measured = [
        math.sqrt(sum(g**2 for g in h))
        for h in zip(*(layer["history"]["grad_norm"] for layer in watcher.report().layers if "grad_norm" in layer["history"]))
    ]
    assert measured == pytest.approx(norms, rel=1e-5), "the norms are those the optimizer stepped with"


def test_a_closure_optimizer_is_measured_from_the_gradients_its_step_made():
    """LBFGS evaluates the loss and its gradients inside step(): there are none before it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    x, y = teacher_data(128)

    def closure():  # type: ignore[no-untyped-def]
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
        for _ in range(4):
            watcher.step(optimizer.step(closure))
    history = watcher.report().layers[0]["history"]
    assert history["step"] == [0, 1, 2] and all(g is not None and g > 0 for g in history["grad_norm"])


def test_a_vae_with_a_summed_loss_raises_no_alarm():
    """A loss summed over the batch and the pixels (the usual VAE objective) gives gradients far above
    the weights from the first step on; Adam takes them in stride and the model learns."""
    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    centres, radii = torch.rand(1024, 2, 1, 1) * 10 + 3, torch.rand(1024, 1, 1) * 3 + 2
    images = ((rows - centres[:, 0]).square() + (cols - centres[:, 1]).square() < radii.square()).float().flatten(1)  # discs
    encoder, mean, log_var = nn.Linear(256, 128), nn.Linear(128, 8), nn.Linear(128, 8)
    decoder = nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 256))
    model = nn.ModuleList([encoder, mean, log_var, decoder])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    with watch(model, optimizer, every_n_steps=4, print_report=False, warn_on=None) as watcher:
        for _ in range(3):
            for x in images.split(64):
                hidden = torch.relu(encoder(x))
                mu, lv = mean(hidden), log_var(hidden)
                logits = decoder(mu + torch.randn_like(mu) * torch.exp(0.5 * lv))
                kl = -0.5 * torch.sum(1 + lv - mu.square() - lv.exp())
                loss = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") + kl
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                watcher.step(loss)
                losses.append(loss.item())
    assert sum(losses[-8:]) < 0.7 * sum(losses[:8])
    assert [f.symptom for f in watcher.report().findings] == []


@pytest.mark.parametrize("lr", [1e-2, 1e-3])
def test_regression_on_targets_in_the_thousands_raises_no_alarm(lr):
    """Raw targets in the thousands under MSE: gradients dwarf the weights and grow while Adam fits them."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2048, 8, generator=generator) * 10
    y = (x @ torch.tensor([300.0, -200, 150, 80, 0, 0, 40, 10]) + 500).unsqueeze(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
        for _ in range(10):
            for batch in range(0, 2048, 64):
                loss = nn.functional.mse_loss(model(x[batch : batch + 64]), y[batch : batch + 64])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                watcher.step(loss)
                losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert [f.symptom for f in watcher.report().findings] == []


def test_a_healthy_lbfgs_fit_raises_no_alarm():
    """L-BFGS moves a small layer by more than its norm in its first steps, by design: that is no explosion."""
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 200).unsqueeze(1)
    y = torch.sin(2 * x)
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=10)

    def closure():  # type: ignore[no-untyped-def]
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    with watch(model, optimizer, every_n_steps=1, print_report=False, warn_on=None) as watcher:
        losses = []
        for _ in range(15):
            losses.append(float(optimizer.step(closure)))
            watcher.step(losses[-1])
    report = watcher.report()
    assert losses[-1] < 0.01 * losses[0] and report.sampled_steps >= 10
    assert [f.symptom for f in report.findings] == []


def test_binding_to_the_first_optimizer_runs_its_pre_hook_once_per_step(monkeypatch):
    from gradwatch.integrations.pytorch import Watcher

    calls = []
    original = Watcher._pre_hook
    monkeypatch.setattr(Watcher, "_pre_hook", lambda self, *a: calls.append(self.global_step) or original(self, *a))
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    with watch(model, print_report=False) as watcher:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)  # created after watch()
        loop(model, optimizer, watcher, steps=3)
    assert calls == [0, 1, 2] and watcher.report().sampled_steps == 3


def test_without_torch_the_adapter_says_how_to_install_it():
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None\ntry:\n    import gradwatch.integrations.pytorch\nexcept ImportError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "gradwatch[torch]"' in out


def test_the_stored_teacher_arrays_are_the_demos_teacher_data():
    from benchmarks.clinic.data import teacher_arrays

    x, y = teacher_data(2048)
    stored_x, stored_y = teacher_arrays()
    assert (stored_x == x.numpy()).all() and (stored_y == y.numpy()).all()


def test_without_the_end_of_backward_callback_the_optimizer_step_still_reads(monkeypatch):
    """An autograd engine that refuses queued callbacks costs the pre-clip total, not the collector."""
    real = torch.autograd.Variable._execution_engine

    class Refusing:  # the real engine, except that it takes no queued callback
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def queue_callback(self, callback):  # type: ignore[no-untyped-def]
            raise RuntimeError("no callbacks here")

    monkeypatch.setattr(torch.autograd.Variable, "_execution_engine", Refusing())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = teacher_data(64)
    with pytest.warns(GradWatchWarning, match="end-of-backward hook failed"):
        with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
            for _ in range(4):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                watcher.step()
    report = watcher.report()
    assert report.sampled_steps == 3 and not report.too_little_measured  # steps 0, 1 and 2
    assert all("grad_norm" in layer["history"] for layer in report.layers if layer["name"] in ("0", "2"))


def test_unsampled_steps_add_the_loss_in_place_and_leave_the_users_loss_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 4)
    sums, losses = [], []
    with watch(model, optimizer, every_n_steps=10, print_report=False, warn_on=None) as watcher:
        for step in range(10):
            loss = model(x).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            kept = loss.item()
            watcher.step(loss)
            losses.append((loss, kept))
            if step in (5, 6, 7):  # between the samples at steps 4 and 8
                sums.append(watcher.cycle.collector._loss_tensor)
    assert len({id(t) for t in sums}) == 1, "unsampled steps add into one tensor: no allocation per step"
    assert all(loss.item() == kept for loss, kept in losses), "the training loop's loss tensors are untouched"
    assert float(sums[-1]) == pytest.approx(sum(kept for _, kept in losses[5:9]), rel=1e-6)  # the sample at step 8 holds 5..8


def test_a_watched_model_can_be_traced_and_exported_in_eval_mode():
    """The FAQ's promise: torch.jit.trace and torch.export see through gradwatch's hooks, and training goes on."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, optimizer, every_n_steps=1, print_report=False, warn_on=None) as watcher:
        x = torch.randn(2, 4)
        model.eval()
        traced, exported = torch.jit.trace(model, x), torch.export.export(model, (x,))
        model.train()
        assert torch.allclose(traced(x), model(x)) and torch.allclose(exported.module()(x), model(x))
        for _ in range(3):
            loss = model(torch.randn(16, 4)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            watcher.step(loss)
    assert watcher.report().sampled_steps == 3


class _Scaled(nn.Module):
    """A linear layer under two learnt scalars (a temperature and an offset, as in CLIP's logit scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 3)
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.offset = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale + self.offset


def test_scalar_parameters_are_measured():
    torch.manual_seed(0)
    model = _Scaled()
    collector = TorchCollector(model)
    x, y = teacher_data(64)
    nn.functional.cross_entropy(model(x), y).backward()
    collector.capture_gradients()
    collector.capture_updates()
    root = collector.flush(step=0).layers[0]  # the model's own parameters, under its class name
    expected = float(torch.stack([model.scale.grad, model.offset.grad]).norm())
    assert root.grad_norm == pytest.approx(expected, rel=1e-5) and root.weight_norm == pytest.approx(float(torch.tensor([2.0, 0.5]).norm()))


def test_a_watcher_never_closed_reports_and_writes_at_exit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom torch import nn\nfrom gradwatch.integrations.pytorch import watch\n"
        "model = nn.Linear(4, 2)\noptimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        f"watcher = watch(model, optimizer, summary_path={str(tmp_path / 'gw.json')!r})\n"
        "for _ in range(12):\n"
        "    loss = model(torch.randn(8, 4)).square().mean()\n"
        "    optimizer.zero_grad(); loss.backward(); optimizer.step(); watcher.step(loss)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "a watcher was never closed; it is closed at exit" in done.stderr and "gradwatch · pytorch" in done.stderr
    summary = json.loads((tmp_path / "gw.json").read_text())
    assert summary["steps"] == 12 and "closed at interpreter exit: the script never closed the watcher" in summary["notes"]

"""Remedy trials on real tiny PyTorch models: which variant cures, what cannot be tried, and why."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.clinic.torch_cases import HIDDEN, FunctionalReLUNet, he, mlp
from gradwatch.demo import deep_mlp, teacher_data
from gradwatch.integrations.pytorch import trial
from gradwatch.integrations.torch_trial import _Runner, plan_gated_rnn
from gradwatch.trial import Recipe, combines, load_trial, trial_schema_path

STEPS = 200
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = teacher_data(2048)
    gen = torch.Generator().manual_seed(0)
    return [(x[i], y[i]) for i in (torch.randint(0, len(x), (64,), generator=gen) for _ in range(STEPS))]


def sgd(lr: float, **options: float):
    return lambda params: torch.optim.SGD(params, lr=lr, **options)


def _accounted_for(result) -> None:
    """Every ranked remedy became a row or is listed as not applicable, with a reason."""
    tried = {remedy for row in result.rows for remedy in row.remedies}
    skipped = {entry.remedy for entry in result.not_applicable}
    assert set(result.ranked) <= tried | skipped
    assert all(entry.reason for entry in result.not_applicable)


def test_deep_sigmoid_mlp_is_cured_by_the_activation_or_init_variant_and_the_users_model_is_untouched(batches, tmp_path):
    users_model = deep_mlp(nn.Sigmoid, remedied=False)
    before = copy.deepcopy(users_model.state_dict())
    result = trial(
        lambda: copy.deepcopy(users_model), sgd(0.05, momentum=0.9), batches, F.cross_entropy, STEPS,
        print_report=False, summary_dir=tmp_path / "runs",
    )  # fmt: skip
    assert "vanishing_gradients" in result.baseline.symptoms_after
    best = result.best
    assert best is not None and {"relu_family", "matched_init"} & set(best.remedies), best
    assert result.cures(best) and best.loss_ratio < 0.7
    assert any(row.remedies == ("relu_family", "matched_init") and result.cures(row) for row in result.rows)
    assert {"skip_connections", "layerwise_pretraining"} <= {entry.remedy for entry in result.not_applicable}
    _accounted_for(result)
    assert all(type(m) is not nn.ReLU for m in users_model.modules()), "the user's model keeps its Sigmoids"
    assert all(torch.equal(before[k], v) for k, v in users_model.state_dict().items())
    assert (tmp_path / "runs" / "baseline.json").exists() and (tmp_path / "runs" / "variant-1.json").exists()
    data = json.loads(result.write_json(tmp_path / "trial.json").read_text())
    jsonschema.validate(data, json.loads(trial_schema_path().read_text()))
    assert load_trial(tmp_path / "trial.json") == result


def test_dead_relu_is_cured_by_leaky_relu_or_matched_init(batches):
    def dead() -> nn.Module:
        model = mlp([16, 64, 64, 64, 3])  # PyTorch's default init, not He
        nn.init.constant_(model[2].bias, -6.0)
        return model

    result = trial(dead, sgd(0.05, momentum=0.9), batches, F.cross_entropy, STEPS, print_report=False)
    assert result.baseline.symptoms_after == ("dead_relu",)
    assert result.ranked[0] == "leaky_relu"
    leaky = next(row for row in result.rows if row.remedies == ("leaky_relu",))
    assert leaky.change.startswith("ReLU → LeakyReLU(0.1) in 3 modules") and "dead_relu" not in leaky.symptoms_after
    assert any(result.cures(row) for row in result.rows if {"leaky_relu", "matched_init"} & set(row.remedies))
    assert result.best is not None and result.cures(result.best)
    _accounted_for(result)


def test_a_learning_rate_of_1e_6_is_cured_by_the_learning_rate_variant(batches):
    result = trial(lambda: mlp(HIDDEN, init=he), sgd(1e-6), batches, F.cross_entropy, STEPS, max_variants=2, print_report=False)
    assert result.baseline.symptoms_after == ("early_stagnation",)
    assert result.ranked[0] == "raise_lr" and [row.remedies for row in result.rows] == [("raise_lr",), ("raise_lr",)]
    assert any(entry.reason == "not tried: beyond max_variants=2" for entry in result.not_applicable), "cut, not dropped"
    assert result.best is not None and result.best.remedies[0] == "raise_lr" and result.cures(result.best)
    assert "learning rate ×" in result.best.change


def test_healthy_model_gets_nothing_to_try_and_the_callers_random_state_is_kept(batches):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    result = trial(lambda: mlp(HIDDEN, init=he), sgd(0.05, momentum=0.9), batches, F.cross_entropy, STEPS, print_report=False)
    assert result.healthy and result.nothing_to_try and result.rows == [] and result.best is None
    assert torch.equal(torch.random.get_rng_state(), state)


def test_functional_relu_cannot_be_swapped_but_norm_layers_wrap_a_custom_forward(batches):
    result = trial(FunctionalReLUNet, sgd(0.05, momentum=0.9), batches, F.cross_entropy, STEPS, print_report=False)
    assert "dead_relu" in result.baseline.symptoms_after
    reason = next(entry.reason for entry in result.not_applicable if entry.remedy == "leaky_relu")
    assert "F.relu" in reason
    norm = next(row for row in result.rows if row.remedies == ("normalization",))
    assert "BatchNorm1d after 2 layers (fc1, fc2)" in norm.change and result.cures(norm)
    _accounted_for(result)


def test_vanilla_rnn_becomes_a_gru_of_the_same_size_and_still_runs():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(3, 8, batch_first=True, num_layers=2)
            self.out = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, hidden = self.rnn(x)
            return self.out(hidden[-1])

    x, y = torch.randn(4, 5, 3), torch.tensor([0, 1, 0, 1])
    runner = _Runner(Net, sgd(0.1), [(x, y)], F.cross_entropy, 3, 0, 20, None)
    (recipe,) = plan_gated_rnn(None, runner.probe())  # type: ignore[arg-type, misc]
    model = runner.fresh_model()
    for _, edit in recipe.edits:
        edit(model)
    assert isinstance(model.rnn, nn.GRU) and (model.rnn.hidden_size, model.rnn.num_layers, model.rnn.batch_first) == (8, 2, True)
    assert model(x).shape == (4, 2)
    report, losses, _ = runner.run(recipe, "gru")
    assert len(losses) == 3 and report.steps == 3


def test_recipes_combine_unless_they_pull_the_learning_rate_both_ways():
    raise_lr, lower_lr = Recipe(("raise_lr",), ("×100",), lr_scale=100.0), Recipe(("lower_lr",), ("×0.1",), lr_scale=0.1)
    clip = Recipe(("gradient_clipping",), ("clip",), clip_norm=1.0)
    assert not combines(raise_lr.remedies, lower_lr.remedies) and not combines(clip.remedies, clip.remedies)
    both = lower_lr + clip
    assert both.remedies == ("lower_lr", "gradient_clipping") and both.lr_scale == 0.1 and both.clip_norm == 1.0


def test_bad_inputs_fail_up_front(batches):
    with pytest.raises(TypeError, match="re-iterable"):
        trial(lambda: mlp(HIDDEN), sgd(0.1), iter(batches), F.cross_entropy, print_report=False)
    shared = mlp(HIDDEN)
    with pytest.raises(ValueError, match="fresh model"):
        trial(lambda: shared, sgd(0.1), batches, F.cross_entropy, 5, print_report=False)


@pytest.mark.parametrize("adapter", ["torch_trial", "keras_trial"])
def test_every_remedy_is_planned_or_says_why_not(adapter):
    """A ranked remedy with neither a planner nor a reason would stop ``trial()`` with a KeyError."""
    import importlib

    from gradwatch.remedies import REMEDIES
    from gradwatch.trial import NOT_AUTOMATIC

    planners = importlib.import_module(f"gradwatch.integrations.{adapter}").PLANNERS
    assert [remedy for remedy in REMEDIES if remedy not in planners and remedy not in NOT_AUTOMATIC] == []

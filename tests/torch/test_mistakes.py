"""Everyday mistakes in a PyTorch loop, each named as itself, and their correct twins kept quiet (real tiny fits)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradwatch import MISTAKES
from gradwatch.integrations.pytorch import watch

STEPS = 240
MISTAKE_FIX = {
    "gradients_not_cleared": "clear_gradients",
    "output_loss_mismatch": "fix_output",
    "loss_broadcast": "match_shapes",
    "eval_mode_training": "train_mode",
    "params_not_in_optimizer": "add_to_optimizer",
    "lr_schedule_collapse": "fix_schedule",
    "chance_level_loss": "pair_inputs_and_labels",
}


def fit(mistake: str | None = None, *, steps: int = STEPS):  # type: ignore[no-untyped-def]
    """A small BatchNorm/Dropout classifier on a learnable task, trained with ``mistake`` made (None: correctly)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(1024, 20)
    y = (x[:, :3].sum(1) > 0).long()
    if mistake == "shuffled_labels":
        y = y[torch.randperm(len(y))]
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    if mistake == "head_after_optimizer":
        model.append(nn.Linear(2, 2))
    if mistake == "frozen_batchnorm":  # fine-tuning style: BatchNorm frozen and in eval on purpose
        model[1].requires_grad_(False)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5) if mistake in ("schedule_per_batch", None) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PyTorch's own warning about the broadcasting target
        with watch(model, optimizer, print_report=False, warn_on=None) as watcher:
            for step in range(steps):
                if mistake in ("eval_mode", "frozen_batchnorm"):
                    model.eval() if mistake == "eval_mode" else model[1].eval()
                rows = torch.randint(0, len(x), (64,))
                out = model(x[rows])
                if mistake == "softmax_before_ce":
                    out = F.softmax(out, dim=1)
                if mistake == "broadcast":
                    loss = F.mse_loss(out[:, :1], y[rows].float())
                else:
                    loss = F.cross_entropy(out, y[rows])
                if mistake == "accumulate_4":
                    (loss / 4).backward()
                    if step % 4 == 3:
                        optimizer.step()
                        optimizer.zero_grad()
                else:
                    if mistake != "no_zero_grad":
                        optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                if schedule is not None and (mistake == "schedule_per_batch" or step % 100 == 99):
                    schedule.step()
                watcher.step(loss)
    return watcher.report()


@pytest.mark.parametrize(
    ("mistake", "named", "words"),
    [
        ("no_zero_grad", "gradients_not_cleared", "zero_grad"),
        ("softmax_before_ce", "output_loss_mismatch", "softmax"),
        ("broadcast", "loss_broadcast", "shape"),
        ("eval_mode", "eval_mode_training", "model.train()"),
        ("head_after_optimizer", "params_not_in_optimizer", "optimizer"),
        ("schedule_per_batch", "lr_schedule_collapse", "scheduler"),
        ("shuffled_labels", "chance_level_loss", "labels"),
    ],
)
def test_the_mistake_is_named_first_with_its_fix(mistake, named, words):
    report = fit(mistake)
    first = report.findings[0]
    assert first.symptom == named and first.is_mistake and first.at_least("warning"), [(f.symptom, f.message) for f in report.findings]
    assert words in first.message and first.remedies[0].id == MISTAKE_FIX[named]


@pytest.mark.parametrize("twin", [None, "accumulate_4", "frozen_batchnorm"])
def test_correct_loops_name_no_mistake(twin):
    """Zeroing every step, accumulation over 4 backwards (zeroed once per optimizer step), a BatchNorm frozen in
    eval mode on purpose, a schedule stepped per epoch: no mistake, no symptom."""
    report = fit(twin)
    assert [f.symptom for f in report.findings if f.at_least("warning")] == []
    assert report.sampled_steps and report.sampled_steps >= 5


def test_mistake_ids_are_in_the_summary_schema():
    import json

    from gradwatch.summary_check import schema_path

    enum = json.loads(schema_path().read_text())["$defs"]["finding"]["properties"]["symptom"]["enum"]
    assert set(MISTAKES) <= set(enum)


def test_a_gan_loop_whose_generator_backward_reaches_the_discriminator_first_names_no_mistake():
    """The generator's loss flows through the discriminator, whose .grad still holds its last step's gradient;
    the discriminator's own zero_grad() clears it before its step: nothing is carried into an optimizer step."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    generator, discriminator = (
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)),
        nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1)),
    )
    model = nn.ModuleDict({"generator": generator, "discriminator": discriminator})
    opt_g, opt_d = torch.optim.Adam(generator.parameters(), 1e-3), torch.optim.Adam(discriminator.parameters(), 1e-3)
    real = torch.randn(512, 2) * 0.5 + 2.0
    with watch(model, opt_d, print_report=False, warn_on=None, every_n_steps=5) as watcher:  # the discriminator is measured
        for _ in range(60):
            fake = generator(torch.randn(64, 4))
            opt_g.zero_grad()
            F.binary_cross_entropy_with_logits(discriminator(fake), torch.ones(64, 1)).backward()
            opt_g.step()
            opt_d.zero_grad()
            scores = discriminator(torch.cat([real[torch.randint(0, 512, (64,))], fake.detach()]))
            F.binary_cross_entropy_with_logits(scores, torch.cat([torch.ones(64, 1), torch.zeros(64, 1)])).backward()
            opt_d.step()
            watcher.step()
    assert watcher.report().finding("gradients_not_cleared") is None


def test_the_left_over_gradient_leaves_the_device_with_the_sample_in_its_one_transfer(monkeypatch):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    reads = []
    for name in ("tolist", "item"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, _real=real, _name=name: reads.append(_name) or _real(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, every_n_steps=1, print_report=False)
        for step in range(3):
            loss = F.cross_entropy(model(torch.randn(32, 8)), torch.randint(0, 2, (32,)))
            loss.backward()  # zero_grad() forgotten
            optimizer.step()
            reads.clear()
            watcher.step(loss)
            assert reads == ["tolist"], f"step {step}: host reads {reads}"
        report = watcher.close()
    named = [f for f in report.findings if f.symptom == "gradients_not_cleared"]
    assert named and named[0].evidence["stale_grad"] > 1.0  # .grad held at least the previous step's gradient


def test_a_sampled_step_carries_the_learning_rate_it_stepped_with_not_the_one_a_scheduler_moved_to_after():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # meant per epoch, stepped per batch
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, every_n_steps=1, print_report=False)
        observe = watcher.session.observe
        watcher.session.observe = lambda stats: seen.append(stats) or observe(stats)  # type: ignore[method-assign]
        for _ in range(3):
            loss = F.cross_entropy(model(torch.randn(32, 8)), torch.randint(0, 2, (32,)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()  # before watcher.step: the optimizer already holds the next rate
            watcher.step(loss)
        watcher.close()
    assert [stats.lr for stats in seen] == pytest.approx([0.05, 0.025, 0.0125])


@pytest.mark.parametrize("per_batch", [True, False])
def test_a_cosine_schedule_sized_in_epochs_is_named_when_stepped_every_batch(per_batch):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randint(0, 2, (256,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)  # six epochs of 16 batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, print_report=False)
        for _ in range(6):
            for batch in range(0, 256, 16):
                loss = F.cross_entropy(model(x[batch : batch + 16]), y[batch : batch + 16])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if per_batch:
                    scheduler.step()
                watcher.step(loss)
            if not per_batch:
                scheduler.step()
        report = watcher.close()
    named = [f for f in report.findings if f.symptom == "lr_schedule_collapse"]
    if per_batch:
        assert named and "climbed back" in named[0].message and named[0].evidence["cycles"] >= 2
    else:
        assert not named


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_float64_model_is_named_as_information_and_a_float32_one_is_not(dtype):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, print_report=False)
        for _ in range(4):
            loss = F.cross_entropy(model(torch.randn(32, 8, dtype=dtype)), torch.randint(0, 2, (32,)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            watcher.step(loss)
        report = watcher.close()
    named = {f.symptom: f.severity for f in report.findings}
    assert named == ({"float64_model": "info"} if dtype == torch.float64 else {})


def test_a_loop_that_never_steps_its_optimizer_is_told_so_not_told_to_call_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, print_report=False)
        for _ in range(5):
            loss = F.cross_entropy(model(torch.randn(32, 8)), torch.randint(0, 2, (32,)))
            optimizer.zero_grad()
            loss.backward()  # optimizer.step() forgotten
            watcher.step(loss)
        report = watcher.close()
    assert report.too_little_measured and report.notes == [
        "the loop ran 5 steps but the optimizer never stepped, so the weights never changed: optimizer.step() is missing from the loop"
    ]

"""The Lightning callback on real tiny fits."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from benchmarks.clinic.lightning_cases import healthy, loader, sick, trainer
from gradwatch import GradWatchWarning
from gradwatch.integrations.lightning import GradWatchCallback
from gradwatch.summary_check import schema_path


def fit(model, callback, **trainer_options):
    run = trainer(callbacks=[callback], **trainer_options)
    run.fit(model, loader())
    assert callback.session.report() is callback.report, "one way to the report on every adapter"
    return run, callback.report


def test_deep_sigmoid_module_reports_vanishing_gradients(tmp_path):
    with pytest.warns(GradWatchWarning, match="vanishing_gradients"):
        run, report = fit(sick(), GradWatchCallback(summary_path=tmp_path / "gw.json", print_report=False))
    finding = report.finding("vanishing_gradients")
    assert finding.at_least("warning") and finding.remedies[0].id == "relu_family"
    summary = json.loads((tmp_path / "gw.json").read_text())
    jsonschema.validate(summary, json.loads(schema_path().read_text()))
    assert summary["framework"] == "lightning" and summary["steps"] == run.global_step == 160


def test_healthy_module_reports_nothing():
    _, report = fit(healthy(), GradWatchCallback(print_report=False))
    assert report.findings == [], [f.symptom for f in report.findings]
    assert report.every_n_steps == 20, "follows the Trainer's log_every_n_steps"


def test_bf16_mixed_precision():
    _, sick_report = fit(sick(), GradWatchCallback(print_report=False, warn_on=None), precision="bf16-mixed")
    _, healthy_report = fit(healthy(), GradWatchCallback(print_report=False), precision="bf16-mixed")
    assert sick_report.finding("vanishing_gradients").at_least("warning")
    assert healthy_report.healthy, [f.symptom for f in healthy_report.findings]


def test_gradient_accumulation_counts_one_step_per_window():
    run, report = fit(healthy(), GradWatchCallback(print_report=False), accumulate_grad_batches=4, max_steps=40)
    assert run.global_step == report.steps == 40
    steps = report.layers[0]["history"]["step"]
    assert steps == [0, 1, 2, 4, 8, 16, 20]
    assert report.healthy


def test_resume_from_checkpoint_continues_the_diagnosis(tmp_path):
    first = GradWatchCallback(print_report=False, warn_on=None)
    run = trainer(callbacks=[first], max_steps=60)
    run.fit(sick(), loader())
    run.save_checkpoint(tmp_path / "half.ckpt")
    assert first.report.finding("vanishing_gradients").first_step == 2

    resumed = GradWatchCallback(print_report=False, warn_on=None)
    trainer(callbacks=[resumed], max_steps=120).fit(sick(), loader(), ckpt_path=tmp_path / "half.ckpt")
    report = resumed.report
    assert report.steps == 120
    assert report.finding("vanishing_gradients").first_step == 2, "the finding from before the checkpoint survives"
    steps = report.layers[0]["history"]["step"]
    assert steps[:7] == [0, 1, 2, 4, 8, 16, 20] and steps[-1] == 100, "history continues across the resume"


def test_two_callbacks_keep_their_own_checkpoint_state(tmp_path):
    """Two gradwatch callbacks (one per summary) resume each its own diagnosis."""
    one, two = (GradWatchCallback(print_report=False, warn_on=None, summary_path=tmp_path / f"{n}.json") for n in ("a", "b"))
    two_keys = {one.state_key, two.state_key}
    run = trainer(callbacks=[one, two], max_steps=40)
    run.fit(sick(), loader())
    run.save_checkpoint(tmp_path / "half.ckpt")
    saved = torch.load(tmp_path / "half.ckpt", weights_only=False)["callbacks"]
    assert two_keys <= set(saved) and len(two_keys) == 2

"""The framework-free session every adapter drives: options, start, record, stop, close, checkpoints."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest

from gradwatch import GradWatchWarning, ModelFacts
from gradwatch.console import print_report
from gradwatch.options import OptionError
from gradwatch.session import Session
from gradwatch.stats import LayerStats, StepStats

from .streams import sample

VANISHING = [1e-9, 1e-6, 1e-1]  # the bottom layer learns 1e8 times slower than the top: critical


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"stop_on": "info"}, "'warning', 'critical'"),
        ({"print_report": "yes"}, "print_report"),
        ({"log_layers": 1}, "log_layers"),
        ({"history_size": 1}, "history_size"),
        ({"strict": None}, "strict"),
    ],
)
def test_a_bad_option_fails_at_construction_in_one_line(options, message):
    with pytest.raises(OptionError, match=message) as caught:
        Session("test", **options)
    assert "\n" not in str(caught.value)


def test_the_frameworks_interval_is_used_only_when_the_user_chose_none():
    assert Session("test", every_n_steps=None).start(ModelFacts(), every_n_steps=50).every_n_steps == 50
    assert Session("test", every_n_steps=None).start(ModelFacts()).every_n_steps == 20
    assert Session("test", every_n_steps=7).start(ModelFacts(), every_n_steps=50).every_n_steps == 7


def test_record_asks_to_stop_at_stop_on_and_only_the_main_process_says_why():
    session = Session("test", warn_on=None, stop_on="critical", print_report=False)
    session.start(ModelFacts())
    votes = []

    def agree(serious: bool) -> bool:  # another process always wants to go on: the vote is what counts
        votes.append(serious)
        return False

    for step in range(3):
        assert not session.record(sample(step, VANISHING, loss=2.3), agree=agree) and not session.stop_requested
    assert votes[-1] and not votes[0], "this process saw a critical finding and voted to stop"
    assert session.record(sample(3, VANISHING, loss=2.2)), "alone, its own vote decides"
    with pytest.warns(GradWatchWarning, match=r"stopping training \(stop_on='critical'\)"):
        session.stop()
    session.set_main(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        session.stop()  # silent on the other processes
    assert not Session("test", warn_on=None).start(ModelFacts()).should_stop()


def test_other_processes_measure_but_never_warn_or_write(tmp_path):
    path = tmp_path / "gw.json"
    session = Session("test", summary_path=path, print_report=False)
    session.start(ModelFacts(), main=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(4):
            session.record(sample(step, VANISHING, loss=2.3))
        report = session.close(4)
    assert report.findings[0].symptom == "vanishing_gradients" and not path.exists()
    assert session.summary_path == path, "the configured path is kept for the main process"


@pytest.mark.parametrize(
    ("steps", "samples", "note"),
    [
        (0, 0, "no training step was seen: say hello"),
        (5, 0, "no step could be measured"),
        (2, 2, "the run had only 2 step(s)"),
        (40, 6, None),
    ],
)
def test_close_says_why_a_run_was_not_measured(steps, samples, note):
    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts())
    for step in range(samples):
        session.record(sample(step, loss=1.0 - 0.01 * step))
    report = session.close(steps, unseen="no training step was seen: say hello")
    if note is None:
        assert not report.notes
    else:
        assert any(n.startswith(note) for n in report.notes), report.notes
    assert session.close(steps) is report and session.report() is report, "closing twice gives the same report"


def test_a_run_unmeasured_because_a_part_failed_blames_the_part_not_the_training():
    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts())
    session.guard.run("pytorch collector", lambda: 1 / 0)
    report = session.close(40)
    assert any(n.startswith("no step could be measured: pytorch collector failed") for n in report.notes), report.notes
    assert not any("no backward pass" in n for n in report.notes)


def test_samples_without_gradients_clear_nothing():
    """Steps whose gradients never reached the watched layers (another model was trained) are not a
    clean bill, however many there were."""
    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts())
    for step in range(0, 40, 5):
        session.record(StepStats(step, layers=(LayerStats("fc", weight_norm=1.0),), loss=1.0))
    report = session.close(40)
    assert report.sampled_steps == 0 and report.too_little_measured
    assert any(note.startswith("no step could be measured") for note in report.notes)


def test_a_fresh_start_forgets_the_last_run_and_a_resumed_one_continues(tmp_path):
    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts())
    for step in range(3):
        session.record(sample(step, VANISHING, loss=2.3))
    first = session.close(3)
    session.start(ModelFacts(), resume=True)
    assert session.final is None and session.report().findings == first.findings
    session.record(sample(3, loss=2.0))
    assert session.close(4).sampled_steps == 4
    session.start(ModelFacts())
    assert session.report().findings == [] and session.sampled_steps == 0


def test_a_resumed_diagnosis_prints_its_report_again_only_when_its_findings_change(capsys):
    """Keras code often calls fit(epochs=1) in a loop: one report per change, not one per call."""
    session = Session("test", warn_on=None)
    printed = []

    def run(steps: range, relative_grads: list[float], *, resume: bool = True) -> None:
        session.start(ModelFacts(), resume=resume)
        for step in steps:
            session.record(sample(step, relative_grads, loss=2.0))
        session.close(steps.stop, render=print_report)
        printed.append(capsys.readouterr().err.count("gradwatch ·"))

    run(range(0, 3), [0.01] * 3, resume=False)
    run(range(3, 6), [0.01] * 3)
    run(range(6, 9), VANISHING)
    run(range(9, 12), VANISHING)
    run(range(0, 3), VANISHING, resume=False)  # a fresh diagnosis always prints
    assert printed == [1, 0, 1, 0, 1]


def test_a_checkpointed_diagnosis_loaded_before_the_run_is_continued():
    before = Session("test", warn_on=None, print_report=False)
    before.start(ModelFacts())
    for step in range(3):
        before.record(sample(step, VANISHING, loss=2.3))
    after = Session("test", warn_on=None, print_report=False)
    after.load_state_dict(before.state_dict())
    after.start(ModelFacts())
    assert after.sampled_steps == 3 and after.report().findings == before.report().findings


def test_latest_scalars_follow_log_layers():
    session = Session("test", warn_on=None, log_layers=True)
    session.start(ModelFacts())
    session.record(sample(0, [0.5, math.nan, 0.1], loss=1.0))
    assert "gradwatch/grad_norm/l0" in session.latest and "gradwatch/grad_norm" in session.latest


def test_latest_scalars_are_those_of_the_latest_sample():
    session = Session("test", warn_on=None)
    session.start(ModelFacts())
    assert session.latest == {}
    for step, grad in enumerate((0.5, 2.0)):
        session.record(sample(step, [grad], loss=1.0))
        assert session.latest["gradwatch/grad_norm"] == pytest.approx(grad)


def test_lower_the_learning_rate_cites_the_rate_the_schedule_reached_not_the_first_one():
    """A warmup starts the optimizer at a tiny rate: the remedy sizes its advice from the rate of the sampled steps."""
    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts(optimizer="AdamW", lr=0.00167))  # what the optimizer held when watching began
    for step in range(2):
        session.record(sample(step, relative_updates=[0.001, 3.0, 0.001], lr=0.5))
    assert session.facts.lr == 0.5
    lower = next(r for r in session.findings["exploding_gradients"].remedies if r.id == "lower_lr")
    assert "your learning rate is 0.5 " in lower.why and "0.00167" not in lower.why


def test_the_old_monitor_name_says_where_it_went():
    import gradwatch

    with pytest.raises(AttributeError, match="Monitor became Session"):
        gradwatch.Monitor  # noqa: B018


def test_a_loop_seen_clipping_its_gradients_is_never_told_to_clip():
    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts())
    session.observe(replace(sample(0, [0.01] * 3, loss=2.3), grad_norm_unclipped=0.0173))  # sqrt(3) * 0.01: not clipped
    assert not session.facts.grad_clipping
    session.observe(replace(sample(1, [0.01] * 3, loss=2.3), grad_norm_unclipped=1.0))  # 0.0173 at the step
    assert session.facts.grad_clipping


def test_a_run_whose_learning_rate_rose_is_never_told_to_warm_up():
    from gradwatch.remedies import warmup

    session = Session("test", warn_on=None, print_report=False)
    session.start(ModelFacts(lr=1e-3))  # the optimizer's rate, before the schedule's first factor
    for step, lr in enumerate([1e-4, 1e-4, 1e-4]):
        session.observe(replace(sample(step, [0.01] * 3, loss=2.3), lr=lr))
    assert not session.facts.lr_rose and warmup(session.facts) is not None
    session.observe(replace(sample(3, [0.01] * 3, loss=2.3), lr=2e-4))
    assert session.facts.lr_rose and warmup(session.facts) is None

"""The session's diagnosis of a stream of samples: schedule, warnings, merging, fault isolation, state round trip, bounded history."""

from __future__ import annotations

import math
import warnings

import pytest

from gradwatch import GradWatchWarning, Session, StepStats
from gradwatch.console import print_report
from gradwatch.detectors import Detector, VanishingGradients
from gradwatch.history import History
from gradwatch.stats import ActivationStats, LayerStats

from .streams import sample

SICK = [1e-6, 1e-4, 1e-2, 1e-1]
WORSE = [1e-9, 1e-5, 1e-2, 1e-1]


def test_schedule_is_powers_of_two_then_every_n():
    session = Session(every_n_steps=20)
    assert [s for s in range(100) if session.should_sample(s)] == [0, 1, 2, 4, 8, 16, 20, 40, 60, 80]
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 1 or None, got 0"):
        Session(every_n_steps=0)


def test_warns_once_per_finding_and_again_when_it_gets_worse():
    session = Session()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(6):
            session.observe(sample(step, SICK))
        session.observe(sample(6, WORSE))
        session.observe(sample(7, WORSE))
    messages = [str(w.message) for w in caught if issubclass(w.category, GradWatchWarning)]
    assert len(messages) == 2
    assert messages[0].startswith("gradwatch: vanishing_gradients (warning) from step 2 in l0")
    assert "(critical) from step 2" in messages[1]
    finding = session.report().finding("vanishing_gradients")
    assert finding.first_step == 2 and finding.last_step == 7 and finding.severity == "critical"
    assert finding.remedies, "a finding always carries remedies"


def test_failing_detector_is_disabled_with_one_warning_and_others_continue():
    class Broken(Detector):
        symptom = "dead_relu"

        def observe(self, sample, facts):
            raise RuntimeError("boom")

    session = Session(detectors=[Broken(), VanishingGradients()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(4):
            session.observe(sample(step, SICK))
    failures = [w for w in caught if "failed and is now disabled" in str(w.message)]
    assert len(failures) == 1 and "detector dead_relu" in str(failures[0].message)
    report = session.report()
    assert report.finding("vanishing_gradients") is not None
    assert any("RuntimeError: boom" in note for note in report.notes)


def test_state_dict_round_trip_continues_exactly():
    stream = [sample(s, SICK if s < 5 else WORSE, loss=2.0, lr=1e-7, relative_updates=[1e-8] * 4) for s in range(0, 200, 20)]
    straight = Session(warn_on=None)
    for s in stream:
        straight.observe(s)
    first, second = Session(warn_on=None), Session(warn_on=None)
    for s in stream[:4]:
        first.observe(s)
    second.load_state_dict(first.state_dict())
    for s in stream[4:]:
        second.observe(s)
    assert second.report().to_summary() == straight.report().to_summary()


def test_history_stays_bounded_and_evenly_spaced():
    history = History(capacity=16)
    for step in range(100_000):
        history.add(StepStats(step, sample(step).layers), {})
    assert len(history.steps) <= 16
    gaps = {b - a for a, b in zip(history.steps, history.steps[1:])}
    assert len(gaps) == 1 and history.steps[0] == 0
    assert all(len(v) == len(history.steps) for s in history.series.values() for v in s.values())


def test_history_merges_a_layer_with_its_own_activation_and_keeps_series_aligned():
    """Keras' Dense(activation="relu") is both a layer and the activation measured (same name)."""
    history = History(capacity=8)
    dense = LayerStats("dense", grad_norm=1.0, weight_norm=2.0)
    history.add(StepStats(0, (dense,)), {"dense": "Dense"})
    history.add(StepStats(1, (dense,), activations=(ActivationStats("dense", "ReLU", dead_share=0.25),)), {"dense": "Dense"})
    history.add(StepStats(2, (dense,)), {"dense": "Dense"})
    (entry,) = history.to_layers()
    assert entry["kind"] == "Dense"
    assert entry["history"] == {"step": [0, 1, 2], "grad_norm": [1.0, 1.0, 1.0], "weight_norm": [2.0, 2.0, 2.0], "dead_share": [None, 0.25, None]}


def test_nan_in_one_layer_does_not_poison_other_detectors():
    session = Session(warn_on=None)
    for step in range(5):
        grads = [math.nan, 0.01, 0.01] if step == 1 else [0.01, 0.01, 0.01]
        session.observe(sample(step, grads, relative_updates=[1e-3] * 3, loss=1.0 - 0.01 * step))
    assert [f.symptom for f in session.report().findings] == ["nonfinite"]


def test_stop_on_acts_on_the_most_severe_finding_and_close_writes_and_prints(tmp_path, capsys):
    session = Session(warn_on=None, stop_on="warning", summary_path=tmp_path / "gw.json")
    assert not session.should_stop()
    for step in range(3):
        session.observe(sample(step, [1e-9, 1e-6, 1e-1], loss=2.3 - 0.1 * step))
    assert session.first_at_least("critical").symptom == "vanishing_gradients"
    assert session.first_at_least(None) is None
    assert session.should_stop() and not Session(warn_on=None).should_stop(), "no stop_on, no stop"
    with pytest.warns(GradWatchWarning, match=r"stopping training \(stop_on='warning'\): vanishing_gradients"):
        session.stop()
    report = session.close(render=print_report)
    assert (tmp_path / "gw.json").exists() and report.findings[0].symptom == "vanishing_gradients"
    assert "vanishing_gradients" in capsys.readouterr().err

"""The loss-spike benchmark (benchmarks/spikes): its oracle on hand-made loss traces, and one tiny run end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from benchmarks.spikes import oracle
from benchmarks.spikes.detectors import ZScoreRule, first_above
from benchmarks.spikes.sweep import evaluate, judge, required_lead, table, write_trace
from benchmarks.spikes.train import RunConfig, run


def curve(steps: int, seed: int = 0, floor: float = 2.0) -> list[float]:
    """A healthy loss: from ln(128) down towards ``floor``, with batch noise of about 5%."""
    rng = random.Random(seed)
    return [(floor + (4.85 - floor) * math.exp(-step / 40)) * (1 + 0.05 * rng.gauss(0, 1)) for step in range(steps)]


def test_oracle_calls_a_noisy_falling_loss_stable_even_with_one_wild_batch() -> None:
    losses = curve(300)
    losses[150] = 40.0  # one bad batch: the 5-step median ignores it
    verdict = oracle.label(losses)
    assert verdict.label == oracle.STABLE
    assert verdict.step is None and verdict.spike_steps == []


def test_oracle_dates_a_divergence_that_never_recovers() -> None:
    losses = curve(300)
    losses[200:] = [5.5 + 0.01 * k for k in range(100)]  # 2.75x the level before, for good
    verdict = oracle.label(losses)
    assert verdict.label == oracle.DIVERGED
    assert verdict.step is not None and 200 <= verdict.step <= 202
    assert verdict.min_step is not None and verdict.min_step < 200


def test_oracle_calls_a_spike_that_comes_back_spiked_not_diverged() -> None:
    for height in (3.2, 5.0):  # 1.6x, and 2.5x for a while: both recover
        losses = curve(300)
        losses[120:135] = [height] * 15
        verdict = oracle.label(losses)
        assert verdict.label == oracle.SPIKED, height
        assert verdict.spike_steps and 120 <= verdict.spike_steps[0] <= 122
        assert verdict.step is None


def test_oracle_dates_nan_at_the_first_non_finite_step_or_the_excursion_before_it() -> None:
    losses = curve(100) + [math.nan]
    verdict = oracle.label(losses)
    assert (verdict.label, verdict.step, verdict.nonfinite) == (oracle.DIVERGED, 100, True)
    climbing = curve(100) + [6.0, 9.0, 15.0, 40.0, 90.0, 200.0, math.inf]
    verdict = oracle.label(climbing)
    assert verdict.label == oracle.DIVERGED and verdict.step is not None and 100 <= verdict.step <= 103


def test_oracle_catches_a_blow_up_in_the_first_steps() -> None:
    losses = [4.85, 4.8, 30.0, 45.0, 60.0] + [50.0] * 100
    verdict = oracle.label(losses)
    assert verdict.label == oracle.DIVERGED and verdict.step is not None and verdict.step <= 4


def test_zscore_rule_flags_a_jump_in_the_gradient_norm_only() -> None:
    rng = random.Random(1)
    rule = ZScoreRule()
    norms = [1.0 + 0.05 * rng.gauss(0, 1) for _ in range(200)]
    quiet = [rule.update(n) for n in norms]
    assert first_above(quiet, 4.0) is None
    assert rule.update(3.0) > 10


def test_required_lead_and_judge() -> None:
    assert required_lead(100) == 20 and required_lead(400) == 40
    verdict = oracle.Verdict(oracle.DIVERGED, 300)
    assert judge(265, verdict).in_time and not judge(275, verdict).in_time
    assert judge(265, verdict).in_window and judge(100, verdict).in_time and not judge(100, verdict).in_window
    assert judge(310, verdict).lead == -10
    assert not judge(10, oracle.Verdict(oracle.STABLE)).in_time


def test_one_tiny_sweep_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    results = [
        run(RunConfig(lr=0.6, warmup=0, qk_norm=False, z_loss=0.0, eps=1e-8, seed=0, steps=25)),  # blows up at once
        run(RunConfig(lr=0.01, warmup=10, qk_norm=True, z_loss=1e-4, eps=1e-8, seed=0, steps=25)),
    ]
    blown, calm = results
    assert blown.verdict.label == oracle.DIVERGED and blown.verdict.step is not None and blown.verdict.step < 10
    assert calm.verdict.label == oracle.STABLE
    assert len(calm.traces["loss"]) == 25 and len(calm.traces["layer_update_norm"][0]) == len(calm.traces["layers"])
    assert all(attn > 0 for attn in calm.traces["max_attn_logit"][-1])
    for result in results:  # the live SpikeDetection (shipped defaults) and the rtol read from the probe agree
        assert result.lightning[2.0] == result.lightning_live
    evaluation = evaluate(results)
    assert evaluation["labels"] == {"diverged": 1, "spiked": 0, "stable": 1}
    assert evaluation["lightning_disagreements"] == []
    text = table(evaluation)
    assert "lightning" in text and "zclip" in text and blown.config.name in text
    saved = json.loads(write_trace(calm, tmp_path).read_text())
    assert saved["oracle"]["label"] == "stable" and len(saved["traces"]["grad_norm"]) == 25

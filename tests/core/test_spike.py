"""``loss_spike`` and ``divergence_forecast`` on synthetic sampled-step streams (no framework)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from gradwatch import LayerStats, ModelFacts, StepStats
from gradwatch.detectors.spike import DivergenceForecast, LossSpike

NAMES = ("embed", "blocks[0].attn", "blocks[1].attn", "head")


def step_stats(step: int, loss: float, rng: random.Random, *, jump: dict[str, float] | None = None, **precursors: object) -> StepStats:
    """A sampled step of four layers whose gradient and update norms wander by about 30% (log-normal noise)."""
    jump = jump or {}
    layers = tuple(
        LayerStats(
            name,
            grad_norm=0.1 * rng.lognormvariate(0, 0.3) * jump.get(name, 1.0),
            weight_norm=10.0,
            update_norm=0.01 * rng.lognormvariate(0, 0.3) * jump.get(name, 1.0),
            size=4096,
            moment_rms=0.1 / 64 * rng.lognormvariate(0, 0.3),
        )
        for name in NAMES
    )
    return StepStats(step, layers, loss=loss, **precursors)  # type: ignore[arg-type]


def steps(count: int) -> list[int]:
    """Sampled steps as the monitor takes them by default: 1, 2, 4, 8, 16, then every 20th."""
    early = [0, 1, 2, 4, 8, 16]
    return (early + list(range(20, 20 * count, 20)))[:count]


def healthy(count: int, seed: int, *, noise: float = 0.05, **precursors: object) -> list[StepStats]:
    """A loss falling from 4 towards 1.5 with noise of ``noise`` (relative), gradients wandering, nothing wrong."""
    rng = random.Random(seed)
    return [step_stats(s, (1.5 + 2.5 * math.exp(-s / 300)) * (1 + noise * rng.gauss(0, 1)), rng, **precursors) for s in steps(count)]


def observe_all(detector: LossSpike | DivergenceForecast, samples: list[StepStats]) -> list:  # type: ignore[type-arg]
    facts = ModelFacts()
    return [detector.observe(s, facts) for s in samples if s.finite or detector.sees_nonfinite]


def test_a_loss_spike_is_flagged_with_the_layer_whose_update_jumped_first_and_its_recovery() -> None:
    samples = healthy(20, seed=1)
    rng = random.Random(2)
    last = samples[-1].step
    samples += [
        step_stats(last + 20, 1.9, rng, jump={"blocks[1].attn": 40.0}),  # the layer jumps first, the loss barely moves
        step_stats(last + 40, 4.5, rng, jump={"blocks[1].attn": 60.0, "head": 20.0}),
        step_stats(last + 60, 1.95, rng),
    ]
    found = [f for f in observe_all(LossSpike(), samples) if f is not None]
    assert found, "the spike was not flagged"
    first, after = found[0], found[-1]
    assert first.first_step == last + 40 and first.layers == ("blocks[1].attn",)
    assert first.evidence["first_jump"]["step"] == last + 20 and first.evidence["first_jump"]["norm"] == "update"
    assert first.evidence["rise"] > 1.5 and first.severity == "info"
    assert after.evidence["recovered"] and "came back" in after.message


def test_a_spike_that_does_not_recover_becomes_a_warning() -> None:
    samples = healthy(20, seed=3)
    rng = random.Random(4)
    last = samples[-1].step
    samples += [step_stats(last + 20 * k, 4.0, rng) for k in range(1, 6)]
    found = [f for f in observe_all(LossSpike(), samples) if f is not None]
    assert found and found[0].severity == "info" and found[-1].severity == "warning"
    assert "still" in found[-1].message


def test_healthy_noisy_runs_raise_neither_finding() -> None:
    """Many seeds of noisy but healthy runs, noise up to 15% per sample: no spike, no forecast."""
    for seed in range(40):
        samples = healthy(60, seed, noise=0.15, attention_logit_max=12.0, output_log_partition=4.0)
        assert not any(observe_all(LossSpike(), samples)), seed
        assert not any(observe_all(DivergenceForecast(), samples)), seed


def test_large_attention_logits_alone_raise_no_forecast() -> None:
    """Small GPTs without qk-layernorm reach attention logits in the hundreds and still train to the end."""
    rng = random.Random(5)
    samples = [step_stats(s, 3.0 - 0.002 * s, rng, attention_logit_max=5.0 * 1.03**s, attention_layer="blocks[1].attn") for s in range(0, 300, 20)]
    assert samples[-1].attention_logit_max > 300  # type: ignore[operator]
    assert not any(observe_all(DivergenceForecast(), samples))


def test_the_forecast_names_the_attention_seen_and_later_says_how_far_ahead_it_came() -> None:
    rng = random.Random(5)
    attention = {"attention_logit_max": 400.0, "attention_layer": "blocks[1].attn", "attention_head": 2, "attention_entropy_min": 0.01}
    samples = [step_stats(s, 2.0 * rng.lognormvariate(0, 0.02), rng, **attention) for s in range(0, 200, 20)]
    samples += [step_stats(200, 3.3, rng, jump={"blocks[1].attn": 30.0}, **attention), step_stats(220, 2.05, rng, **attention)]
    samples += [step_stats(s, 2.0, rng, **attention) for s in range(240, 300, 20)] + [step_stats(300, math.nan, rng)]
    found = observe_all(DivergenceForecast(), samples)
    raised = next(i for i, f in enumerate(found) if f is not None)
    warning = found[raised]
    assert samples[raised].step == 200 and warning.severity == "warning"
    assert warning.evidence["mechanism"] == "update_jump" and warning.evidence["where"] == "blocks[1].attn"
    assert warning.evidence["attention"]["head"] == 2 and "blocks[1].attn head 2" in warning.message
    final = found[-1]
    assert final is not None and final.evidence["lead_steps"] == 100 and final.first_step == 200
    assert "100 steps ahead" in final.message


def test_a_loss_at_twice_its_minimum_is_a_divergence_and_no_warning_means_no_lead() -> None:
    rng = random.Random(6)
    samples = [step_stats(s, 2.0, rng) for s in range(0, 200, 20)] + [step_stats(200, 4.5, rng)]
    detector = DivergenceForecast()
    found = observe_all(detector, samples)
    assert detector.diverged_at == 200 and not any(found)


def test_a_growing_output_log_partition_alone_raises_no_forecast() -> None:
    """A classifier growing confident lifts its log-partition by ten nats or more while its loss falls."""
    rng = random.Random(7)
    samples = [step_stats(s, 2.5 * math.exp(-s / 60), rng, output_log_partition=2.3 + 0.1 * s) for s in range(0, 300, 20)]
    assert not any(observe_all(DivergenceForecast(), samples))


def test_adams_moments_are_named_beside_a_sign_never_alone_and_only_once_the_estimate_has_a_history() -> None:
    """A gradient far above Adam's estimate alone raised a false alarm on held-out runs: it corroborates."""
    rng = random.Random(10)
    early = [step_stats(s, 3.0, rng) for s in (0, 1, 2)] + [step_stats(4, 3.0, rng, jump={"head": 80.0})]
    assert not any(observe_all(DivergenceForecast(), early))
    alone = [step_stats(s, 3.0, rng) for s in steps(10)] + [step_stats(200, 3.0, rng, jump={"head": 80.0})]
    assert not any(observe_all(DivergenceForecast(), alone))
    rising = [step_stats(s, 3.0, rng) for s in steps(10)] + [step_stats(200, 4.8, rng, jump={"head": 80.0})]
    found = [f for f in observe_all(DivergenceForecast(), rising) if f is not None]
    assert found and found[0].evidence["mechanisms"] == ["update_jump", "adam_moments"] and found[0].evidence["where"] == "head"
    assert "Adam's second-moment estimate" in found[0].message


def test_the_remedies_follow_the_mechanism_seen() -> None:
    """qk-layernorm first where attention is near one-hot, z-loss first where the output logits drifted, else warmup."""
    from gradwatch import Session

    cases = (
        ({"attention_logit_max": 400.0, "attention_layer": "blocks[1].attn", "attention_head": 2}, {}, "qk_norm"),
        ({"output_log_partition": 4.0}, {"output_log_partition": 20.0}, "z_loss"),
        ({}, {}, "warmup"),
    )
    for before, during, first in cases:
        monitor = Session("pytorch", detectors=[LossSpike()], warn_on=None)
        rng = random.Random(9)
        for s in range(0, 200, 20):
            monitor.observe(step_stats(s, 2.0 * rng.lognormvariate(0, 0.02), rng, **before))  # type: ignore[arg-type]
        monitor.observe(step_stats(200, 3.5, rng, **(during or before)))  # type: ignore[arg-type]
        assert monitor.findings["loss_spike"].remedies[0].id == first, (first, monitor.findings["loss_spike"].remedies)


def test_state_round_trips() -> None:
    samples = healthy(12, seed=8, attention_logit_max=12.0)
    for make in (LossSpike, DivergenceForecast):
        one, two = make(), make()
        observe_all(one, samples[:8])
        two.load_state_dict(one.state_dict())
        rest = [replace(s) for s in samples[8:]]
        assert [f and f.to_dict() for f in observe_all(one, rest)] == [f and f.to_dict() for f in observe_all(two, rest)]


def warmup_past_best(count: int, seed: int, *, peak: float, lr_rises: bool = True) -> list[StepStats]:
    """A loss that falls while a linear warmup raises the learning rate, then creeps up once the rate passes 0.3."""
    rng = random.Random(seed)
    out = []
    for s in steps(count):
        lr = peak * min(1.0, (s + 1) / 400) if lr_rises else peak
        past = max(0.0, lr - 0.3) if lr_rises else max(0.0, (s - 160) / 1000)
        loss = (1.5 + 2.5 * math.exp(-s / 60)) * (1 + 1.5 * past) * (1 + 0.01 * rng.gauss(0, 1))
        out.append(replace(step_stats(s, loss, rng), lr=lr))
    return out


def test_a_loss_creeping_up_as_warmup_raises_the_rate_is_forecast_with_the_rate_it_was_best_at() -> None:
    samples = warmup_past_best(22, seed=3, peak=0.9)  # the rate passes 0.3 at step 133
    found = [f for f in observe_all(DivergenceForecast(), samples) if f is not None]
    assert found, "the creep was not forecast"
    warning = found[0]
    assert warning.evidence["mechanism"] == "past_best_lr"
    assert 140 <= warning.first_step <= 260
    assert "learning rate rose from" in warning.message and "0.3" in warning.message.split("rose from")[1][:8]


def test_a_loss_that_creeps_at_a_constant_rate_or_within_its_noise_is_not_forecast() -> None:
    constant = warmup_past_best(22, seed=4, peak=0.9, lr_rises=False)
    assert not [f for f in observe_all(DivergenceForecast(), constant) if f is not None]
    noisy = [replace(s, lr=0.9 * min(1.0, (s.step + 1) / 400)) for s in healthy(22, seed=5, noise=0.05)]
    assert not [f for f in observe_all(DivergenceForecast(), noisy) if f is not None]


def test_the_forecast_state_survives_a_json_checkpoint_mid_warmup() -> None:
    import json

    samples = warmup_past_best(22, seed=3, peak=0.9)
    one, two = DivergenceForecast(), DivergenceForecast()
    observe_all(one, samples[:10])
    two.load_state_dict(json.loads(json.dumps(one.state_dict())))
    rest = samples[10:]
    after_one, after_two = observe_all(one, rest), observe_all(two, rest)
    assert any(after_one), "the creep was not forecast after the checkpoint"
    assert [f and f.to_dict() for f in after_one] == [f and f.to_dict() for f in after_two]


def climbing_gradients(count: int, seed: int, *, lr_rises: bool = True, loss_falls: bool = False) -> list[StepStats]:
    """Every step's gradient norm falls from 1 to 0.3, then (from step 120, as warmup passes a rate of 0.27) doubles
    every 30 steps, with 30% noise, the head's most; the loss levels off at 2.0 by step 100 and creeps 2% above it
    (or keeps falling)."""
    rng = random.Random(seed)
    out, previous = [], -1
    for s in steps(count):
        norms = []
        for t in range(previous + 1, s + 1):
            level = 0.3 + 0.7 * math.exp(-t / 30)
            norms.append(level * 2 ** (max(0, t - 120) / 30) * rng.lognormvariate(0, 0.3))
        previous = s
        creep = 1 + 0.02 * min(1.0, max(0, s - 120) / 40)
        loss = (1.0 + 3 * math.exp(-s / 100) if loss_falls else 2.0 + 2 * math.exp(-s / 20) * (s < 100)) * creep
        lr = 0.9 * min(1.0, (s + 1) / 400) if lr_rises else 0.9
        head = {"head": 2 ** (min(40, max(0, s - 120)) / 15)}  # the layer whose own gradient climbs most (up to 6×)
        out.append(replace(step_stats(s, loss * (1 + 0.003 * rng.gauss(0, 1)), rng, jump=head), lr=lr, step_grad_norms=tuple(norms)))
    return out


def test_every_steps_gradient_norm_climbing_as_the_loss_stalls_under_a_rising_rate_is_forecast() -> None:
    for seed in range(5):
        found = [f for f in observe_all(DivergenceForecast(), climbing_gradients(20, seed)) if f is not None]
        assert found, f"seed {seed}: the climb was not forecast"
        warning = found[0]
        assert warning.evidence["mechanism"] == "gradient_climb", warning.evidence["mechanisms"]
        assert 140 <= warning.first_step <= 220, warning.first_step  # the median doubles 30-60 steps into the climb
        assert "gradient norm climbed to" in warning.message and "learning rate rose from" in warning.message
        assert "head" in warning.layers and "most in head" in warning.message
    from gradwatch.session import Session

    session = Session("pytorch", detectors=[DivergenceForecast()], warn_on=None)
    for sample in climbing_gradients(20, 0):
        session.observe(sample)
    assert session.findings["divergence_forecast"].remedies[0].id == "lower_lr"


def test_a_gradient_norm_that_climbs_while_the_loss_improves_or_at_a_constant_rate_is_not_forecast() -> None:
    for seed in range(5):
        for kind in ({"loss_falls": True}, {"lr_rises": False}):
            found = [f for f in observe_all(DivergenceForecast(), climbing_gradients(20, seed, **kind)) if f is not None]
            assert not found, (seed, kind, found[0].message)
    rng, previous, noisy = random.Random(6), -1, []
    for sample in warmup_past_best(20, 6, peak=0.2):  # a loss falling under warmup, every step's norm noise alone
        noisy.append(replace(sample, step_grad_norms=tuple(0.3 * rng.lognormvariate(0, 0.5) for _ in range(sample.step - previous))))
        previous = sample.step
    assert not [f for f in observe_all(DivergenceForecast(), noisy) if f is not None]


def test_a_warmup_past_the_rate_the_model_trains_at_is_told_to_cap_its_peak_near_the_rate_it_trained_at() -> None:
    from gradwatch.session import Session

    session = Session("pytorch", detectors=[DivergenceForecast()], warn_on=None)
    session.set_facts(ModelFacts(lr=0.9, optimizer="AdamW"))
    for sample in climbing_gradients(20, 0):
        session.observe(sample)
    found = session.findings["divergence_forecast"]
    trained = found.evidence["trained_lr"]
    assert 0.1 < trained < 0.3 and [r.id for r in found.remedies] == ["lower_lr", "gradient_clipping"]  # no warmup: it warms up
    assert f"cap the peak at about {trained:.2g}" in found.remedies[0].why

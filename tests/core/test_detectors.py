"""Each detector against hand-computed references on synthetic streams."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from gradwatch import ActivationStats, LayerFacts, LayerStats, ModelFacts, SequenceStats, Session, StepStats, remedies
from gradwatch.detectors import (
    DeadReLU,
    EarlyStagnation,
    ExplodingGradients,
    NonFinite,
    VanishingGradients,
    WeightCollapse,
)

from .streams import feed, sample

# -- vanishing ---------------------------------------------------------------------------------


def test_vanishing_needs_three_samples_in_a_row_then_reports_the_ratio():
    grads = [1e-6, 1e-4, 1e-2, 1e-1]
    results = feed(VanishingGradients(), [sample(s, grads, relative_updates=[g * 0.1 for g in grads]) for s in range(4)])
    assert results[:2] == [None, None]
    finding = results[2]
    assert finding.severity == "warning"
    assert finding.evidence["grad_ratio"] == pytest.approx(1e-5)
    assert finding.evidence["gain_per_layer"] == pytest.approx(1e-5 ** (1 / 3))
    assert finding.layers == ("l0",)  # l1 is exactly 1e-3 of the top, not below it
    assert finding.first_step == 2


def test_vanishing_below_ratio_squared_is_critical():
    grads = [1e-8, 1e-5, 1e-3, 1e-1]
    finding = feed(VanishingGradients(), [sample(s, grads) for s in range(3)])[-1]
    assert finding.severity == "critical"
    assert finding.layers == ("l0", "l1")


def test_vanishing_compensated_by_the_optimizer_is_only_info():
    grads = [1e-6, 1e-4, 1e-2, 1e-1]
    finding = feed(VanishingGradients(), [sample(s, grads, relative_updates=[1e-3] * 4) for s in range(3)])[-1]
    assert finding.severity == "info"
    assert finding.evidence["update_ratio"] == pytest.approx(1.0)


def test_vanishing_streak_resets_and_healthy_or_shallow_models_stay_silent():
    sick, healthy = [1e-7, 1e-3, 1e-1], [0.02, 0.01, 0.05]
    detector = VanishingGradients()
    assert feed(detector, [sample(0, sick), sample(1, sick), sample(2, healthy), sample(3, sick)]) == [None] * 4
    assert feed(VanishingGradients(), [sample(s, [1e-9, 1e-1]) for s in range(5)]) == [None] * 5


def test_vanishing_skips_layers_with_exactly_zero_gradient():
    results = feed(VanishingGradients(), [sample(s, [0.0, 0.02, 0.01, 0.03]) for s in range(4)])
    assert results == [None] * 4


# -- exploding ---------------------------------------------------------------------------------


def test_exploding_on_updates_as_large_as_the_weights():
    updates = [0.001, 3.0, 0.001]
    results = feed(ExplodingGradients(), [sample(s, relative_updates=updates) for s in range(2)])
    assert results[0] is None
    assert results[1].severity == "warning" and results[1].layers == ("l1",)
    critical = feed(ExplodingGradients(), [sample(s, relative_updates=[20.0, 0.1, 0.1]) for s in range(2)])[-1]
    assert critical.severity == "critical"


def test_exploding_leaves_quasi_newton_steps_alone_but_not_their_loss():
    """An L-BFGS step runs several iterations toward the minimum of a curvature model: it may be as large as the weights."""
    big_steps = [sample(s, relative_updates=[0.5, 3.0, 1.5], loss=1.0 / (s + 1)) for s in range(4)]
    assert feed(ExplodingGradients(), big_steps, ModelFacts(optimizer="LBFGS")) == [None] * 4
    assert feed(ExplodingGradients(), big_steps, ModelFacts(optimizer="SGD"))[1] is not None
    climbing = [sample(s, relative_updates=[0.5, 3.0, 1.5], loss=100.0**s) for s in range(4)]
    assert feed(ExplodingGradients(), climbing, ModelFacts(optimizer="LBFGS"))[-1] is not None


def test_exploding_on_growth_over_the_early_lowest_level():
    norms = [2.0, 3.0, 4.0, 150.0, 400.0]  # baseline: the lowest of the first three, 2 → growth 75 then 200
    results = feed(ExplodingGradients(), [sample(s, [n, 0.0, 0.0]) for s, n in enumerate(norms)])
    assert results[:5] == [None] * 5  # 200× once: streak 1 of 2
    more = feed(ExplodingGradients(), [sample(s, [n, 0.0, 0.0]) for s, n in enumerate([2, 3, 4, 250, 300])])
    assert more[-1].evidence["growth"] == pytest.approx(150.0)
    at_once = feed(ExplodingGradients(), [sample(s, [n, 0.0, 0.0]) for s, n in enumerate([1, 500, 400])])
    assert at_once[2].evidence["growth"] == pytest.approx(400.0)  # a run that blows up in its first steps


def test_nonfinite_samples_reach_only_the_nonfinite_detector():
    session = Session(warn_on=None)
    for step in range(3):
        session.observe(sample(step, [math.inf, 1.0, 1.0], relative_updates=[5, 5, 5], loss=math.nan))
    assert [f.symptom for f in session.report().findings] == ["nonfinite"]
    exploding = next(d for d in session.detectors if d.symptom == "exploding_gradients")
    assert exploding.streak == 0 and exploding.baseline == []


# -- nonfinite ---------------------------------------------------------------------------------


def test_nonfinite_names_window_and_layers():
    detector = NonFinite()
    assert detector.observe(sample(0, loss=1.0), ModelFacts()) is None
    finding = detector.observe(sample(20, [0.1, math.nan, math.inf], loss=math.nan), ModelFacts())
    assert finding.severity == "critical"
    assert finding.layers == ("l1", "l2")
    assert "between step 1 and 20" in finding.message and "loss nan" in finding.message
    assert finding.evidence["first_layer"] == "l1"
    later = detector.observe(sample(40, [math.nan, math.nan, math.nan], loss=math.nan), ModelFacts())
    assert "appeared between step 1 and 20 (still at step 40)" in later.message and later.evidence["after_step"] == 0


# -- weight collapse -----------------------------------------------------------------------------


def test_collapse_when_weights_fall_under_a_tenth_of_their_start():
    norms = [[10.0, 4.0], [5.0, 3.9], [0.9, 3.8], [0.5, 3.7]]
    results = feed(WeightCollapse(), [sample(s, [0.01, 0.01], weights=w) for s, w in enumerate(norms)])
    assert results[:3] == [None, None, None]  # 0.09 is the first of two samples needed
    assert results[3].layers == ("l0",)
    assert results[3].evidence["fraction_of_initial"]["l0"] == pytest.approx(0.05)
    assert results[3].severity == "warning"


def test_collapse_critical_and_ordinary_decay_silent():
    deep = feed(WeightCollapse(), [sample(s, [0.01], weights=[w]) for s, w in enumerate([1.0, 0.005, 0.004])])
    assert deep[-1].severity == "critical"
    decay = [1.0 * 0.999**s for s in range(0, 2000, 20)]
    assert all(r is None for r in feed(WeightCollapse(), [sample(s, [0.01], weights=[w]) for s, w in enumerate(decay)]))


# -- early stagnation --------------------------------------------------------------------------


def _flat(steps, lr=lambda s: 1e-7, update=1e-7, loss=lambda s: 2.3 + 0.01 * math.sin(s)):  # batch noise
    return [sample(s, relative_updates=[update] * 3, loss=loss(s), lr=lr(s)) for s in steps]


def test_stagnation_flat_loss_and_tiny_updates():
    results = feed(EarlyStagnation(), _flat([0, 20, 40, 60, 80]))
    assert results[:3] == [None] * 3
    assert results[3].severity == "warning" and results[3].first_step == 60
    assert results[3].evidence["median_relative_update"] == pytest.approx(1e-7)


def test_stagnation_waits_for_min_steps():
    assert feed(EarlyStagnation(), _flat([0, 1, 2, 4, 8, 16, 20]))[-1] is None
    assert feed(EarlyStagnation(), _flat([0, 1, 2, 4, 8, 16, 20, 40]))[-1] is not None


def test_stagnation_is_not_fooled_by_a_noisy_first_loss():
    """Keras' clinic case with SGD lr 1e-7 on the torch backend: the first batch happened to be 9% worse."""
    noise = [0.16, 0.15, 0.0, -0.01, 0.0, -0.02, 0.0, -0.02, 0.02, 0.03, -0.03, 0.0, 0.01, -0.01]
    steps = [0, 1, 2, 4, 8, 16, 20, 40, 60, 80, 100, 120, 140, 160]
    stagnant = feed(EarlyStagnation(), _flat(steps, loss=lambda s: 1.74 + noise[steps.index(s)]))
    first = next(r for r in stagnant if r is not None)
    assert first.first_step == 40 and all(r is not None for r in stagnant[7:])
    assert first.evidence["early_loss"] == pytest.approx(1.74)


def test_stagnation_traps_warmup_learning_and_late_plateau():
    warmup = _flat(range(0, 200, 20), lr=lambda s: 1e-6 * (s + 1))
    assert all(r is None for r in feed(EarlyStagnation(), warmup))
    learning = _flat(range(0, 200, 20), loss=lambda s: 2.3 - s / 100)
    assert all(r is None for r in feed(EarlyStagnation(), learning))
    late = _flat(range(0, 400, 20), loss=lambda s: max(0.3, 2.3 - s / 50))  # converges, then flat
    assert all(r is None for r in feed(EarlyStagnation(), late))
    moving = _flat(range(0, 200, 20), update=1e-3, loss=lambda s: 2.3 - s / 400)  # weights and loss move
    assert all(r is None for r in feed(EarlyStagnation(), moving))


def test_moving_weights_are_not_progress():
    """An adaptive optimizer keeps moving the weights on a vanishing gradient while the loss stays flat."""
    steps = range(0, 200, 20)
    stuck = [sample(s, [1e-6] * 3, relative_updates=[1e-3] * 3, loss=2.3 + 0.01 * math.sin(s)) for s in steps]
    results = feed(EarlyStagnation(), stuck)
    assert results[:3] == [None] * 3 and results[3].first_step == 60  # as with tiny steps
    slow_start = [sample(s, [0.01] * 3, relative_updates=[1e-3] * 3, loss=2.3 + 0.01 * math.sin(s)) for s in steps]
    assert feed(EarlyStagnation(), slow_start) == [None] * 10  # real gradients: it may still take off


# -- dead ReLU ---------------------------------------------------------------------------------


def _acts(share):
    return [ActivationStats("act0", "ReLU", dead_share=share), ActivationStats("sig", "Sigmoid", saturated_share=0.9)]


def test_dead_relu_from_activations():
    results = feed(DeadReLU(), [sample(s, activations=_acts(0.8)) for s in range(2)])
    assert results[0] is None
    assert results[1].layers == ("act0",) and results[1].severity == "warning"
    critical = feed(DeadReLU(), [sample(s, activations=_acts(0.95)) for s in range(2)])[-1]
    assert critical.severity == "critical"
    assert all(r is None for r in feed(DeadReLU(), [sample(s, activations=_acts(0.3)) for s in range(5)]))


def test_dead_relu_streak_counts_measurements_not_samples():
    """Shares arrive once per window of rows; samples in between neither extend nor break a streak."""
    windowed = [sample(0, activations=_acts(0.8)), sample(1), sample(2), sample(4, activations=_acts(0.8))]
    assert feed(DeadReLU(), windowed)[-1].layers == ("act0",)
    recovered = [sample(0, activations=_acts(0.8)), sample(1), sample(2, activations=_acts(0.1)), sample(4, activations=_acts(0.8))]
    assert feed(DeadReLU(), recovered)[-1] is None


def test_dead_relu_from_zero_gradient_rows_only_where_no_activation_is_known():
    facts = ModelFacts(layers=(LayerFacts("l0", "Linear"), LayerFacts("l1", "Linear", activation="Sigmoid"), LayerFacts("l2", "Linear")))
    rows = [0.7, 0.9, 0.9]  # l1 has a known sigmoid, l2 is the output layer
    finding = feed(DeadReLU(), [sample(s, zero_rows=rows) for s in range(3)], facts)[-1]
    assert finding.layers == ("l0",)
    assert finding.evidence["source"] == {"l0": "gradient rows"}


def test_dead_relu_rows_do_not_blame_layers_starved_by_a_dead_layer_above():
    """Below a fully dead layer no gradient arrives at all: every row is zero there, but says nothing."""
    rows = [1.0, 1.0, 1.0, 0.0]  # l2 dead; l0 and l1 get no gradient through it; l3 is the output layer
    finding = feed(DeadReLU(), [sample(s, (0.0, 0.0, 0.0, 0.01), zero_rows=rows) for s in range(3)])[-1]
    assert finding.layers == ("l2",)


# -- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: VanishingGradients(max_ratio=2), "max_ratio must be a share between 0 and 1"),
        (lambda: ExplodingGradients(max_growth=-1), "max_growth must be a finite number > 0, got -1"),
        (lambda: DeadReLU(min_consecutive=0), "min_consecutive must be an integer >= 1, got 0"),
        (lambda: EarlyStagnation(patience=2.5), "patience must be an integer >= 1, got 2.5"),
        (lambda: WeightCollapse(min_fraction=math.nan), "min_fraction must be a finite number > 0"),
    ],
)
def test_thresholds_are_validated_with_clear_messages(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make()


# -- vanishing through time --------------------------------------------------------------------


def _profile(step, values):
    return StepStats(step, sample(step).layers[:2], sequences=(SequenceStats("rnn", tuple(values)),))


def test_vanishing_through_time_with_horizon_and_decay():
    decaying = [0.5 ** (11 - t) for t in range(12)]  # first step gets 0.5**11 = 4.9e-4 of the last
    results = feed(VanishingGradients(), [_profile(s, decaying) for s in range(3)])
    assert results[:2] == [None, None]
    finding = results[2]
    assert finding.layers == ("rnn",) and finding.evidence["axis"] == "time"
    assert finding.evidence["first_over_peak"] == pytest.approx(0.5**11)
    assert finding.evidence["decay_per_step"] == pytest.approx(0.5)
    assert finding.evidence["effective_horizon"] == 10  # 0.5**9 >= 1e-3 > 0.5**10
    remedies = Session(facts=ModelFacts(recurrent=("RNN",)), warn_on=None)
    for s in range(3):
        remedies.observe(_profile(s, decaying))
    assert [r.id for r in remedies.report().findings[0].remedies][:2] == ["gated_rnn", "truncated_bptt"]


def test_short_or_flat_sequences_are_not_vanishing():
    short = [0.5 ** (8 - t) for t in range(9)]  # only 9 steps
    flat = [0.2 + 0.01 * t for t in range(50)]
    assert feed(VanishingGradients(), [_profile(s, short) for s in range(4)]) == [None] * 4
    assert feed(VanishingGradients(), [_profile(s, flat) for s in range(4)]) == [None] * 4


# -- failure classes seen on real programs -------------------------------------------------------


def test_large_gradients_alone_are_no_explosion():
    """Under Adam a loss summed over the batch or unscaled regression targets give |g|/|W| far above 1
    from the start, and the gradients may grow while the loss falls: the run learns."""
    summed = [sample(s, [30.0, 50.0, 20.0], relative_updates=[1e-3] * 3, loss=1e4 / (s + 1)) for s in range(6)]
    assert feed(ExplodingGradients(), summed) == [None] * 6
    growing_while_learning = [sample(s, [3.0 * 10**s, 5.0 * 10**s, 2.0 * 10**s], loss=1e6 / 2**s) for s in range(5)]
    assert feed(ExplodingGradients(), growing_while_learning) == [None] * 5
    stuck = [sample(s, [3.0 * 10**s, 5.0 * 10**s, 2.0 * 10**s], loss=1e6) for s in range(5)]  # the same growth, no progress
    assert feed(ExplodingGradients(), stuck)[-1].evidence["growth"] == pytest.approx(1e4)


def test_exploding_when_the_loss_climbs_far_above_its_start():
    losses = [2.0, 2.1, 1.9, 30.0, 45.0, 60.0]
    results = feed(ExplodingGradients(), [sample(s, loss=loss) for s, loss in enumerate(losses)])
    assert results[:5] == [None] * 5  # two in a row over 10x the early median
    assert results[5].evidence["loss_growth"] == pytest.approx(52.5 / 1.9)  # over the lowest early loss


def test_exploding_judges_one_row_batches_from_their_mean_early_level():
    """One row's loss and gradient may be near 0 by chance: over batches of one row the early level is the mean
    of the first samples, not their lowest (the same stream over 32-row batches is a climb)."""
    losses, grads = [0.003, 0.01, 4.9, 10.1, 9.8, 10.4], [0.001, 0.8, 1.0, 1.2, 0.9, 1.1]
    stream = [sample(s, [g, g, g], loss=loss) for s, (loss, g) in enumerate(zip(losses, grads))]
    assert feed(ExplodingGradients(), [replace(s, batch_rows=1) for s in stream]) == [None] * 6
    finding = feed(ExplodingGradients(), [replace(s, batch_rows=32) for s in stream])[-1]
    assert finding.evidence["loss_growth"] == pytest.approx(10.1 / 0.003) and finding.evidence["growth"] == pytest.approx(1100)


def test_exploding_growth_is_read_before_the_users_clipping():
    def clipped(step, raw):  # the training code clips the total norm to 1
        return replace(sample(step, [0.5, 0.5, 0.5]), grad_norm_unclipped=raw)

    results = feed(ExplodingGradients(), [clipped(s, raw) for s, raw in enumerate([1.0, 1.2, 0.9, 500.0, 900.0])])
    assert results[3] is None and results[4].evidence["growth"] == pytest.approx(1000.0)
    assert "clips the gradient norm from 900" in results[4].message


def test_zero_gradient_below_a_saturated_sigmoid_is_vanishing_not_dead():
    facts = ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid") for i in range(3)) + (LayerFacts("l3", "Linear"),))
    results = feed(VanishingGradients(), [sample(s, [0.0, 0.0, 1e-6, 0.1]) for s in range(3)], facts)
    assert results[2].severity == "critical" and results[2].evidence["zero_gradient_layers"] == ["l0", "l1"]
    assert "saturated Sigmoid after l1 passes nothing down" in results[2].message
    relu = ModelFacts(layers=tuple(replace(layer, activation="ReLU") for layer in facts.layers))
    assert feed(VanishingGradients(), [sample(s, [0.0, 0.0, 0.05, 0.1]) for s in range(3)], relu) == [None] * 3


def test_all_zero_gradients_freeze_a_short_run_at_once():
    frozen = [sample(s, [0.0, 0.0, 0.0], loss=0.693) for s in range(2)]
    results = feed(EarlyStagnation(), frozen)
    assert results[0] is None and results[1].evidence["all_gradients_zero"] and results[1].first_step == 1
    assert feed(EarlyStagnation(), [sample(s, [0.0, 0.0, 0.01], loss=0.693 + 0.01 * s) for s in range(3)]) == [None] * 3


def test_a_loss_constant_since_the_start_freezes_a_run_even_with_gradients():
    """A softmax over one unit under categorical cross-entropy: the loss is exactly 0 while gradients drift."""
    results = feed(EarlyStagnation(), [sample(s, [0.01, 0.01, 0.01], loss=0.0) for s in range(4)])
    assert results[:2] == [None, None] and results[2].evidence["constant_loss"]
    moved = [sample(s, loss=0.5 if s == 1 else 0.0) for s in range(5)]
    assert feed(EarlyStagnation(), moved) == [None] * 5


def _copies(step, spreads, updates=(1e-3, 1e-3, 1e-3), grads=(0.01, 0.01, 0.01)):
    return sample(step, grads, relative_updates=updates, unit_spreads=spreads, loss=1.1 - 0.01 * step)


def test_hidden_units_that_stay_copies_while_they_train_are_stagnation():
    """A constant initialisation: units with equal weights get equal gradients and never diverge."""
    results = feed(EarlyStagnation(), [_copies(s, [1e-7, 0.9, 0.0]) for s in (0, 1, 2, 4)])
    assert results[:2] == [None, None], "after the first step, on two samples in a row"
    assert results[2].layers == ("l0",) and results[2].evidence["unit_spread"] == {"l0": 1e-7}
    session = Session(warn_on=None)
    for s in (0, 1, 2):
        session.observe(_copies(s, [0.0, 1e-6, 0.8], updates=(0.0, 1e-3, 1e-3), grads=(0.0, 0.01, 0.01)))  # l0: copies that get no gradient
    finding = session.report().findings[0]
    assert finding.layers == ("l0", "l1") and finding.remedies[0].id == "random_init"


@pytest.mark.parametrize(
    "spreads, updates",
    [
        ([0.9, 0.8, 0.0], (1e-3, 1e-3, 1e-3)),  # random units; a copied output layer (one bias, say) is no fault
        ([9e-4, 0.9, 0.9], (1e-3, 1e-3, 1e-3)),  # a constant start the random layer above is pulling apart
        ([0.0, 0.9, 0.9], (0.0, 1e-3, 1e-3)),  # zero weights that do not move though their gradient is not zero
        ([None, None, None], (1e-3, 1e-3, 1e-3)),  # not measured
    ],
)
def test_units_that_differ_or_do_not_train_are_no_copies(spreads, updates):
    assert feed(EarlyStagnation(), [_copies(s, spreads, updates) for s in (0, 1, 2, 4)]) == [None] * 4


def _zero_hidden(step: int, grad: float) -> StepStats:
    layers = (LayerStats("l0", grad_norm=grad, weight_norm=0.0, update_norm=0.1 * grad), LayerStats("out", 0.1, 1.0, 0.01))
    return StepStats(step, layers, loss=1.1 - 0.01 * step)


def test_a_zero_hidden_layer_is_stuck_only_without_gradient():
    """All-zero weights of a layer with units that get no gradient never change (a zero initialisation under tanh);
    zero weights with a gradient (a LoRA up-projection, say) are meant to start there."""
    linear = ModelFacts(layers=(LayerFacts("l0", "Linear"), LayerFacts("out", "Linear")))
    results = feed(EarlyStagnation(), [_zero_hidden(s, 0.0) for s in (0, 1, 2)], linear)
    assert results[:2] == [None, None] and results[2].evidence["unit_spread"] == {"l0": 0.0}
    assert feed(EarlyStagnation(), [_zero_hidden(s, 0.5) for s in (0, 1, 2)], linear) == [None] * 3
    scale = ModelFacts(layers=(LayerFacts("l0", "LayerNorm"), LayerFacts("out", "Linear")))  # no units to compare
    assert feed(EarlyStagnation(), [_zero_hidden(s, 0.0) for s in (0, 1, 2)], scale) == [None] * 3


def test_a_softmax_over_one_unit_is_named_as_the_cause():
    facts = ModelFacts(
        layers=(LayerFacts("hidden", "Dense", activation="ReLU"), LayerFacts("out", "Dense", activation="Softmax", units=1)),
        loss="binary_crossentropy",
    )
    session = Session(facts=facts, warn_on=None)
    for s in range(2):
        session.observe(sample(s, [0.0, 0.0], loss=7.7))
    mistake, finding = session.report().findings
    assert mistake.symptom == "output_loss_mismatch" and mistake.first_step == 0, "a mistake seen directly is a finding of its own, first"
    assert "softmax over one unit" in mistake.message and mistake.remedies[0].id == "fix_output"
    assert finding.symptom == "early_stagnation" and finding.evidence["causes"] == ["output_loss_mismatch"]
    assert "softmax over one unit" in finding.message and finding.remedies[0].id == "fix_output"


def test_unscaled_inputs_are_named_with_standardising_first():
    session = Session(warn_on=None)
    for s in range(2):
        session.observe(replace(sample(s, relative_updates=[3.0, 0.1, 0.1]), input_mean_abs=812.0, input_std=1450.0))
    finding = session.report().findings[0]
    assert finding.symptom == "exploding_gradients" and finding.remedies[0].id == "standardize_inputs"
    assert "mean |x| 812, std 1.45e+03" in finding.message


def test_decay_through_time_is_info_while_the_loss_improves():
    decaying = [0.5 ** (11 - t) for t in range(12)]
    learning = [replace(_profile(s, decaying), loss=2.0 - 0.2 * s) for s in range(8)]
    assert {r.severity for r in feed(VanishingGradients(), learning)[2:]} == {"info"}
    stuck = [replace(_profile(s, decaying), loss=0.693) for s in range(8)]
    assert [r.severity for r in feed(VanishingGradients(), stuck)[2:]] == ["info"] * 4 + ["warning"] * 2


def test_remedies_speak_the_users_framework():
    keras = remedies.rank("exploding_gradients", ModelFacts(), framework="keras/tensorflow")
    assert "clipnorm=1.0" in next(r for r in keras if r.id == "gradient_clipping").why
    lightning = remedies.rank("exploding_gradients", ModelFacts(), framework="lightning")
    assert "gradient_clip_val" in next(r for r in lightning if r.id == "gradient_clipping").why


def test_collapse_under_way_is_flagged_when_something_pulls_weights_to_zero():
    shrinking = [sample(s, weights=[w, w]) for s, w in enumerate([5.0, 4.8, 4.5, 2.4, 2.2, 2.0])]
    pulled = ModelFacts(regularized=("l0", "l1"))
    results = feed(WeightCollapse(), shrinking, pulled)
    assert results[:4] == [None] * 4 and results[4].evidence["fraction_of_initial"]["l0"] == pytest.approx(0.44)
    assert feed(WeightCollapse(), shrinking) == [None] * 6  # no pull in the model: 40% is not a collapse yet


def test_a_sigmoid_regression_output_is_a_cause_only_when_the_loss_shows_the_targets_lie_outside():
    from gradwatch.causes import find_causes

    facts = ModelFacts(layers=(LayerFacts("out", "Dense", activation="Sigmoid", units=1),), loss="mean_squared_error")
    assert find_causes(facts, loss=0.05) == []  # targets in [0, 1]: a sigmoid output is fine
    assert [c.id for c in find_causes(facts, loss=600.0)] == ["output_loss_mismatch"]


def test_stuck_after_an_early_drop_when_the_gradient_dies_at_a_high_loss():
    steps = list(range(0, 400, 20))
    drop = [
        sample(s, [0.01 if s < 100 else 1e-6] * 3, relative_updates=[1e-3] * 3, loss=(2.3 if s < 40 else 1.9) + 0.01 * math.sin(s)) for s in steps
    ]
    results = feed(EarlyStagnation(), drop)
    first = next(r for r in results if r is not None)
    assert first.first_step == 160 and first.evidence["median_relative_grad"] == pytest.approx(1e-6)
    converged = [sample(s, [0.01 if s < 100 else 1e-6] * 3, loss=(2.3 if s < 40 else 0.2) + 0.01 * math.sin(s)) for s in steps]
    assert feed(EarlyStagnation(), converged) == [None] * len(steps)  # the gradient shrank with the loss
    diverged = [sample(s, [0.01 if s < 200 else 1e-6] * 3, loss=(2.3 if s < 40 else 1.0 if s < 200 else 3.0) + 0.01 * math.sin(s)) for s in steps]
    assert feed(EarlyStagnation(), diverged) == [None] * len(steps)  # 3x its lowest: it diverged, its gradients died of it


def test_a_stuck_run_taking_big_steps_is_told_to_lower_its_rate_not_raise_it():
    from gradwatch import Session

    steps = list(range(0, 400, 20))
    for update, first in ((1e-3, "raise_lr"), (2e-2, "lower_lr")):
        session = Session(warn_on=None, print_report=False)
        for s in steps:  # improved once, then a tiny gradient: stuck
            session.observe(sample(s, [0.01 if s < 100 else 1e-6] * 3, relative_updates=[update] * 3, loss=(2.3 if s < 40 else 1.9), lr=0.05))
        finding = session.report().finding("early_stagnation")
        assert finding is not None and finding.remedies[0].id == first, (update, [r.id for r in finding.remedies])
        assert ("too high for the loss to settle" in finding.message) == (first == "lower_lr")


def test_a_flat_loss_while_the_weights_shrink_away_is_stagnation():
    steps = list(range(0, 200, 20))
    shrinking = [
        sample(s, [0.05] * 3, weights=[max(0.2, 1.0 - s / 100)] * 3, relative_updates=[1e-3] * 3, loss=2.3 + 0.01 * math.sin(s)) for s in steps
    ]
    results = feed(EarlyStagnation(), shrinking)
    first = next(r for r in results if r is not None)
    assert first.first_step == 120  # weights under half their start from step 60 on, 4 samples in a row
    steady = [replace(x, layers=tuple(replace(layer, weight_norm=1.0) for layer in x.layers)) for x in shrinking]
    assert feed(EarlyStagnation(), steady) == [None] * len(steps)

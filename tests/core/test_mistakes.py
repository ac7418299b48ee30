"""The mistake detectors and causes on synthetic streams, against the numbers that define them (no framework)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from gradwatch import MISTAKES, SYMPTOMS, LayerFacts, ModelFacts, Session
from gradwatch.causes import find_causes
from gradwatch.detectors import ChanceLevelLoss, EvalModeTraining, GradientsNotCleared, LearningRateCollapse, ParamsNotInOptimizer
from gradwatch.summary_check import schema_path

from .streams import feed, sample

CLASSIFIER = ModelFacts(layers=(LayerFacts("hidden", "Linear", activation="ReLU"), LayerFacts("out", "Linear", units=10)), loss="cross_entropy")


def test_both_schemas_list_exactly_the_symptoms_and_the_mistakes():
    summary = json.loads(schema_path().read_text())["$defs"]["finding"]["properties"]["symptom"]["enum"]
    trial = json.loads(schema_path().with_name("trial-1.json").read_text())["$defs"]["symptoms"]["items"]["enum"]
    assert sorted(summary) == sorted(trial) == sorted(SYMPTOMS + MISTAKES)


def test_gradients_left_in_grad_are_named_on_two_samples_in_a_row_and_a_cleared_one_breaks_the_streak():
    stale = [replace(sample(s), stale_grad=g) for s, g in ((1, 3.0), (2, 0.0), (4, 5.0), (8, None), (16, 9.0))]
    results = feed(GradientsNotCleared(), stale)
    assert results[:4] == [None] * 4, "a cleared step resets; an unmeasured one leaves the streak as it is"
    assert results[4].symptom == "gradients_not_cleared" and "zero_grad() is missing" in results[4].message
    assert feed(GradientsNotCleared(), [replace(sample(s), stale_grad=0.0) for s in range(6)]) == [None] * 6


def test_eval_mode_and_parameters_outside_the_optimizer_name_their_layers():
    evaluated = feed(EvalModeTraining(), [replace(sample(s), eval_modules=("bn", "drop")) for s in range(2)])[-1]
    assert evaluated.layers == ("bn", "drop") and "model.eval() was left on" in evaluated.message
    orphaned = feed(ParamsNotInOptimizer(), [replace(sample(s), orphan_layers=("head",)) for s in range(2)])[-1]
    assert orphaned.layers == ("head",) and "in no optimizer param group" in orphaned.message


def test_a_schedule_that_collapses_early_is_named_once_the_run_has_spent_as_long_below_it():
    lrs = {0: 0.1, 20: 0.1 * 0.5**4, 40: 0.1 * 0.5**8, 60: 0.1 * 0.5**12, 80: 0.1 * 0.5**16, 100: 0.1 * 0.5**20, 140: 1e-8}
    results = feed(LearningRateCollapse(), [sample(s, lr=lr) for s, lr in lrs.items()])
    first = next(r for r in results if r is not None)
    assert first.evidence["fallen_at"] == 60 and first.first_step == 140
    assert first.evidence["per_step"] == pytest.approx(0.5 ** (1 / 5), rel=1e-6) and "scheduler" in first.message


def test_a_schedule_that_ends_at_zero_and_a_warmup_are_not_named():
    cosine = [sample(s, lr=0.05 * (1 + math.cos(math.pi * s / 400))) for s in range(0, 401, 20)]
    assert all(r is None for r in feed(LearningRateCollapse(), cosine))
    warmup = [sample(s, lr=1e-3 * min(1.0, (s + 1) / 100)) for s in range(0, 400, 20)]
    assert all(r is None for r in feed(LearningRateCollapse(), warmup))


def test_a_loss_that_stays_at_the_chance_level_while_weights_move_is_named():
    chance = math.log(10)
    steps = range(0, 400, 20)
    stuck = [sample(s, relative_updates=[2e-3] * 3, loss=chance * (1.01 if s % 40 else 0.99)) for s in steps]
    found = [r for r in feed(ChanceLevelLoss(), stuck, CLASSIFIER) if r is not None]
    assert found and found[0].first_step == 160 and "ln 10 = 2.3" in found[0].message
    learning = [sample(s, relative_updates=[2e-3] * 3, loss=chance * (0.98**s)) for s in steps]
    assert all(r is None for r in feed(ChanceLevelLoss(), learning, CLASSIFIER))
    small_steps = [sample(s, relative_updates=[4e-4] * 3, loss=chance) for s in steps]
    assert all(r is None for r in feed(ChanceLevelLoss(), small_steps, CLASSIFIER)), "small steps explain a slow start"
    slow_start = [sample(s, relative_updates=[2e-3] * 3, loss=chance * (1 - 0.0005 * s)) for s in steps]
    assert all(r is None for r in feed(ChanceLevelLoss(), slow_start, CLASSIFIER)), "a loss still falling near chance is learning"
    dipped = [sample(s, relative_updates=[2e-3] * 3, loss=chance * (0.5 if s == 60 else 1.0)) for s in steps]
    assert all(r is None for r in feed(ChanceLevelLoss(), dipped, CLASSIFIER)), "a loss that went below chance learned something"


@pytest.mark.parametrize(
    ("loss", "loss_input", "units", "words"),
    [
        ("cross_entropy", "Softmax", 10, "softmax is applied"),
        ("cross_entropy", "ReLU", 10, "ends in a ReLU"),
        ("nll_loss", "Softmax", 10, "expects log-probabilities"),
        ("nll_loss", "linear", 10, "raw scores"),
        ("binary_cross_entropy_with_logits", "Sigmoid", 1, "applies the sigmoid itself"),
        ("sparse_categorical_crossentropy_from_logits", "Softmax", 10, "from_logits=True"),
    ],
)
def test_an_output_that_does_not_match_the_loss_is_a_finding_even_without_a_symptom(loss, loss_input, units, words):
    facts = ModelFacts(layers=(LayerFacts("out", "Linear", units=units),), loss=loss, loss_input=loss_input)
    session = Session(facts=facts, warn_on=None)
    session.observe(sample(0, [0.01]))
    (finding,) = session.report().findings
    assert finding.symptom == "output_loss_mismatch" and finding.severity == "warning" and words in finding.message
    assert finding.remedies[0].id == "fix_output"


def test_matching_outputs_and_a_redundant_log_softmax_raise_no_warning():
    for loss, loss_input in (("cross_entropy", "linear"), ("nll_loss", "LogSoftmax"), ("binary_crossentropy", "Sigmoid"), ("mse_loss", "linear")):
        facts = ModelFacts(layers=(LayerFacts("out", "Linear", units=10),), loss=loss, loss_input=loss_input)
        assert not [c for c in find_causes(facts) if c.severity != "info"], (loss, loss_input)
    twice = find_causes(ModelFacts(layers=(LayerFacts("out", "Linear", units=10),), loss="cross_entropy", loss_input="LogSoftmax"))
    assert [(c.id, c.severity) for c in twice] == [("output_loss_mismatch", "info")]


def test_indirect_causes_are_named_under_the_symptom_with_their_fix_first():
    summed = ModelFacts(layers=CLASSIFIER.layers, loss="cross_entropy", loss_reduction="sum", loss_rows=128, optimizer="SGD", lr=0.1)
    session = Session(facts=summed, warn_on=None)
    for s in range(2):
        session.observe(sample(s, relative_updates=[3.0, 3.0]))
    finding = session.report().findings[0]
    assert finding.symptom == "exploding_gradients" and finding.remedies[0].id == "mean_loss"
    assert "summed over the 128 rows" in finding.message and "effective 12.8" in finding.message
    assert not [c for c in find_causes(replace(summed, optimizer="Adam")) if c.id == "summed_loss"], "Adam is scale-free"
    scaled = tuple(LayerFacts(f"l{i}", "Linear", activation="ReLU", init_gain=28.0) for i in range(6))
    (init,) = [c for c in find_causes(ModelFacts(layers=scaled)) if c.id == "init_scale"]
    assert "6 of 6 layers" in init.text and "grow about ×19.8" in init.text
    default = tuple(LayerFacts(f"l{i}", "Linear", activation="ReLU", init_gain=0.58) for i in range(6))
    assert not [c for c in find_causes(ModelFacts(layers=default)) if c.id == "init_scale"], "PyTorch's default init is no mistake"


def test_a_mistake_found_is_named_as_the_cause_of_a_symptom():
    session = Session(facts=CLASSIFIER, warn_on=None)
    for s in range(1, 4):
        session.observe(replace(sample(s, relative_updates=[3.0, 3.0]), stale_grad=4.0))
    mistake, symptom = session.report().findings
    assert mistake.symptom == "gradients_not_cleared" and symptom.symptom == "exploding_gradients"
    assert "likely cause: gradients are never cleared: zero_grad() is missing (see gradients_not_cleared)" in symptom.message
    assert symptom.remedies[0].id == "clear_gradients" and "still held" not in symptom.message  # the numbers stay in the mistake's own


def test_decay_through_time_is_a_problem_once_the_loss_has_only_come_down_to_chance():
    """A recurrent net that cannot learn its long-range task: its loss falls from a bad start to ln 2 and stays."""
    from gradwatch.detectors import VanishingGradients
    from gradwatch.stats import SequenceStats

    binary = ModelFacts(layers=(LayerFacts("rnn", "RNN"), LayerFacts("out", "Linear", units=2)), loss="cross_entropy")
    decaying = SequenceStats("rnn", tuple(0.5 ** (11 - t) for t in range(12)))
    losses = [0.9, 0.8, 0.75, 0.70, 0.694, 0.693, 0.693, 0.692]
    stream = [replace(sample(s), sequences=(decaying,), loss=loss) for s, loss in enumerate(losses)]
    assert feed(VanishingGradients(), stream, binary)[-1].severity == "warning"
    assert feed(VanishingGradients(), stream, ModelFacts())[-1].severity == "info", "without the chance level it looks like learning"


def test_a_mostly_frozen_model_whose_loss_does_not_move_is_named_and_a_trained_head_that_learns_is_not():
    from gradwatch.detectors import FrozenModel

    backbone = tuple(LayerFacts(f"block{i}", "Linear", trainable=False, fan_in=512, units=512) for i in range(4))
    facts = ModelFacts(layers=(*backbone, LayerFacts("head", "Linear", fan_in=512, units=10)), loss="cross_entropy")
    assert facts.mostly_frozen and not replace(facts, layers=facts.layers[-2:]).mostly_frozen
    flat = [sample(s, loss=2.0 - 0.001 * s) for s in range(0, 200, 20)]
    found = [r for r in feed(FrozenModel(), flat, facts) if r is not None]
    assert found and found[0].first_step == 120 and found[0].layers == ("head",) and "only 1 of the model's 5 layers train" in found[0].message
    learning = [sample(s, loss=2.0 * 0.99**s) for s in range(0, 200, 20)]
    assert all(r is None for r in feed(FrozenModel(), learning, facts)), "linear probing that learns is no mistake"


def test_an_initialisation_off_a_thousandfold_across_the_model_is_a_finding_unless_normalisation_undoes_it():
    scaled = tuple(LayerFacts(f"l{i}", "Linear", activation="ReLU", init_gain=28.0) for i in range(6))
    (direct,) = [c for c in find_causes(ModelFacts(layers=scaled)) if c.id == "init_scale"]
    assert direct.direct and direct.layers == tuple(f"l{i}" for i in range(6))
    (normalised,) = [c for c in find_causes(ModelFacts(layers=scaled, normalization=("bn",))) if c.id == "init_scale"]
    assert not normalised.direct, "BatchNorm undoes the scale: only a likely cause under a symptom"
    mild = tuple(LayerFacts(f"l{i}", "Linear", activation="ReLU", init_gain=0.4) for i in range(3))  # ×0.28 per layer, ×0.02 in all
    assert all(not c.direct for c in find_causes(ModelFacts(layers=mild)) if c.id == "init_scale")


def test_a_mistake_found_after_the_symptom_is_named_inside_it_too():
    session = Session(facts=CLASSIFIER, warn_on=None)
    for s in range(1, 3):
        session.observe(sample(s, relative_updates=[3.0, 3.0]))  # the symptom first
    for s in range(4, 7):
        session.observe(replace(sample(s), stale_grad=4.0))  # then the mistake, once the symptom has gone quiet
    mistake, symptom = session.report().findings
    assert mistake.symptom == "gradients_not_cleared" and symptom.evidence["causes"] == ["gradients_not_cleared"]
    assert "likely cause: gradients are never cleared" in symptom.message and symptom.remedies[0].id == "clear_gradients"


def test_a_collapsed_schedule_named_as_the_cause_replaces_raising_the_learning_rate():
    session = Session(facts=CLASSIFIER, warn_on=None)
    lrs = [0.1 * 0.5 ** min(s, 60) for s in range(0, 400, 20)]
    for s, lr in zip(range(0, 400, 20), lrs):
        session.observe(sample(s, [1e-3, 1e-3], relative_updates=[1e-12, 1e-12], loss=2.3, lr=lr))
    found = {f.symptom: f for f in session.report().findings}
    assert "lr_schedule_collapse" in found and "early_stagnation" in found, sorted(found)
    stalled = found["early_stagnation"]
    assert "likely cause: the learning-rate schedule collapsed early (see lr_schedule_collapse)" in stalled.message
    assert stalled.remedies[0].id == "fix_schedule" and "raise_lr" not in [r.id for r in stalled.remedies]
    steady = Session(facts=CLASSIFIER, warn_on=None)  # the same stall at a learning rate set that low on purpose
    for s in range(0, 400, 20):
        steady.observe(sample(s, [1e-3, 1e-3], relative_updates=[1e-12, 1e-12], loss=2.3, lr=1e-7))
    alone = {f.symptom: f for f in steady.report().findings}["early_stagnation"]
    assert "raise_lr" in [r.id for r in alone.remedies]


def _cycles_of(lrs):  # type: ignore[no-untyped-def]
    from gradwatch.detectors.mistakes import LrCycles

    counter = LrCycles()
    for lr in lrs:
        counter.see(lr)
    return counter.count


def test_a_cosine_schedule_run_through_every_few_batches_is_counted_and_named_and_sound_schedules_are_not():
    peak, steps = 0.1, range(400)
    per_batch = [peak * (1 + math.cos(math.pi * s / 10)) / 2 for s in steps]  # T_max=10 "epochs", stepped per batch
    assert _cycles_of(per_batch) == 20  # down to 0 at steps 10, 30, ..., 390, each time back above half the peak 5 steps on
    once = [peak * min(1.0, (s + 1) / 50) * (1 + math.cos(math.pi * max(0, s - 50) / 350)) / 2 for s in steps]  # warmup, cosine
    restarts = [peak * (1 + math.cos(math.pi * (s % 40) / 40)) / 2 for s in steps]  # warm restarts: one step back up
    triangle = [1e-3 + (peak - 1e-3) * (1 - abs((s % 40) / 20 - 1)) for s in steps]  # CyclicLR with its floor at 1% of the peak
    steady = [peak * 0.1 ** (s // 100) for s in steps]
    assert [_cycles_of(lrs) for lrs in (once, restarts, triangle, steady)] == [0, 0, 0, 0]
    named = feed(LearningRateCollapse(), [replace(sample(s, lr=per_batch[s]), lr_cycles=_cycles_of(per_batch[: s + 1])) for s in (20, 40, 60)])
    assert named[0] is None and named[1] is not None  # one cycle by step 20 is not enough; two, by step 40, are
    assert "climbed back 2 times in the first 41 steps" in named[1].message and "stepped every batch" in named[1].message
    slow = replace(sample(3999, lr=peak), lr_cycles=3)  # three cycles in 4000 steps: a cyclic schedule by design
    assert feed(LearningRateCollapse(), [slow]) == [None]


def test_a_float64_model_is_an_info_finding_of_its_own_and_never_a_cause_under_a_symptom():
    (cause,) = [c for c in find_causes(ModelFacts(dtype="float64")) if c.id == "float64_model"]
    assert cause.direct and cause.severity == "info" and "x.float()" in cause.remedy.why
    for dtype in ("float32", "bfloat16", None):
        assert not [c for c in find_causes(ModelFacts(dtype=dtype)) if c.id == "float64_model"], dtype
    session = Session(facts=replace(CLASSIFIER, dtype="float64"), warn_on=None)
    for s in range(1, 4):
        session.observe(sample(s, relative_updates=[3.0, 3.0]))  # an exploding symptom beside it
    found = {f.symptom: f for f in session.report().findings}
    assert found["float64_model"].severity == "info" and "float64" not in found["exploding_gradients"].message


def test_a_small_init_in_normalised_residual_blocks_is_neither_a_cause_nor_a_remedy():
    from gradwatch.remedies import rank

    layers = tuple(LayerFacts(f"h{i}.fc", "Linear", activation="GELU", init_gain=0.08) for i in range(4)) + (LayerFacts("head", "Linear"),)
    plain = ModelFacts(layers=layers)
    transformer = replace(plain, normalization=("h0.ln", "h1.ln"), residual=True)  # std 0.02 in width 16: by design
    assert [c.id for c in find_causes(plain)] == ["init_scale"] and find_causes(transformer) == []
    assert "matched_init" in [r.id for r in rank("exploding_gradients", plain)]
    assert "matched_init" not in [r.id for r in rank("exploding_gradients", transformer)]


def test_lower_the_learning_rate_is_sized_at_the_sample_that_raised_the_finding_not_at_the_blow_up():
    session = Session(facts=replace(CLASSIFIER, lr=0.5), warn_on=None)
    for s in range(1, 4):
        session.observe(sample(s, relative_updates=[3.0, 3.0], lr=0.5))
    first = next(r.why for r in session.report().finding("exploding_gradients").remedies if r.id == "lower_lr")
    for s in range(4, 8):  # the run blows up further while a schedule decays
        session.observe(sample(s, relative_updates=[3e4, 3e4], lr=0.05))
    later = next(r.why for r in session.report().finding("exploding_gradients").remedies if r.id == "lower_lr")
    assert "your learning rate is 0.5 and one step changed" in first and later == first

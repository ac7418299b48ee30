"""What a reader sees: the report at 80 columns with long names, remedies said once, advice sized from the numbers."""

from __future__ import annotations

from gradwatch import ActivationStats, Finding, LayerFacts, ModelFacts, Session
from gradwatch.console import render, render_trial
from gradwatch.detectors.dead_relu import DeadReLU
from gradwatch.remedies import rank, sized

from .streams import feed, sample
from .test_trial import _result


def _long_named_report():  # type: ignore[no-untyped-def]
    names = [f"transformer.encoder_layers[{i}].attention_output_projection_dense" for i in range(3)] + ["head"]
    layers = tuple(LayerFacts(name, "Linear", activation="Sigmoid") for name in names)
    session = Session(facts=ModelFacts(layers=layers), warn_on=None)
    for step in range(3):
        stats = sample(step, [3.5e-8, 2.4e-8, 2.5e-8, 1e-7])
        session.observe(type(stats)(step, tuple(type(s)(n, s.grad_norm, s.weight_norm) for n, s in zip(names, stats.layers))))
    return session.report(), names


def test_long_layer_names_keep_their_kind_and_number_at_80_columns():
    report, names = _long_named_report()
    text = render(report, width=80)
    for name, value in zip(names, ("3.5e-08", "2.4e-08", "2.5e-08", "1e-07")):
        assert name in text and value in text
    assert "…" not in text


def test_trial_table_keeps_every_column_at_80_columns():
    text = render_trial(_result(), width=80)
    assert "secs" in text
    for seconds in ("2.0", "2.5", "1.0"):
        assert f" {seconds} │" in text


def test_a_remedy_shared_by_several_findings_is_spelled_out_once():
    facts = ModelFacts(layers=(LayerFacts("l0", "Linear", activation="ReLU"), LayerFacts("l1", "Linear")), lr=5.0)
    first = Finding("dead_relu", "critical", 3, ("l0",), "dead", remedies=rank("dead_relu", facts))
    second = Finding("exploding_gradients", "warning", 1, ("l1",), "big", remedies=rank("exploding_gradients", facts))
    session = Session(facts=facts, warn_on=None)
    report = session.report()
    report.findings[:] = [first, second]
    text = render(report, width=200)
    assert text.count("Lower the learning rate — your learning rate is 5") == 1
    assert "Lower the learning rate — see above" in text


def test_each_finding_keeps_its_own_reason_for_a_shared_remedy():
    """A forecast's "cap the peak" is not replaced by a later finding's reason sized from a blown-up step."""
    facts = ModelFacts(layers=(LayerFacts("l0", "Linear"),), lr=0.47)
    forecast = Finding("divergence_forecast", "warning", 100, ("l0",), "likely to diverge", evidence={"trained_lr": 0.1})
    exploding = Finding("exploding_gradients", "warning", 280, ("l0",), "big", evidence={"peak_update": {"l0": 0.66}})
    for finding in (forecast, exploding):
        finding.remedies = sized(finding, rank(finding.symptom, facts), facts)
    report = Session(facts=facts, warn_on=None).report()
    report.findings[:] = [forecast, exploding]
    text = " ".join(render(report, width=80).split())
    assert text.index("cap the peak at about 0.1") < text.index("exploding_gradients from step 280") < text.index("try about 0.0071")


def test_lower_learning_rate_is_sized_from_the_largest_measured_step():
    facts = ModelFacts(layers=(LayerFacts("l0", "Linear"),), lr=5.0)
    finding = Finding("exploding_gradients", "warning", 1, ("l0",), "big", evidence={"peak_update": {"l0": 4.62}})
    why = {r.id: r.why for r in sized(finding, rank("exploding_gradients", facts), facts)}["lower_lr"]
    assert "changed l0 by 4.62× its norm" in why and "try about 0.011 (÷462)" in why
    modest = Finding("exploding_gradients", "warning", 1, ("l0",), "big", evidence={"peak_update": {"l0": 0.02}})
    assert sized(modest, rank("exploding_gradients", facts), facts) == rank("exploding_gradients", facts)  # not 3× off: unchanged


def test_dead_units_behind_a_relu_module_name_the_layer_that_feeds_it():
    facts = ModelFacts(layers=(LayerFacts("model[0]", "Linear", activation="ReLU", activation_module="model[1]"),))
    dead = [sample(s, activations=[ActivationStats("model[1]", "ReLU", dead_share=0.95)]) for s in range(2)]
    finding = feed(DeadReLU(), dead, facts)[-1]
    assert finding.layers == ("model[0]",)
    assert "model[1], the ReLU after model[0]: 95% never active" in finding.message

"""Property-based tests: any stream of numbers leaves the core standing and its output valid."""

from __future__ import annotations

import json

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradwatch import MISTAKES, SYMPTOMS, ActivationStats, LayerStats, SequenceStats, Session, StepStats
from gradwatch.summary_check import schema_path

VALIDATOR = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, -1e300, float("nan"), float("inf"), float("-inf")]
numbers = st.one_of(st.none(), st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True))
NAMES = [f"l{i}" for i in range(5)]


@st.composite
def steps(draw: st.DrawFn) -> list[StepStats]:
    n_layers = draw(st.integers(0, 4))
    constant = draw(st.booleans())  # a constant stream is its own edge case
    frozen = draw(st.tuples(numbers, numbers, numbers, numbers, numbers, numbers))
    stream = []
    for step in sorted(draw(st.sets(st.integers(0, 10_000), min_size=1, max_size=10))):
        layers = tuple(
            LayerStats(name, *(frozen[:4] if constant else draw(st.tuples(numbers, numbers, numbers, numbers)))) for name in NAMES[:n_layers]
        )
        acts = tuple(
            ActivationStats(f"a{i}", kind, draw(numbers), draw(numbers))
            for i, kind in enumerate(draw(st.lists(st.sampled_from(["ReLU", "Sigmoid", "Tanh", "GELU"]), max_size=3)))
        )
        loss, lr = frozen[4:] if constant else (draw(numbers), draw(numbers))
        profile = draw(st.lists(st.sampled_from(SPECIAL + [0.5, 1e-30]), max_size=14))
        sequences = (SequenceStats("l0", tuple(profile)),) if profile else ()
        stream.append(StepStats(step, layers, acts, loss, lr, sequences))
    return stream


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps())
def test_any_stream_gives_well_formed_findings_and_a_valid_summary(stream):
    session = Session(warn_on=None, strict=True, history_size=8)
    for sample in stream:
        session.observe(sample)
    report = session.report()
    known = set(NAMES) | {f"a{i}" for i in range(3)}
    for finding in report.findings:
        assert finding.symptom in SYMPTOMS + MISTAKES and finding.severity in ("info", "warning", "critical")
        assert 0 <= finding.first_step <= finding.last_step and finding.message
        assert set(finding.layers) <= known
    summary = report.to_summary()
    VALIDATOR.validate(json.loads(json.dumps(summary, allow_nan=False)))
    assert len(summary["layers"][0]["history"]["step"]) <= 8 if summary["layers"] else True

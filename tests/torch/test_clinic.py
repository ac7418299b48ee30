"""The PyTorch clinic as real assertions: every sick case caught early, no healthy case warned."""

from __future__ import annotations

import pytest

from benchmarks.clinic import evaluate
from benchmarks.clinic.torch_cases import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_clinic_case(case):
    outcome = evaluate(case)
    found = [(f.symptom, f.severity, f.first_step) for f in outcome.report.findings]
    assert outcome.correct, f"{case.name}: expected {case.expected or 'healthy'}, got {found}"
    if case.expected:
        assert outcome.detection_share <= 0.2, f"{case.name}: first detected at {outcome.detection_share:.0%} of the run"

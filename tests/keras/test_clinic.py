"""The Keras clinic as real assertions: every sick case caught early, no healthy case warned."""

from __future__ import annotations

import pytest

from benchmarks.clinic import evaluate
from benchmarks.clinic.keras_cases import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_clinic_case(case):
    assert evaluate(case).problem is None

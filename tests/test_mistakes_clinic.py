"""The mistakes clinic (``benchmarks.clinic.mistakes``) as assertions, on its fast cases (under ~3 s each).

A healthy twin must stay quiet (measured, nothing at warning level or above); a sick case must name
its mistake. The labels themselves are checked too: every case's recorded oracle numbers must show
its mistake (sick) or not (healthy).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from benchmarks.clinic.mistakes import score
from benchmarks.clinic.mistakes_oracle import MISTAKES, MistakeCase, all_cases, verdict

ALL = all_cases()
FAST = [c for c in ALL if c.fast]
MARKS = {"pytorch": "torch", "lightning": "lightning", "keras": "keras", "transformers": "transformers"}


def _param(case: MistakeCase) -> object:
    return pytest.param(case, marks=[getattr(pytest.mark, MARKS[case.framework])], id=case.name)


@pytest.mark.parametrize("case", [_param(c) for c in FAST])
def test_mistake_named_or_twin_quiet(case: MistakeCase) -> None:
    outcome = score(case)
    assert outcome.error is None, outcome.error
    if case.mistake is None:
        assert outcome.quiet, f"{case.name}: {outcome.words}"
    else:
        assert outcome.named, f"{case.name}: expected one of {case.words}, got {outcome.words}"


def test_every_case_is_labelled_by_the_oracle() -> None:
    names = {c.name for c in ALL}
    assert len(names) == len(ALL), "case names are unique"
    for case in ALL:
        assert case.mistake in (*MISTAKES, None) and case.source and case.oracle, case.name
        assert verdict(case.mistake, case.topic, case.oracle) == "ok", (case.name, dict(case.oracle))
        assert case.twin is None or case.twin in names, case.name
        if case.mistake is not None:
            assert case.words and case.twin, case.name

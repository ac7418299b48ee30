"""``gradwatch demo`` end to end: the sick model is diagnosed, the remedied one is healthy."""

from __future__ import annotations

import pytest

from gradwatch import GradWatchWarning, load_summary
from gradwatch.cli import main


def test_demo_writes_both_summaries(tmp_path, capsys):
    with pytest.warns(GradWatchWarning, match="vanishing_gradients"):
        assert main(["demo", "--out", str(tmp_path), "--steps", "120"]) == 0
    sick, remedied = load_summary(tmp_path / "sigmoid.json"), load_summary(tmp_path / "remedied.json")
    assert sick.finding("vanishing_gradients").at_least("warning")
    assert sick.finding("vanishing_gradients").remedies[0].id == "relu_family"
    assert remedied.healthy, [f.symptom for f in remedied.findings]
    out = capsys.readouterr()
    assert "held-out accuracy of the remedied model" in out.out
    assert "CRITICAL vanishing_gradients" in out.err and "✓ no problems found" in out.err  # both console reports

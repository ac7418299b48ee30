"""Every option of the Lightning callback is checked at construction, not when the Trainer sets it up."""

from __future__ import annotations

import pytest

from gradwatch.integrations.lightning import GradWatchCallback
from gradwatch.options import OptionError

from ..option_cases import SHARED, STOP_ON, case_id, concrete

CASES = SHARED + STOP_ON


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_bad_option_fails_at_construction(tmp_path, case):
    name, value, message = case
    value, message = concrete(value, message, tmp_path)
    with pytest.raises(OptionError) as error:
        GradWatchCallback(**{name: value})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_defaults_and_edge_values_construct(tmp_path):
    GradWatchCallback()
    GradWatchCallback(every_n_steps=None, stop_on="warning", history_size=2, autosave_every_n_steps=None, summary_path=tmp_path / "new" / "gw.json")
    assert not (tmp_path / "new").exists()

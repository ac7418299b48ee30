"""Every option of the Keras callback is checked at construction, before ``fit`` spends any time."""

from __future__ import annotations

import pytest

from gradwatch.integrations.keras import GradWatchCallback
from gradwatch.options import OptionError

from ..option_cases import SHARED, STOP_ON, case_id, concrete

LOG_METRICS = [("log_metrics", 1, "log_metrics must be True or False, got 1"), ("log_metrics", None, "log_metrics must be True or False, got None")]
CASES = SHARED + STOP_ON + LOG_METRICS  # every_n_steps=None: the default schedule (tests/core/test_session.py)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_bad_option_fails_at_construction(tmp_path, case):
    name, value, message = case
    value, message = concrete(value, message, tmp_path)
    with pytest.raises(OptionError) as error:
        GradWatchCallback(**{name: value})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)

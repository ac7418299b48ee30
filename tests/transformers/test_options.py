"""Every option of the Transformers callback is checked at construction, not when training starts."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from gradwatch.integrations.transformers import GradWatchCallback
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

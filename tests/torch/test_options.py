"""Every option of ``watch()`` is checked when it is called, before any training step: one line, the choices listed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwatch.integrations.pytorch import watch
from gradwatch.options import OptionError

from ..option_cases import SHARED, case_id, concrete


@pytest.mark.parametrize("case", SHARED, ids=case_id)
def test_a_bad_option_fails_at_watch_and_leaves_no_hook(tmp_path, case):
    name, value, message = case
    value, message = concrete(value, message, tmp_path)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(OptionError) as error:
        watch(model, **{name: value})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()), "nothing stays attached"


def test_a_misspelt_option_is_named():
    with pytest.raises(TypeError, match="watch\\(\\) got an unexpected keyword argument 'every_n_step'"):
        watch(nn.Linear(2, 2), every_n_step=5)


def test_log_layers_puts_per_layer_values_in_latest():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, optimizer, log_layers=True, print_report=False, warn_on=None) as watcher:
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        watcher.step(loss)
        assert {"gradwatch/grad_norm/0", "gradwatch/grad_norm/2"} <= set(watcher.latest), watcher.latest

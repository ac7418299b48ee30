"""The records adapters hand to the core."""

from __future__ import annotations

import math
from dataclasses import fields

from gradwatch.stats import ActivationStats, LayerStats


def test_records_take_their_measured_fields_in_a_fixed_order():
    """Adapters build records positionally (one call per layer of every sample): the order is part of the API."""
    assert [f.name for f in fields(LayerStats) if f.init] == [
        "name",
        "grad_norm",
        "weight_norm",
        "update_norm",
        "zero_grad_rows",
        "zero_grad_window",
        "unit_spread",
        "size",
        "moment_rms",
    ]
    assert [f.name for f in fields(ActivationStats) if f.init] == ["name", "kind", "dead_share", "saturated_share", "window"]


def test_derived_layer_numbers():
    layer = LayerStats("fc", 0.2, 4.0, 0.004)
    assert (layer.relative_grad, layer.relative_update, layer.finite) == (0.05, 0.001, True)
    assert not LayerStats("fc", math.nan, 4.0).finite and LayerStats("fc", 1.0, 0.0).relative_grad is None

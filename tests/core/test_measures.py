"""The measurement contract: what a sampled step packs, and the layout both collectors read it back with."""

import ast
import math
import sys
from pathlib import Path

import pytest

from gradwatch import MISTAKES, SYMPTOMS, measures, stats
from gradwatch.measures import BY_NAME, MEASURES, Layout


def test_the_declaration_needs_the_standard_library_only() -> None:
    tree = ast.parse(Path(measures.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {"__future__"}


def test_each_measurement_is_declared_once_fills_a_field_and_names_known_detectors() -> None:
    assert len(BY_NAME) == len(MEASURES)
    for measure in MEASURES:
        record, field = measure.fills.split(".")
        assert field in getattr(stats, record).__dataclass_fields__, measure
        assert set(measure.needed_by) <= set(SYMPTOMS) | set(MISTAKES), measure


def test_a_layout_orders_parts_as_declared_and_splits_them_back_by_name() -> None:
    layout = Layout({"loss": 2, "dead": 1, "grad": 2, "spread": 0})
    assert list(layout.lengths) == ["grad", "dead", "loss"]  # the declaration's order; empty parts left out
    assert layout.arrange({"loss": "L", "dead": "D", "grad": "G", "spread": "S"}) == ["G", "D", "L"]
    parts = layout.split([4.0, 9.0, 0.25, 3.0, 2.0])
    assert parts == {"grad": [2.0, 3.0], "dead": [0.25], "loss": [3.0, 2.0]}  # squared norms through a root


def test_a_split_keeps_evidence_and_refuses_a_vector_of_another_layout() -> None:
    parts = Layout({"grad": 4}).split([math.inf, math.nan, -1.0, -0.0])
    assert parts["grad"][0] == math.inf and math.isnan(parts["grad"][1]) and math.isnan(parts["grad"][2]) and parts["grad"][3] == 0.0
    with pytest.raises(ValueError, match="3 values"):
        Layout({"grad": 4}).split([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="undeclared"):
        Layout({"gradient": 1})

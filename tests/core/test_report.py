"""JSON summary: schema, atomic writing, loading with one-line errors; remedies; import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from gradwatch import LayerFacts, ModelFacts, Monitor, SummaryError, load_summary
from gradwatch.remedies import rank
from gradwatch.report import schema_path

from .streams import sample


def _sick_report():
    monitor = Monitor(warn_on=None, facts=ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid") for i in range(4))))
    for step in range(4):
        monitor.observe(sample(step, [1e-7, 1e-4, 1e-2, 1e-1], loss=float("nan") if step == 3 else 1.0 - 0.01 * step))
    return monitor.report()


def test_summary_validates_against_the_shipped_schema_and_round_trips(tmp_path):
    report = _sick_report()
    path = report.write_json(tmp_path / "gw.json")
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(schema_path().read_text()))
    assert [f["symptom"] for f in data["findings"]] == ["nonfinite", "vanishing_gradients"]
    assert data["layers"][0]["history"]["step"] == [0, 1, 2, 3]
    again = load_summary(path)
    assert again.to_summary() == data
    assert list(tmp_path.iterdir()) == [path], "no temporary file is left behind"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("{not json", "invalid JSON at line 1 column 2"),
        ('{"schema": "gradwatch.summary/99"}', "unsupported summary schema 'gradwatch.summary/99'"),
        ("[1, 2]", "not a gradwatch summary"),
        ('{"schema": "gradwatch.summary/1", "framework": "x"}', "malformed gradwatch summary: KeyError"),
    ],
)
def test_loading_bad_files_gives_one_line_errors(tmp_path, content, message):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SummaryError, match=message) as error:
        load_summary(path)
    assert "\n" not in str(error.value)


def test_remedies_fit_the_model():
    vanilla = ModelFacts(layers=(LayerFacts("rnn", "RNN", activation="Tanh"), LayerFacts("fc", "Linear")), recurrent=("RNN",))
    assert rank("vanishing_gradients", vanilla)[0].id == "gated_rnn"
    relu_bn = ModelFacts(
        layers=tuple(LayerFacts(f"l{i}", "Linear", activation="ReLU") for i in range(8)), normalization=("bn",), residual=True
    )
    ids = [r.id for r in rank("vanishing_gradients", relu_bn)]
    assert "relu_family" not in ids and "normalization" not in ids and "skip_connections" not in ids
    sigmoid = ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid") for i in range(9)) + (LayerFacts("out", "Linear"),))
    first = rank("vanishing_gradients", sigmoid)[0]
    assert first.id == "relu_family" and first.why.startswith("9 of your 10 layers are followed by Sigmoid")
    decay = rank("weight_collapse", ModelFacts(lr=0.1, weight_decay=0.5))[0]
    assert decay.id == "reduce_weight_decay" and "0.5" in decay.why and "0.95" in decay.why


def test_import_gradwatch_loads_no_framework():
    code = (
        "import sys, gradwatch, gradwatch.cli, gradwatch.console; "
        "print(sorted(m for m in ('torch','tensorflow','keras','lightning','pytorch_lightning','jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

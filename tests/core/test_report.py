"""JSON summary: schema, atomic writing, loading with one-line errors; remedies; import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from gradwatch import LayerFacts, ModelFacts, Session, SummaryError, load_summary
from gradwatch import report as report_module
from gradwatch.remedies import rank
from gradwatch.summary_check import excess_nesting, schema_path

from .streams import sample


def _sick_report():
    session = Session(warn_on=None, facts=ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid") for i in range(4))))
    for step in range(4):
        session.observe(sample(step, [1e-7, 1e-4, 1e-2, 1e-1], loss=float("nan") if step == 3 else 1.0 - 0.01 * step))
    return session.report()


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
        ('{"schema": "gradwatch.summary/99"}', 'unsupported summary schema "gradwatch.summary/99"'),
        ("[1, 2]", "not a gradwatch summary"),
        ('{"schema": "gradwatch.summary/1", "framework": "x"}', "invalid summary at \\$.steps: required field is missing"),
        ("[" * 200_000 + "]" * 200_000, "JSON nested 200000 levels deep; a summary is at most 64 deep"),
        ('{"a": "' + "[" * 100 + '"}', 'not a gradwatch summary \\(no "schema"'),  # brackets inside a string do not nest
        ("\xff\xfe{}", "not UTF-8 text"),
        ('{"schema": "gradwatch.summary/1", "steps": ' + "9" * 5000 + "}", "invalid JSON: Exceeds the limit"),
    ],
)
def test_loading_bad_files_gives_one_line_errors(tmp_path, content, message):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_bytes(content.encode("latin-1") if content.startswith("\xff") else content.encode())
    with pytest.raises(SummaryError, match=message) as error:
        load_summary(path)
    assert "\n" not in str(error.value)


def _mutated(change) -> dict:
    data = _sick_report().to_summary()
    change(data)
    return data


def _set(path, value):
    def change(data):
        *parents, last = path
        for part in parents:
            data = data[part]
        data[last] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set(["findings", 0, "severity"], "fatal"), '$.findings[0].severity: expected one of "info", "warning", "critical", got "fatal"'),
        (_set(["findings", 1, "first_step"], "3"), '$.findings[1].first_step: expected integer, got "3"'),
        (_set(["findings", 0, "last_step"], -1), "$.findings[0].last_step: expected a number >= 0, got -1"),
        (lambda d: d["findings"][0].pop("symptom"), "$.findings[0].symptom: required field is missing"),
        (
            _set(["layers", 2, "history", "grad_norm", 1], float("nan")),
            "$.layers[2].history.grad_norm[1]: expected number or null, got NaN (not a finite number)",
        ),
        (
            _set(["layers", 0, "history", "weight_norm", 0], float("inf")),
            "$.layers[0].history.weight_norm[0]: expected number or null, got Infinity (not a finite number)",
        ),
        (_set(["layers", 0, "history", "weight_norm"], [1.0]), "$.layers[0].history.weight_norm: 1 values for 4 sampled steps"),
        (_set(["layers", 3, "history", "step"], [0, 1, 2, 5]), "$.layers[3].history.step: differs from $.layers[0].history.step"),
        (_set(["layers", 1, "time_profile"], ["x"]), '$.layers[1].time_profile[0]: expected number or null, got "x"'),
        (_set(["layers", 1, "name"], ["x"]), "$.layers[1].name: expected string, got an array of 1"),
        (_set(["facts", "layers", 0, "fan_in"], "many"), '$.facts.layers[0].fan_in: expected integer or null, got "many"'),
        (_set(["findings", 0, "remedies", 0, "why"], ""), "$.findings[0].remedies[0].why: must not be empty"),
        (_set(["notes"], "one note"), '$.notes: expected array, got "one note"'),
        (_set(["findings", 0, "evidence"], None), "$.findings[0].evidence: expected object, got null"),
        (lambda d: d["findings"].extend(d["findings"][:1] * 100), "$.findings: expected at most 100 items, got 102"),
        (_set(["layers", 0, "history", "odd key\n"], 1), '$.layers[0].history["odd key\\n"]: expected array, got 1'),
    ],
)
def test_invalid_summaries_name_the_field_by_its_json_path(tmp_path, change, message):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_mutated(change)))
    with pytest.raises(SummaryError) as error:
        load_summary(path)
    assert str(error.value).startswith(f"{path}: invalid summary at {message}")
    assert "\n" not in str(error.value)


def test_unknown_fields_are_accepted_for_newer_writers(tmp_path):
    data = _sick_report().to_summary()
    data["measured"] = {"overhead_ms": 1.5}
    data["findings"][0]["confidence"] = 0.9
    data["findings"][0]["evidence"]["new_number"] = [1, 2]
    data["facts"]["compiled"] = True
    data["facts"]["layers"][0]["dtype"] = "float32"
    data["layers"][0]["extra"] = {"any": "thing"}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    assert load_summary(path).findings[0].symptom == "nonfinite"


def test_files_over_the_size_limit_are_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_sick_report().to_summary()))
    monkeypatch.setattr(report_module, "MAX_SUMMARY_BYTES", path.stat().st_size - 1)
    with pytest.raises(SummaryError, match=f"larger than the {path.stat().st_size - 1}-byte limit"):
        load_summary(path)


def test_unpaired_surrogates_are_refused_and_pairs_accepted(tmp_path):
    data = _sick_report().to_summary()
    data["layers"][0]["name"] = "\U0001f600 emoji"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))  # ASCII JSON: the emoji is a surrogate pair escape
    assert load_summary(path).layers[0]["name"] == "\U0001f600 emoji"
    path.write_text(json.dumps(data).replace("\\ud83d\\ude00", "\\ud83d"))
    with pytest.raises(SummaryError, match=r"at \$.layers\[0\].name: a string holds an unpaired surrogate"):
        load_summary(path)


def test_nesting_scan_counts_only_brackets_outside_strings():
    assert excess_nesting('{"a": [[1], {"b": "]]]]"}]}' + "[]" * 80) is None
    assert excess_nesting('[{"b": "]]]]"}' + "[" * 69 + "]" * 70) == 70
    assert excess_nesting('["\\"", "[[[["]' * 20 + "[" * 65) == 65
    assert excess_nesting('"[[[[' * 20 + '"') is None


def test_remedies_fit_the_model():
    vanilla = ModelFacts(layers=(LayerFacts("rnn", "RNN", activation="Tanh"), LayerFacts("fc", "Linear")), recurrent=("RNN",))
    assert rank("vanishing_gradients", vanilla)[0].id == "gated_rnn"
    relu_bn = ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="ReLU") for i in range(8)), normalization=("bn",), residual=True)
    ids = [r.id for r in rank("vanishing_gradients", relu_bn)]
    assert "relu_family" not in ids and "normalization" not in ids and "skip_connections" not in ids
    sigmoid = ModelFacts(layers=tuple(LayerFacts(f"l{i}", "Linear", activation="Sigmoid") for i in range(9)) + (LayerFacts("out", "Linear"),))
    first = rank("vanishing_gradients", sigmoid)[0]
    assert first.id == "relu_family" and first.why.startswith("9 of your 10 layers are followed by Sigmoid")
    decay = rank("weight_collapse", ModelFacts(lr=0.1, weight_decay=0.5))[0]
    assert decay.id == "reduce_weight_decay" and "0.5" in decay.why and "0.95" in decay.why
    warmups = {name: next(r.why for r in rank("loss_spike", ModelFacts(optimizer=name)) if r.id == "warmup") for name in ("AdamW", "SGD")}
    assert "AdamW's running estimate" in warmups["AdamW"] and "Adam" not in warmups["SGD"]  # no Adam story for SGD


def test_import_gradwatch_loads_no_framework():
    code = (
        "import sys, gradwatch, gradwatch.cli, gradwatch.console; "
        "print(sorted(m for m in ('torch','tensorflow','keras','lightning','pytorch_lightning','jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_layer_histories_read_a_summary_as_typed_series():
    from gradwatch.report import LayerHistory

    layer = {"name": "fc1", "kind": "Linear", "history": {"step": [0, 20, 40], "grad_norm": [0.2, None, 0.01], "weight_norm": [2.0, 2.0, 0.0]}}
    history = LayerHistory.from_summary(layer)
    assert history.relative_grads() == [0.1, None, None] and history.latest_relative_grad() == 0.1
    assert history.dead_share == [None, None, None] and history.time_profile is None
    relu = LayerHistory.from_summary({"name": "act", "history": {"step": [0], "dead_share": [0.5]}})
    assert relu.kind == "?" and relu.latest_relative_grad() is None and relu.dead_share == [0.5]

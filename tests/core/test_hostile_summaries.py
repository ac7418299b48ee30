"""Real summaries mutated at random go through every CLI verb: exit 0, 1 or 2 with one line, never a traceback."""

from __future__ import annotations

import copy
import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradwatch import (
    ActivationStats,
    LayerFacts,
    ModelFacts,
    SequenceStats,
    Session,
    SummaryError,
    load_summary,
)
from gradwatch.cli import main

from .streams import sample

pytest.importorskip("matplotlib")
# matplotlib's own complaints about odd names (missing glyphs, a label too long for tight_layout) are expected here
pytestmark = pytest.mark.filterwarnings("ignore:(Glyph|Tight layout|No artists):UserWarning")


def _real_summaries() -> list[dict[str, Any]]:
    """A sick run (vanishing, dead ReLU, NaN, a recurrent time profile) and a healthy one, as written."""
    facts = ModelFacts(layers=tuple(LayerFacts(f"l{i}", "RNN" if i == 0 else "Linear", activation="Sigmoid") for i in range(4)))
    sick = Session(facts=facts, warn_on=None)
    for step in range(6):
        dead = (ActivationStats("a0", "ReLU", dead_share=0.9),)
        profile = (SequenceStats("l0", (1e-12, 1e-6, 0.1)),)
        loss = float("nan") if step == 5 else 1.0
        stats = sample(step, [1e-7, 1e-4, 1e-2, 1e-1], relative_updates=[1e-9, 1e-6, 1e-4, 1e-2], activations=dead, loss=loss)
        sick.observe(type(stats)(stats.step, stats.layers, stats.activations, stats.loss, stats.lr, profile))
    healthy = Session(warn_on=None)
    for step in range(3):
        healthy.observe(sample(step, [0.01, 0.02], relative_updates=[1e-3, 1e-3], loss=1.0 - step / 10))
    return [sick.report().to_summary(), healthy.report().to_summary()]


SUMMARIES = _real_summaries()
FOLDER = Path(tempfile.mkdtemp(prefix="gradwatch-hostile-"))
ORIGINAL = FOLDER / "original.json"
ORIGINAL.write_text(json.dumps(SUMMARIES[0]))

TEXTS = [
    "[/]",
    "[bold red]x[/]",
    "[/bold]",
    "",
    " ",
    "[",
    "]",
    "$\\frac{1}{",
    "$x$",
    "$",
    "<script>alert(1)</script>",
    "&amp;",
    '"',
    "\x1b[31mred",
    "\x00",
    "\n\n",
    "\r",
    "\u202eevil",
    "e\u0301",
    "\U0001f600",
    "\ud800",
    "%s%d{0}",
    "l0",
    "info",
    "NaN",
    "x" * 3000,
    "名前",
    "\\",
]
NUMBERS = [0, -0.0, -1, 1, 3, 2**63, 10**30, -(10**30), 1e308, -1e308, 5e-324, 1e-300, 0.5, float("nan"), float("inf"), float("-inf")]
scalars = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS), st.none(), st.booleans(), st.text(max_size=20), st.floats(), st.integers())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(TEXTS), inner, max_size=3), max_leaves=6)
FINITE = [0, -0.0, 1, 3, 2**63, 10**30, 1e308, -1e308, 5e-324, 1e-300, 0.5, -2.5]
same_kind = {
    str: st.sampled_from(TEXTS) | st.text(max_size=30),
    int: st.sampled_from(FINITE) | st.integers(),
    float: st.sampled_from(FINITE) | st.floats(allow_nan=False, allow_infinity=False),
}
ROUGH = ("replace", "replace", "same_kind", "rename_all", "delete", "insert", "duplicate", "empty")
GENTLE = ("same_kind", "same_kind", "rename_all", "duplicate")  # mostly still valid: exercises the renderers
NAMED = {"framework", "name", "kind", "message", "title", "why", "notes", "layers", "activation", "optimizer"}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        paths += _paths(item, (*prefix, key))
    return paths


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


@st.composite
def mutated(draw: st.DrawFn, gentle: bool = False) -> str:
    """JSON text of a real summary after one to three random edits (and sometimes cut short)."""
    data = copy.deepcopy(draw(st.sampled_from(SUMMARIES)))
    operations = GENTLE if gentle else draw(st.sampled_from([GENTLE, ROUGH]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        operation = draw(st.sampled_from(operations))
        target = _at(data, path)
        if operation == "rename_all":  # one hostile text for every name, message and note
            _rename(data, draw(st.sampled_from(TEXTS)))
        elif operation == "same_kind" and path and type(target) in same_kind:  # keeps many mutants valid
            _at(data, path[:-1])[path[-1]] = draw(same_kind[type(target)])
        elif operation == "replace" and path:
            _at(data, path[:-1])[path[-1]] = draw(values)
        elif operation == "delete" and path:
            del _at(data, path[:-1])[path[-1]]
        elif operation == "insert" and isinstance(target, dict):
            target[draw(st.sampled_from(TEXTS))] = draw(values)
        elif operation == "insert" and isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(values))
        elif operation == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(draw(st.sampled_from(target))))
        elif operation == "empty" and isinstance(target, (dict, list)):
            target.clear()
    text = json.dumps(data)  # NaN and Infinity as the non-standard literals Python writes
    if not gentle and draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _rename(value: Any, text: str) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in list(items):
        if isinstance(item, str) and (key in NAMED or isinstance(key, int)):
            value[key] = text
        else:
            _rename(item, text)


def _run(*argv: str) -> int:
    """Run the CLI in-process; only a clean exit is allowed, and an error is exactly one line on stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    assert code in (0, 1, 2, 3), code  # 3: check's "too little measured to judge", where the summary says so
    if code == 2:
        assert err.getvalue().startswith("gradwatch: error: ") and err.getvalue().count("\n") == 1, err.getvalue()
    return code


def _loads(path: Path) -> bool:
    try:
        load_summary(path)
    except SummaryError:
        return False
    return True


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_text_verbs_survive_any_mutation(text):
    path = FOLDER / "text-verbs.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    valid = _loads(path)
    expected = {0} if valid else {2}
    assert _run("report", str(path)) in expected
    assert _run("check", str(path)) in ({0, 1, 3} if valid else {2})
    assert _run("check", str(path), "--fail-on", "critical") in ({0, 1, 3} if valid else {2})
    assert _run("compare", str(path), str(ORIGINAL)) in ({0, 1} if valid else {2})  # 1: a finding is new or worse
    assert _run("compare", str(ORIGINAL), str(path)) in ({0, 1} if valid else {2})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated(gentle=True))  # the loader is shared with the text verbs: spend the slow pictures on mostly valid files
def test_picture_verbs_survive_any_mutation(text):
    path = FOLDER / "picture-verbs.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    expected = {0} if _loads(path) else {2}
    assert _run("plot", str(path), "-o", str(FOLDER / "flow.png")) in expected
    assert _run("html", str(path), "-o", str(FOLDER / "report.html")) in expected


def test_markup_and_escapes_in_names_are_shown_as_text(tmp_path):
    data = copy.deepcopy(SUMMARIES[0])
    data["framework"] = "[bold]x[/]"
    data["layers"][0]["name"] = "[/]"
    data["layers"][1]["name"] = "$\\frac{1}{"
    data["findings"][0]["message"] = "\x1b]0;title\x07 [red]"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["report", str(path)]) == 0
    assert "[bold]x[/]" in err.getvalue() and "[/]" in err.getvalue() and "\x1b" not in err.getvalue()
    assert _run("plot", str(path), "-o", str(tmp_path / "f.png")) == 0
    assert _run("compare", str(path), str(path)) == 0


VERBS = [["report"], ["check"], ["plot", "-o", str(FOLDER / "v.png")], ["html", "-o", str(FOLDER / "v.html")], ["compare", str(ORIGINAL)]]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
@pytest.mark.parametrize("hostile", ["deep", "large"])
def test_deep_nesting_and_oversize_files_are_one_line_and_exit_2(tmp_path, monkeypatch, verb, hostile):
    path = tmp_path / "hostile.json"
    if hostile == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
        message = "JSON nested 200000 levels deep"
    else:
        path.write_text(ORIGINAL.read_text() + " " * 2048)
        monkeypatch.setattr("gradwatch.report.MAX_SUMMARY_BYTES", len(ORIGINAL.read_text()) + 1024)
        message = "-byte limit for a summary"
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert main([verb[0], str(path), *verb[1:]]) == 2
    assert err.getvalue().count("\n") == 1 and message in err.getvalue()

"""Examples run end to end; plot, HTML and compare render what the summary holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gradwatch import GradWatchWarning, load_summary
from gradwatch.cli import main
from gradwatch.compare import compare
from gradwatch.plot import flow_matrix

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "pytorch_mlp.py": (["--steps", "60"], "vanishing_gradients"),
    "pytorch_rnn.py": (["--steps", "30"], "vanishing_gradients"),
    "lightning_mlp.py": (["--steps", "60"], None),
    "keras_mlp.py": (["--epochs", "1"], "vanishing_gradients"),
    "transformers_gpt2.py": (["--steps", "40", "--lr", "30", "--optim", "sgd", "--max-grad-norm", "0"], "nonfinite"),
}


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs_and_writes_its_summary(tmp_path, script):
    arguments, symptom = EXAMPLES[script]
    summary = tmp_path / "gw.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *arguments, "--summary", str(summary)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = load_summary(summary)
    if symptom:
        assert report.finding(symptom) is not None, [f.symptom for f in report.findings]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with pytest.warns(GradWatchWarning, match="vanishing_gradients"):
        assert main(["demo", "--out", str(out), "--steps", "100"]) == 0
    return out


def test_demo_diagnoses_the_sick_model_and_clears_the_remedied_one(demo):
    sick, remedied = load_summary(demo / "sigmoid.json"), load_summary(demo / "remedied.json")
    assert sick.finding("vanishing_gradients").at_least("warning")
    assert sick.finding("vanishing_gradients").remedies[0].id == "relu_family"
    assert remedied.healthy, [f.symptom for f in remedied.findings]


def test_demo_writes_png_and_html_next_to_the_json(demo):
    for name in ("sigmoid", "remedied"):
        assert (demo / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (demo / f"{name}.html").stat().st_size > 10_000  # the picture is embedded


def test_flow_matrix_is_log_relative_gradient(demo):
    report = load_summary(demo / "sigmoid.json")
    names, steps, rows = flow_matrix(report)
    first = report.layers[0]["history"]
    assert names[0] == "model[0]" and steps == first["step"]
    assert rows[0][0] == pytest.approx(__import__("math").log10(first["grad_norm"][0] / first["weight_norm"][0]))
    assert rows[0][-1] < rows[-1][-1] - 3, "the bottom layer gets orders of magnitude less gradient"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.symptoms: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-symptom" in attrs:
            self.symptoms.append(attrs["data-symptom"])
        if tag == "img":
            self.images.append(attrs["src"][:22])

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_shows_findings_remedies_and_picture(demo, tmp_path):
    assert main(["html", str(demo / "sigmoid.json"), "-o", str(tmp_path / "r.html")]) == 0
    page = _Text()
    page.feed((tmp_path / "r.html").read_text())
    text = " ".join(page.text)
    assert "vanishing_gradients" in page.symptoms and page.images == ["data:image/png;base64,"]
    assert "Use ReLU-family activations" in text and "http" not in (tmp_path / "r.html").read_text().split("<img")[0]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")
def test_html_report_in_a_real_browser(demo, tmp_path):
    assert main(["html", str(demo / "sigmoid.json"), "-o", str(tmp_path / "r.html")]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    dom = subprocess.run(
        ["chromium", *flags, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (tmp_path / "r.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert 'data-symptom="vanishing_gradients"' in dom and "Use ReLU-family activations" in dom


def test_compare_before_and_after_the_remedy(demo, capsys):
    result = compare(load_summary(demo / "sigmoid.json"), load_summary(demo / "remedied.json"))
    assert "vanishing_gradients" in result.gone and not result.new and result.improved
    first = result.flow[0]
    assert first[0] == "Linear #0 (model[0])" and first[2] / first[1] > 1e3
    assert main(["compare", str(demo / "sigmoid.json"), str(demo / "remedied.json")]) == 0
    assert "gone:    vanishing_gradients" in capsys.readouterr().out

"""The documentation: the site builds with ``mkdocs build --strict`` (broken links and nav fail it),
the code snippets of the README and the docs hold together, and the API reference lists the
public API, all of it and nothing else."""

from __future__ import annotations

import ast
import builtins
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What a snippet may leave to the reader: their own model, data and training pieces.
YOURS = {"model", "optimizer", "loader", "loss_fn", "x", "y", "make_model", "make_optimizer", "batches", "train_dataset"}
# Public, though in no ``__all__``: what ``trial()`` returns, and the error of a bad option.
PUBLIC_ELSEWHERE = {
    "gradwatch.trial.TrialResult",
    "gradwatch.trial.TrialRow",
    "gradwatch.trial.NotApplicable",
    "gradwatch.trial.load_trial",
    "gradwatch.options.OptionError",
}
# Modules whose ``__all__`` is the public API, and the dotted name each is documented under.
EXPORTING = {
    "gradwatch/__init__.py": "gradwatch",
    "gradwatch/detectors/__init__.py": "gradwatch.detectors",
    "integrations/pytorch.py": "integrations.pytorch",
    "integrations/lightning.py": "integrations.lightning",
    "integrations/keras.py": "integrations.keras",
    "integrations/transformers.py": "integrations.transformers",
}


def test_mkdocs_strict_build(tmp_path):
    pytest.importorskip("mkdocs")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "site" / "symptoms" / "index.html").exists()


def python_snippets() -> list[tuple[str, str]]:
    """Every ```python block of the README and the docs, with where it is."""
    found = []
    for page in PAGES:
        for i, block in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)):
            found.append((f"{page.relative_to(ROOT)} snippet {i + 1}", block))
    return found


def undefined_names(tree: ast.AST) -> set[str]:
    """Names a snippet reads but neither imports nor assigns (nor Python provides)."""
    defined, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return read - defined


def test_snippets_parse_and_leave_only_your_own_objects_undefined():
    snippets = python_snippets()
    assert len(snippets) >= 10, "the README and docs hold the quick starts"
    for where, code in snippets:
        tree = ast.parse(code, filename=where)
        assert undefined_names(tree) <= YOURS, f"{where} uses {sorted(undefined_names(tree) - YOURS)} without saying what they are"


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_lightning_snippets_bound_the_training():
    """Lightning trains for 1000 epochs unless told otherwise: a snippet copied as written must not."""
    trainers = []
    for where, code in python_snippets():
        tree = ast.parse(code)
        if any(isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in ("lightning", "pytorch_lightning") for n in ast.walk(tree)):
            trainers += [(where, call) for call in calls(tree, "Trainer")]
    assert len(trainers) >= 2, "the README and getting-started both show a Lightning Trainer"
    for where, call in trainers:
        assert {k.arg for k in call.keywords} & {"max_epochs", "max_steps"}, f"{where}: Trainer without max_epochs or max_steps"


def public_api() -> dict[str, set[str]]:
    """Each exported name, with the dotted paths it may be documented under (its package's, its module's)."""
    public: dict[str, set[str]] = {}
    for file, package in EXPORTING.items():
        tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
        names = next(
            ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
        )
        where = {name: {f"{package}.{name}"} for name in names if not name.startswith("__")}
        base = package if file.endswith("__init__.py") else package.rpartition(".")[0]
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                for alias in node.names:
                    if alias.name in where:
                        where[alias.name].add(f"{base}.{node.module}.{alias.name}")
        for name, paths in where.items():
            public[f"{package}.{name}"] = paths
    for path in PUBLIC_ELSEWHERE:
        public[path] = {path}
    return public


def test_api_reference_lists_the_public_api_and_nothing_else():
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = re.findall(r"^::: *(\S+)", text, re.M)
    public = public_api()
    assert {"gradwatch.GradWatchWarning", "gradwatch.detectors.default_detectors", "integrations.keras.trial"} <= set(public)
    for name, paths in public.items():
        if name.rpartition(".")[2].isupper():  # a constant: named in the text
            assert f"`{name}`" in text, f"docs/api.md does not mention {name}"
        else:
            assert paths & set(documented), f"docs/api.md does not document {name} (as one of {sorted(paths)})"
    allowed = set().union(*public.values())
    internal = [target for target in documented if target not in allowed]
    assert not internal, f"docs/api.md documents names outside the public API: {internal}"

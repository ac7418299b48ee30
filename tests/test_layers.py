"""The import contracts in pyproject.toml (checked by `lint-imports` in `make lint`) cover every core module."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = __import__("pytest").importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# Modules of the gradwatch package that render or run things, and may import rich, matplotlib or the adapters.
OUTSIDE_THE_CORE = {
    "gradwatch.console",
    "gradwatch.plot",
    "gradwatch.html",
    "gradwatch.cli",
    "gradwatch.__main__",
    "gradwatch.commands",
    "gradwatch.demo",
    "gradwatch.run",
    "gradwatch._boot",
}


def test_every_module_of_the_package_is_either_core_or_named_as_outside_it():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = set(next(c for c in config["contracts"] if c["id"] == "core-is-framework-free")["source_modules"])
    modules = {f"gradwatch.{p.stem}" for p in (ROOT / "gradwatch").iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    modules |= {f"gradwatch.{p.name}" for p in (ROOT / "gradwatch").iterdir() if (p / "__init__.py").exists() or p.name == "_boot"}
    assert modules - core - OUTSIDE_THE_CORE == set()
    assert core & OUTSIDE_THE_CORE == set()

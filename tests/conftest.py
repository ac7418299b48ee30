"""Each test folder needs its framework: an install without it skips those tests instead of failing to collect.

Tests are also marked by framework (``-m torch``, ``-m keras``, ``-m "not lightning"`` ...); ``tests/core``
needs no framework at all (``make test-core``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

NEEDS = {  # test folder or module -> (marker, the packages it imports)
    "torch": ("torch", ("torch",)),
    "distributed": ("torch", ("torch",)),
    "lightning": ("lightning", ("torch", "lightning")),
    "transformers": ("transformers", ("torch", "transformers")),
    "keras": ("keras", ("keras",)),
    "test_real_clinic.py": ("torch", ("torch",)),
    "test_examples_and_pictures.py": ("torch", ("torch", "matplotlib")),
}
HERE = Path(__file__).parent
MISSING = {name: [m for m in modules if importlib.util.find_spec(m) is None] for name, (_, modules) in NEEDS.items()}
collect_ignore = [str(HERE / name) for name, missing in MISSING.items() if missing]


def pytest_configure(config: pytest.Config) -> None:
    for marker in sorted({marker for marker, _ in NEEDS.values()}):
        config.addinivalue_line("markers", f"{marker}: needs {marker} installed (skipped at collection without it)")


def pytest_report_header() -> list[str]:
    skipped = [f"{name} (no {', '.join(missing)})" for name, missing in MISSING.items() if missing]
    return [f"gradwatch: not collected for want of a framework: {'; '.join(skipped)}"] if skipped else []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(item.path).relative_to(HERE).parts
        for part in relative[:1]:
            if part in NEEDS:
                item.add_marker(getattr(pytest.mark, NEEDS[part][0]))

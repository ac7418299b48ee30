"""A clone stands alone: nothing in the project reads files from beside the checkout (such as ``../shared``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"""parents\[\d+\]\s*/\s*["']shared["']|["']\.\./shared|shared/datasets""")


def test_no_code_reads_beside_the_clone() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("gradwatch", "integrations", "benchmarks", "tests", "examples")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not offenders, f"these lines read data from outside the clone: {offenders}"


def test_clinic_data_ships_with_the_clone() -> None:
    data = ROOT / "benchmarks" / "clinic" / "data"
    assert (data / "t10k-images-idx3-ubyte.gz").stat().st_size > 1_000_000
    assert (data / "t10k-labels-idx1-ubyte.gz").stat().st_size > 4_000

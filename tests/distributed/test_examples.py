"""The torchrun line of the README, run as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradwatch import load_summary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.distributed


def test_torchrun_example_reports_once_from_rank_zero(tmp_path):
    summary = tmp_path / "gw.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(ROOT / "examples" / "pytorch_ddp.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [*command, "--steps", "40", "--summary", str(summary)], check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("vanishing_gradients (critical)") >= 1
    assert run.stdout.count("╭") + run.stderr.count("╭") == 1, "one console report, from rank 0"
    assert load_summary(summary).finding("vanishing_gradients") is not None

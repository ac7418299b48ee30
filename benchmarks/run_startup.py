"""Startup cost of ``gradwatch run`` over plain ``python``: a script that imports nothing heavy, median of N runs.

    python -m benchmarks.run_startup              # 15 runs of each command, interleaved
    python -m benchmarks.run_startup --runs 30 --torch

Commands timed (wall clock, each a fresh process, in turn so that machine load falls on all alike):
``python hello.py``; ``gradwatch run hello.py`` (the console script); ``python -m gradwatch.run hello.py``;
``GRADWATCH=1 python hello.py`` with the boot folder on ``PYTHONPATH``; and that folder on ``PYTHONPATH``
with the switch off. ``--torch`` adds a script that imports torch, plain and under ``gradwatch run``:
the cost beside the framework's own import. Target: at most 0.3 s over plain ``python``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradwatch.run import BOOT

TARGET_S = 0.3


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--torch", action="store_true", help="also a script that imports torch")
    args = parser.parse_args(argv)
    python = sys.executable
    console = str(Path(python).with_name("gradwatch"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH")}
    switched = {**env, "PYTHONPATH": str(BOOT), "GRADWATCH": "1"}
    off = {**env, "PYTHONPATH": str(BOOT)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "hello.py").write_text("print('hello')\n", encoding="utf-8")
        (folder / "torch_hello.py").write_text("import torch\nprint(torch.ones(2).sum().item())\n", encoding="utf-8")
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python hello.py": ([python, "hello.py"], env),
            "gradwatch run hello.py": ([console, "run", "hello.py"], env),
            "python -m gradwatch.run hello.py": ([python, "-m", "gradwatch.run", "hello.py"], env),
            "GRADWATCH=1 python hello.py": ([python, "hello.py"], switched),
            "boot on PYTHONPATH, switch off": ([python, "hello.py"], off),
        }
        if args.torch:
            commands["python torch_hello.py"] = ([python, "torch_hello.py"], env)
            commands["gradwatch run torch_hello.py"] = ([console, "run", "torch_hello.py"], env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (command, command_env) in commands.items():
                times[name].append(timed(command, folder, command_env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["python hello.py"]
    print(f"{'command':<36} {'median s':>9} {'over python':>12}   ({args.runs} runs each)")
    for name, median in medians.items():
        reference = medians["python torch_hello.py"] if "torch_hello" in name else base
        print(f"{name:<36} {median:>9.3f} {median - reference:>+12.3f}")
    worst = max(medians["gradwatch run hello.py"], medians["python -m gradwatch.run hello.py"]) - base
    print(f"\ngradwatch run over python: {worst:+.3f} s (target <= {TARGET_S} s): {'met' if worst <= TARGET_S else 'NOT met'}")
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())

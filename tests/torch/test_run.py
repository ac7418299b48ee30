"""``gradwatch run``: an unmodified PyTorch script, run in a subprocess, gets a summary; its training, output and exit code are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

LOOP = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
if "--sick" in sys.argv:  # ten sigmoid layers under plain SGD: the gradients vanish
    layers = [nn.Linear(8, 32), nn.Sigmoid()]
    for _ in range(10):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(32, 1))
else:
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 8)
y = x.sum(1, keepdim=True)
loss_fn = nn.MSELoss()
for step in range(STEPS):
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("argv", sys.argv[1:])
print("final", loss.item().hex())
print("weights", sum(p.double().sum().item() for p in model.parameters()).hex())
"""


def script(tmp_path: Path, body: str, name: str = "train.py", steps: int = 40) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).replace("STEPS", str(steps)), encoding="utf-8")
    return path


def gradwatch_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gradwatch.cli", "run", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def started(cwd: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A process started at once, so that independent runs overlap (each pays for importing torch)."""
    return subprocess.Popen([sys.executable, *command], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_plain_loop_is_watched_and_trains_bit_for_bit_as_without(tmp_path):
    script(tmp_path, LOOP)
    # gradwatch's watcher made to fail, in a folder of its own (python -m gradwatch.run, the form for launchers)
    failing = tmp_path / "failing"
    script(
        failing / "site",
        "from gradwatch.integrations.pytorch import Watcher\ndef boom(*a, **k):\n    raise RuntimeError('injected')\nWatcher.__init__ = boom\n",
        name="sitecustomize.py",
    )
    script(failing, LOOP)
    env = {**os.environ, "PYTHONPATH": str(failing / "site")}
    chosen = script(tmp_path / "chosen", LOOP).parent  # watch() options as flags
    runs = [
        started(tmp_path, "-m", "gradwatch.cli", "run", "train.py", "--lr", "3"),
        started(tmp_path, "train.py", "--lr", "3"),
        started(failing, "-m", "gradwatch.run", "train.py", "--lr", "3", env=env),
        started(chosen, "-m", "gradwatch.cli", "run", "--no-print-report", "--history-size", "4", "--summary", "s.json", "train.py", "--lr", "3"),
    ]
    watched, alone, broken, flagged = (finished(run) for run in runs)
    assert alone.returncode == 0, alone.stderr
    assert watched.returncode == 0, watched.stderr
    summary = json.loads((tmp_path / "gradwatch-train.json").read_text())
    assert summary["framework"] == "pytorch" and summary["steps"] == 40
    for prefix in ("argv", "final", "weights"):
        assert lines(watched.stdout, prefix) == lines(alone.stdout, prefix), prefix
    assert lines(watched.stdout, "argv") == ["argv ['--lr', '3']"]
    assert "gradwatch" in watched.stderr and "sampled of 40 steps" in watched.stderr  # the console report

    assert broken.returncode == 0, broken.stderr  # gradwatch failed: one warning, the same training, no summary
    assert broken.stderr.count("injected") == 1
    assert broken.stdout == alone.stdout
    assert not (failing / "gradwatch-train.json").exists()

    assert flagged.returncode == 0 and flagged.stdout == alone.stdout and "sampled of 40 steps" not in flagged.stderr
    history = json.loads((chosen / "s.json").read_text())["layers"][0]["history"]["step"]
    assert 2 <= len(history) <= 4, history


def test_exit_codes_and_tracebacks_are_the_scripts(tmp_path):
    script(tmp_path, "import sys\nprint('hello')\nsys.exit(3)\n", name="three.py")
    run = gradwatch_run(tmp_path, "three.py")
    assert (run.returncode, run.stdout) == (3, "hello\n")
    script(tmp_path, "def f():\n    raise ValueError('boom')\nf()\n", name="boom.py")
    run = gradwatch_run(tmp_path, "boom.py")
    assert run.returncode == 1
    assert run.stderr.startswith("Traceback (most recent call last):\n  File ") and "boom.py" in run.stderr.splitlines()[1]
    assert run.stderr.rstrip().endswith("ValueError: boom")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    script(tmp_path, "import sys\nprint(sys.argv[1:])\nsys.exit('bye')\n", name="pkg/main.py")
    run = gradwatch_run(tmp_path, "-m", "pkg.main", "--summary", "x")
    assert (run.returncode, run.stdout, run.stderr) == (1, "['--summary', 'x']\n", "bye\n")
    assert gradwatch_run(tmp_path, "missing.py").returncode == 2


DROP_IN = """
import torch
from torch import nn
from gradwatch.integrations.pytorch import watch

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(32, 8), torch.randn(32, 1)
with watch(model, optimizer, summary_path="own.json") as watcher:
    for step in range(STEPS):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        watcher.step(loss)
"""


def test_a_sick_script_is_diagnosed_and_a_script_that_watches_itself_is_not_watched_twice(tmp_path):
    sick, own = tmp_path / "sick", tmp_path / "own"
    script(sick, LOOP, steps=40)
    script(own, DROP_IN, steps=30)
    runs = [
        started(
            sick, "-m", "gradwatch.cli", "run", "--summary", "out/sick.json", "--every-n-steps", "4", "--stop-on", "warning", "train.py", "--sick"
        ),
        started(own, "-m", "gradwatch.cli", "run", "train.py"),
    ]
    sick_run, own_run = (finished(run) for run in runs)

    assert sick_run.returncode == 0, sick_run.stderr
    summary = json.loads((sick / "out" / "sick.json").read_text())
    assert summary["steps"] == 40 and summary["every_n_steps"] == 4
    assert "vanishing_gradients" in {f["symptom"] for f in summary["findings"]}
    assert "gradwatch run cannot end a plain PyTorch loop from outside, so it goes on (stop_on='warning')" in sick_run.stderr
    assert "stopping training" not in sick_run.stderr  # the loop ran its 40 steps: it must not say it stopped

    assert own_run.returncode == 0, own_run.stderr
    assert json.loads((own / "own.json").read_text())["steps"] == 30
    assert not (own / "gradwatch-train.json").exists()
    assert own_run.stderr.count("sampled of 30 steps") == 1
    assert "already watched" not in own_run.stderr


DEAD = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
nn.init.constant_(model[2].bias, -4.0)  # most units of the second ReLU never fire
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
watcher = None
if "--drop-in" in sys.argv:
    from gradwatch.integrations.pytorch import watch

    watcher = watch(model, optimizer, summary_path="gradwatch-train.json")
x = torch.randn(64, 8)
y = x.sum(1, keepdim=True)
for step in range(STEPS):
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if watcher is not None:
        watcher.step(loss)
if watcher is not None:
    watcher.close()
"""

SPARE_OPTIMIZER_FIRST = """
import torch
from torch import nn

torch.manual_seed(0)
unused = nn.Linear(4, 4)
spare = torch.optim.SGD(unused.parameters(), lr=0.1)  # the first optimizer made steps a model that never trains
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
x = torch.randn(64, 8)
for step in range(STEPS):
    loss = nn.functional.mse_loss(model(x), x[:, :1])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def test_the_summary_is_the_drop_ins_from_the_first_forward_on_and_a_spare_optimizer_is_no_model(tmp_path):
    run, own, spare = tmp_path / "run", tmp_path / "own", tmp_path / "spare"
    script(run, DEAD, steps=30)
    script(own, DEAD, steps=30)
    script(spare, SPARE_OPTIMIZER_FIRST, steps=30)
    runs = [
        started(run, "-m", "gradwatch.cli", "run", "train.py"),
        started(own, "train.py", "--drop-in"),
        started(spare, "-m", "gradwatch.cli", "run", "train.py"),
    ]
    watched, drop_in, spared = (finished(r) for r in runs)
    for done in (watched, drop_in, spared):
        assert done.returncode == 0, done.stderr
    summary = json.loads((run / "gradwatch-train.json").read_text())
    assert summary == json.loads((own / "gradwatch-train.json").read_text()), "watched from step 0's forward on, as the drop-in"
    assert summary["layers"][-1]["history"]["step"][0] == 0 and "dead_relu" in {f["symptom"] for f in summary["findings"]}
    assert sorted(p.name for p in spare.glob("*.json")) == ["gradwatch-train.json"]
    summary = json.loads((spare / "gradwatch-train.json").read_text())
    assert summary["steps"] == 30 and summary["layers"][0]["name"] == "model[0]"
    assert spared.stderr.count("sampled of 30 steps") == 1

"""``gradwatch run`` against the drop-in on the real-program clinic: the same findings, the same training.

Each real program (``benchmarks/clinic/real_torch``, ``real_lightning``, ``real_keras``) runs three times,
each in a fresh process:

* plain: the program as written, with no gradwatch (``attach`` hands back a recorder of the losses; the
  Lightning callback and the Keras ``fit`` call are the program's own, without gradwatch's callback);
* run: the same plain program under ``python -m gradwatch.run`` (the drop-in switched off);
* drop-in: the program with gradwatch attached as the clinic attaches it (``watch(...)``, or the
  framework's ``GradWatchCallback``), with the clinic's options.

Findings are read from each watched run's JSON summary; "same" means the same (symptom, severity) pairs,
and, as the clinic counts, the same symptoms at warning level and above. Training is "identical" when
the losses and the final weights of the run are bit for bit those of the plain program.

    python -m benchmarks.run_clinic                       # every real case (the full measurement)
    python -m benchmarks.run_clinic --limit 6             # the first 6
    python -m benchmarks.run_clinic --cases rt_quickstart,rl_autoencoder --frameworks pytorch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("plain", "run", "drop-in")
FRAMEWORKS = ("pytorch", "lightning", "keras")


# -- one program in this process ------------------------------------------------------------------


class Fingerprint:
    """The losses a program handed over, in order, and a hash of its final weights."""

    def __init__(self) -> None:
        self.losses: list[Any] = []
        self.weights = ""

    def loss(self, value: Any) -> None:
        self.losses.append(value.detach().clone() if hasattr(value, "detach") else value)

    def torch_weights(self, module: Any) -> None:
        digest = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.weights = digest.hexdigest()

    def keras_weights(self, model: Any) -> None:
        digest = hashlib.sha256()
        for array in model.get_weights():
            digest.update(array.tobytes())
        self.weights = digest.hexdigest()

    def result(self) -> dict[str, Any]:
        values = [float(v) for v in self.losses]
        digest = hashlib.sha256(b"".join(v.hex().encode() for v in values)).hexdigest()
        return {"losses": digest, "n_losses": len(values), "last_loss": values[-1] if values else None, "weights": self.weights}


def run_torch(name: str, mode: str, summary: str | None) -> Fingerprint:
    import torch

    from benchmarks.clinic import real_torch
    from gradwatch.integrations.pytorch import watch

    torch.set_num_threads(1)
    fingerprint = Fingerprint()
    models: list[Any] = []
    watchers: list[Any] = []

    class Recorder:
        def __init__(self, watcher: Any) -> None:
            self.watcher = watcher

        def step(self, loss: Any) -> None:
            fingerprint.loss(loss)
            if self.watcher is not None:
                self.watcher.step(loss)

    def attach(model: Any, optimizer: Any, probe: Any) -> Recorder:
        models.append(model)
        watcher = None
        if mode == "drop-in":  # as the clinic attaches it (first model only closed, as there)
            watcher = watch(model, optimizer, print_report=False, warn_on=None, summary_path=summary if not watchers else None)
            watchers.append(watcher)
        return Recorder(watcher)

    real_torch.PROGRAMS[name](attach)
    if watchers:
        watchers[0].close()
    fingerprint.torch_weights(models[0])
    return fingerprint


def run_lightning(name: str, mode: str, summary: str | None) -> Fingerprint:
    import lightning.pytorch as L
    import torch

    from benchmarks.clinic import real_lightning
    from gradwatch.integrations.lightning import GradWatchCallback

    torch.set_num_threads(1)
    fingerprint = Fingerprint()

    def record(outputs: Any) -> None:
        fingerprint.loss(outputs["loss"] if isinstance(outputs, dict) else outputs)

    class Plain(L.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            record(outputs)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            fingerprint.torch_weights(pl_module)

    class DropIn(GradWatchCallback):  # type: ignore[misc]
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            record(outputs)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            super().on_train_end(trainer, pl_module)
            fingerprint.torch_weights(pl_module)

    made: list[Any] = []

    def make(probe: Any) -> Any:
        first = not made
        made.append(DropIn(print_report=False, warn_on=None, summary_path=summary if first else None) if mode == "drop-in" else Plain())
        return made[-1]

    real_lightning.PROGRAMS[name](make)
    return fingerprint


def run_keras(name: str, mode: str, summary: str | None) -> Fingerprint:
    from benchmarks.clinic import real_keras
    from gradwatch.integrations.keras import GradWatchCallback

    fingerprint = Fingerprint()
    setup = real_keras.PROGRAMS[name]()
    extra: dict[str, Any] = {}
    if mode == "drop-in":
        extra["callbacks"] = [GradWatchCallback(print_report=False, warn_on=None, summary_path=summary)]
    history = setup.model.fit(setup.x, setup.y, verbose=0, **setup.fit, **extra)
    for value in history.history.get("loss", []):
        fingerprint.loss(value)
    fingerprint.keras_weights(setup.model)
    return fingerprint


RUNNERS: dict[str, Callable[[str, str, str | None], Fingerprint]] = {"pytorch": run_torch, "lightning": run_lightning, "keras": run_keras}


def names(framework: str) -> list[str]:
    """The real cases of one framework, in the clinic's order."""
    if framework == "pytorch":
        from benchmarks.clinic import real_torch

        return [c.name for c in real_torch.CASES]
    if framework == "lightning":
        from benchmarks.clinic import real_lightning

        return [c.name for c in real_lightning.CASES]
    from benchmarks.clinic import real_keras

    return [c.name for c in real_keras.CASES]


def one(framework: str, name: str, mode: str, out: str, summary: str | None) -> int:
    start = time.perf_counter()
    fingerprint = RUNNERS[framework](name, mode, summary)
    result = {**fingerprint.result(), "seconds": time.perf_counter() - start}
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    return 0


# -- the measurement ------------------------------------------------------------------------------


@dataclass
class Compared:
    framework: str
    name: str
    same_findings: bool
    same_reported: bool
    identical: bool
    dropin_identical: bool
    run_findings: list[tuple[str, str]]
    dropin_findings: list[tuple[str, str]]
    seconds: dict[str, float]
    error: str = ""


def findings(summary: Path) -> list[tuple[str, str]]:
    data = json.loads(summary.read_text(encoding="utf-8"))
    return sorted((f["symptom"], f["severity"]) for f in data["findings"])


def reported(found: list[tuple[str, str]]) -> set[str]:
    return {symptom for symptom, severity in found if severity in ("warning", "critical")}


def measure(framework: str, name: str, folder: Path) -> Compared:
    """The three runs of one case, each in a fresh process, compared."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("GRADWATCH", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seconds: dict[str, float] = {}
    problems: list[str] = []
    for mode in MODES:
        out, summary = folder / f"{mode}.json", folder / f"{mode}-summary.json"
        own = ["-m", "benchmarks.run_clinic", "--one", name, "--framework", framework, "--out", str(out)]
        if mode == "plain":
            command = [sys.executable, *own, "--mode", "plain"]
        elif mode == "run":
            command = [sys.executable, "-m", "gradwatch.run", "--summary", str(summary), *own, "--mode", "plain"]
        else:
            command = [sys.executable, *own, "--mode", "drop-in", "--summary", str(summary)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        seconds[mode] = round(time.perf_counter() - start, 1)
        if done.returncode != 0 or not out.exists():
            problems.append(f"{mode} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}")
    if problems:
        return Compared(framework, name, False, False, False, False, [], [], seconds, "; ".join(problems))
    plain, run, dropin = (json.loads((folder / f"{mode}.json").read_text()) for mode in MODES)
    run_summary, dropin_summary = folder / "run-summary.json", folder / "drop-in-summary.json"
    if not run_summary.exists() or not dropin_summary.exists():
        missing = [p.name for p in (run_summary, dropin_summary) if not p.exists()]
        return Compared(framework, name, False, False, False, False, [], [], seconds, f"no summary: {missing}")
    run_found, dropin_found = findings(run_summary), findings(dropin_summary)
    keys = ("losses", "n_losses", "weights")
    return Compared(
        framework,
        name,
        run_found == dropin_found,
        reported(run_found) == reported(dropin_found),
        all(run[k] == plain[k] for k in keys),
        all(dropin[k] == plain[k] for k in keys),
        run_found,
        dropin_found,
        seconds,
    )


def table(rows: list[Compared]) -> str:
    lines = [f"{'case':<32} {'framework':<9} {'findings':<9} {'>=warning':<9} {'training':<9} {'secs plain/run/drop-in':<22}"]
    for r in rows:
        secs = "/".join(f"{r.seconds.get(m, 0):.0f}" for m in MODES)
        if r.error:
            lines.append(f"{r.name:<32} {r.framework:<9} ERROR: {r.error}")
            continue
        lines.append(
            f"{r.name:<32} {r.framework:<9} {'same' if r.same_findings else 'DIFFER':<9} {'same' if r.same_reported else 'DIFFER':<9} "
            f"{'identical' if r.identical else 'CHANGED':<9} {secs:<22}"
        )
        if not r.same_findings:
            lines.append(f"    run: {r.run_findings}\n    drop-in: {r.dropin_findings}")
    n = len(rows)
    same = sum(r.same_findings for r in rows)
    same_reported = sum(r.same_reported for r in rows)
    identical = sum(r.identical for r in rows)
    lines += [
        "",
        f"same findings (symptom and severity): {same}/{n} ({same / max(n, 1):.0%})",
        f"same symptoms at warning and above:   {same_reported}/{n} ({same_reported / max(n, 1):.0%})",
        f"training identical to the plain run:  {identical}/{n}",
        f"drop-in identical to the plain run:   {sum(r.dropin_identical for r in rows)}/{n}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated, of: " + ", ".join(FRAMEWORKS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # one program in this process
    parser.add_argument("--framework", default="pytorch", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="plain", choices=("plain", "drop-in"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--summary", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        return one(args.framework, args.one, args.mode, args.out, args.summary)

    wanted = {c for c in args.cases.split(",") if c}
    cases = [(fw, name) for fw in args.frameworks.split(",") if fw for name in names(fw) if not wanted or name in wanted]
    if args.limit is not None:
        cases = cases[: args.limit]
    rows: list[Compared] = []
    with tempfile.TemporaryDirectory() as tmp:
        for framework, name in cases:
            folder = Path(tmp) / name
            folder.mkdir()
            rows.append(measure(framework, name, folder))
            r = rows[-1]
            verdict = r.error or f"findings {'same' if r.same_findings else 'DIFFER'}, training {'identical' if r.identical else 'CHANGED'}"
            print(f"{name}: {verdict} ({r.seconds})", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    return 0 if all(r.same_findings and r.identical for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

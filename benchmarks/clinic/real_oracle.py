"""The independent oracle behind the labels of ``real_torch`` and ``real_lightning`` (no gradwatch here).

Each real program is written once as ``program(attach)``; ``attach(model, optimizer, probe)`` returns
an object with ``.step(loss)``. Under gradwatch it is ``watch(...)``; here it is an ``OracleRecorder``
that runs the same program with the same seed and, at 11 points of the planned run (start, every 10%),
measures on a fixed probe batch (>= 256 rows where the data allow; gradients via
``torch.autograd.grad`` in eval mode, so ``.grad``, RNG and training are not disturbed):

* ``loss`` on the probe batch (``loss0`` start, ``loss20`` at 20%, ``loss_end`` last probe) and accuracy;
* gradient norm of the first and the last weight matrix (parameters with >= 2 dims, in registration
  order) and of all weights; ``ratio`` = first / last;
* for recurrent programs, the gradient reaching the input at the first time step that carries
  information vs the last time step (``time_ratio``);
* per ``nn.ReLU`` call, the share of units (features; channels for convolutions) never active over the
  whole probe batch;
* total weight norm; the first step where a training loss, a weight or a forward output is NaN/Inf.

Label rules, checked in this order; the first that holds is the label, later ones that also hold are
listed as ``also`` (they go into the case's ``allowed``):

1. ``nonfinite``: a NaN/Inf training loss, weight, forward output or probe loss appears
   (``first_nonfinite``).
2. ``exploding_gradients``: the probe loss reaches >= 10x its start, or a finite training loss
   >= 10x the first one (``train_loss_max/first``), or the total gradient norm reaches >= 100x its
   start while the final loss is no better than the start.
3. ``dead_relu``: a ReLU call has > 50% units never active at the last probe and at >= half the probes.
4. ``weight_collapse``: total weight norm at the end < 10% of its start.
5. ``vanishing_gradients``: first/last gradient ratio < 1e-3 at the median of the probes after the
   start and at the last one; or (recurrent) ``time_ratio`` median < 1e-3.
6. ``early_stagnation``: probe loss at 20% of the run >= 95% of its start and at the end >= 90%;
   or stuck at a bad value: it moves by <= 5% from 20% of the run to the end and ends >= 3x the
   final probe loss of the program's healthy twin (``TWINS``; ``ref_loss``).
7. healthy (``None``): probe loss at the end <= 70% of its start and none of the above.
   Anything else is ``unclear`` and is not used as a case.

``python -m benchmarks.clinic.real_oracle [NAME ...]`` recomputes and prints every case's numbers and
derived label next to the recorded ones.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class Probe:
    """What the oracle measures on: a fixed batch, the loss of an output, and the planned run length."""

    x: torch.Tensor
    y: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    steps: int
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    time_axis: int | None = None  # the probe input is a float sequence with time on this axis
    informative_from: int = 0  # first time step whose input carries information
    classify: bool = True  # report argmax accuracy


class Instrument(Protocol):
    def step(self, loss: torch.Tensor) -> Any: ...


Attach = Callable[[nn.Module, "torch.optim.Optimizer | None", Probe], Instrument]

ORDER = (
    "nonfinite",
    "exploding_gradients",
    "dead_relu",
    "weight_collapse",
    "vanishing_gradients",
    "early_stagnation",
)


def _finite(value: float) -> bool:
    return math.isfinite(value)


class OracleRecorder:
    """Records the loss every step and probes the model at 11 points of the planned run."""

    def __init__(self, model: nn.Module, probe: Probe) -> None:
        self.model, self.probe = model, probe
        self.weights = [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]
        self.steps_done = 0
        self.losses: list[float] = []
        self.first_nonfinite: int | None = None
        self.points = {round(k * probe.steps / 10) for k in range(11)}
        self.probes: list[dict[str, Any]] = []
        self._relu_outputs: list[torch.Tensor] | None = None
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.register_forward_hook(self._relu_hook)
        model.register_forward_hook(self._output_hook)
        self.measure()

    def _relu_hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if self._relu_outputs is not None:
            self._relu_outputs.append(output.detach())

    def _output_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        if isinstance(tensor, torch.Tensor) and self.first_nonfinite is None and not torch.isfinite(tensor).all():
            self.first_nonfinite = self.steps_done + 1  # the forward of the step being run

    def _note_nonfinite(self) -> None:
        if self.first_nonfinite is None:
            self.first_nonfinite = self.steps_done

    def step(self, loss: torch.Tensor | float) -> None:
        self.steps_done += 1
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self.losses.append(value)
        if not _finite(value) or not all(torch.isfinite(p).all() for p in self.weights):
            self._note_nonfinite()
        if self.steps_done in self.points:
            self.measure()

    def measure(self) -> None:
        probe, model = self.probe, self.model
        was_training = model.training
        model.eval()
        x = probe.x.clone().float().requires_grad_(True) if probe.time_axis is not None else probe.x
        self._relu_outputs = []
        try:
            with torch.enable_grad():
                first_nonfinite = self.first_nonfinite
                out = probe.forward(model, x) if probe.forward else model(x)
                self.first_nonfinite = first_nonfinite  # a probe forward is not a training step
                loss = probe.loss(out, probe.y)
                inputs = ([x] if probe.time_axis is not None else []) + self.weights
                grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        finally:
            relus, self._relu_outputs = self._relu_outputs, None
            model.train(was_training)
        norms = [float(g.norm()) if g is not None else 0.0 for g in grads]
        record: dict[str, Any] = {"step": self.steps_done, "loss": float(loss.detach())}
        if probe.time_axis is not None:
            per_step = grads[0].detach().transpose(0, probe.time_axis).reshape(x.shape[probe.time_axis], -1).norm(dim=1)
            record["time_ratio"] = float(per_step[probe.informative_from] / per_step[-1]) if float(per_step[-1]) > 0 else math.nan
            norms = norms[1:]
        if probe.classify:
            record["acc"] = float((out.detach().argmax(-1) == probe.y).float().mean())
        record["g_first"], record["g_last"] = norms[0], norms[-1]
        record["g_total"] = math.sqrt(sum(n * n for n in norms))
        record["ratio"] = norms[0] / norms[-1] if norms[-1] > 0 else math.nan
        record["w_total"] = math.sqrt(sum(float(p.detach().norm()) ** 2 for p in self.weights))
        record["dead"] = [_never_active_share(o) for o in relus]
        self.probes.append(record)

    def close(self) -> None:
        if self.probes[-1]["step"] != self.steps_done:
            self.measure()


def _never_active_share(output: torch.Tensor) -> float:
    active = output > 0
    if active.dim() > 2:
        active = active.flatten(2).any(-1)
    active = active.reshape(-1, active.shape[-1]) if active.dim() > 2 else active
    return float((~active.any(0)).float().mean())


def summarise(rec: OracleRecorder, reference_loss: float | None = None) -> dict[str, Any]:
    """The numbers recorded in a case's ``oracle`` and the label the rules derive from them."""
    probes = rec.probes
    start, end = probes[0], probes[-1]
    at20 = min(probes, key=lambda p: abs(p["step"] - 0.2 * rec.probe.steps))
    later = probes[1:] or probes
    finite_losses = [p["loss"] for p in probes if _finite(p["loss"])]
    numbers: dict[str, Any] = {
        "steps": rec.steps_done,
        "loss0": start["loss"],
        "loss20": at20["loss"],
        "loss_end": end["loss"],
        "first_nonfinite": rec.first_nonfinite,
        "grad_growth": max((p["g_total"] for p in probes if _finite(p["g_total"])), default=math.nan) / start["g_total"]
        if start["g_total"] > 0
        else math.nan,
        "ratio_med": _median([p["ratio"] for p in later]),
        "ratio_end": end["ratio"],
        "w_end/w0": end["w_total"] / start["w_total"],
        "dead_max_end": max(end["dead"], default=0.0),
    }
    if "acc" in end:
        numbers["acc0"], numbers["acc_end"] = start["acc"], end["acc"]
    if "time_ratio" in end:
        numbers["time_ratio_med"] = _median([p["time_ratio"] for p in later])
    present: list[str] = []
    if numbers["first_nonfinite"] is None:  # a probe loss that is not finite counts too
        numbers["first_nonfinite"] = next((p["step"] for p in probes if not _finite(p["loss"])), None)
    if numbers["first_nonfinite"] is not None:
        present.append("nonfinite")
    loss_max = max(finite_losses, default=start["loss"])
    finite_train = [v for v in rec.losses if _finite(v)]
    if finite_train and rec.losses[0] > 0:
        numbers["train_loss_max/first"] = max(finite_train) / rec.losses[0]
    if (
        loss_max >= 10 * start["loss"]
        or numbers.get("train_loss_max/first", 0.0) >= 10
        or (_finite(numbers["grad_growth"]) and numbers["grad_growth"] >= 100 and not end["loss"] < start["loss"])
    ):
        present.append("exploding_gradients")
    for layer in range(len(end["dead"])):
        shares = [p["dead"][layer] for p in probes if len(p["dead"]) > layer]
        if shares[-1] > 0.5 and sum(s > 0.5 for s in shares) >= len(shares) / 2:
            present.append("dead_relu")
            break
    if numbers["w_end/w0"] < 0.1:
        present.append("weight_collapse")
    if (numbers["ratio_med"] < 1e-3 and end["ratio"] < 1e-3) or numbers.get("time_ratio_med", 1.0) < 1e-3:
        present.append("vanishing_gradients")
    if all(map(_finite, (at20["loss"], end["loss"]))) and (
        (at20["loss"] >= 0.95 * start["loss"] and end["loss"] >= 0.9 * start["loss"])
        or (reference_loss is not None and abs(end["loss"] - at20["loss"]) <= 0.05 * at20["loss"] and end["loss"] >= 3 * reference_loss)
    ):
        present.append("early_stagnation")
    if present:
        label: str | None = present[0]
    elif end["loss"] <= 0.7 * start["loss"]:
        label = None
    else:
        label = "unclear"
    if reference_loss is not None:
        numbers["ref_loss"] = reference_loss
    numbers = {k: _round(v) for k, v in numbers.items()}
    numbers["label"] = label or "healthy"
    numbers["also"] = ",".join(present[1:])
    return numbers


def _median(values: list[float]) -> float:
    finite = [v for v in values if _finite(v)]
    return statistics.median(finite) if finite else math.nan


def _round(value: Any) -> Any:
    if isinstance(value, float) and _finite(value):
        return float(f"{value:.3g}")
    return value


def oracle_attach(records: list[OracleRecorder]) -> Attach:
    def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, probe: Probe) -> OracleRecorder:
        recorder = OracleRecorder(model, probe)
        records.append(recorder)
        return recorder

    return attach


def oracle_of(program: Callable[[Attach], None], reference_loss: float | None = None) -> dict[str, Any]:
    """Run a plain-PyTorch program under the oracle and summarise it."""
    records: list[OracleRecorder] = []
    program(oracle_attach(records))
    records[0].close()
    return summarise(records[0], reference_loss)


def main(argv: list[str]) -> int:
    from . import real_lightning, real_torch

    torch.set_num_threads(1)
    programs = {**real_torch.PROGRAMS, **real_lightning.PROGRAMS}
    twins = {**real_torch.TWINS, **real_lightning.TWINS}
    recorded = {c.name: c for c in real_torch.CASES + real_lightning.CASES}

    def measure(name: str, reference_loss: float | None = None) -> dict[str, Any]:
        if name in real_lightning.PROGRAMS:
            return real_lightning.oracle_of(real_lightning.PROGRAMS[name], reference_loss)
        return oracle_of(real_torch.PROGRAMS[name], reference_loss)

    status = 0
    for name in programs:
        if argv and name not in argv:
            continue
        reference = measure(twins[name])["loss_end"] if name in twins else None
        numbers = measure(name, reference)
        case = recorded.get(name)
        expected = (case.expected or "healthy") if case else "-"
        agree = case is not None and numbers["label"] == expected
        status |= not agree
        print(f"{name}: label={numbers['label']} case={expected} {'ok' if agree else 'DIFFERS'}")
        print(f"    {numbers}")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

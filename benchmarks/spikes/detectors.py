"""The detectors compared in each run: gradwatch, a ZClip-style z-score rule, Lightning's ``SpikeDetection``."""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# gradwatch findings that count as its spike/divergence warning (the ids issue 28 adds).
FORECAST_IDS = frozenset({"divergence_forecast", "loss_spike"})

# ZClip-style rule: EMA of the global gradient norm and of its variance (alpha 0.97), seeded with the mean and
# variance of the first ZCLIP_WARMUP steps; a norm more than ZCLIP_CLIP standard deviations above the mean
# enters the EMA clipped to that bound (as ZClip's clipped norm would). The alarm threshold is separate.
ZCLIP_ALPHA = 0.97
ZCLIP_WARMUP = 25
ZCLIP_CLIP = 2.5
ZCLIP_THRESHOLDS = (2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)

# Lightning SpikeDetection: flags a loss that is worse than the previous one and at least rtol x the running mean
# of the last ``window`` losses away from that mean (or not finite). Shipped default: window 10, warmup 1, rtol 2.0.
LIGHTNING_RTOLS = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0)
LIGHTNING_DEFAULT_RTOL = 2.0


class ZScoreRule:
    """z-score of the global gradient norm against its EMA mean and variance, one value per step."""

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.mean = 0.0
        self.var = 0.0

    def update(self, norm: float) -> float:
        """The z-score of ``norm`` (NaN during warm-up, inf for a non-finite norm); then fold it into the EMA."""
        if not math.isfinite(norm):
            return math.inf
        if len(self.seen) < ZCLIP_WARMUP:
            self.seen.append(norm)
            if len(self.seen) == ZCLIP_WARMUP:
                self.mean = sum(self.seen) / len(self.seen)
                self.var = sum((v - self.mean) ** 2 for v in self.seen) / len(self.seen)
            return math.nan
        std = math.sqrt(max(self.var, 1e-24))
        z = (norm - self.mean) / std
        value = min(norm, self.mean + ZCLIP_CLIP * std)
        self.mean = ZCLIP_ALPHA * self.mean + (1 - ZCLIP_ALPHA) * value
        self.var = ZCLIP_ALPHA * self.var + (1 - ZCLIP_ALPHA) * (value - self.mean) ** 2
        return z


def first_above(values: Iterable[float], threshold: float) -> int | None:
    """The first index whose value exceeds ``threshold`` (NaN never does)."""
    return next((step for step, value in enumerate(values) if value > threshold), None)


class LightningSpikes:
    """Lightning's ``SpikeDetection`` as shipped, fed the loss every step, plus a second one read for calibration.

    ``live`` has the shipped defaults (window 10, warmup 1, rtol 2.0): it raises ``TrainingSpikeException`` at
    its first spike, and that batch index is its warning step. ``probe`` (rtol ``max(LIGHTNING_RTOLS)``) is read
    before each step: until an instance first flags, every instance has seen the same losses, so its running
    mean and last value are theirs too, and the step's relative jump ``|loss - mean| / mean`` (0 when the loss
    improved on the last one; inf when not finite) is the smallest rtol that flags this step. So the first flag
    at any rtol up to the probe's is read from one instance (``first_flag``), and the live one checks it. Their
    skip-batches files go to a temporary folder (``exclude_batches_path=None`` writes into the working directory).
    """

    def __init__(self) -> None:
        from lightning.fabric import Fabric
        from lightning.fabric.utilities.spike import SpikeDetection

        self._folder = tempfile.TemporaryDirectory(prefix="spikes-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fabric = Fabric(accelerator="cpu", devices=1)
        folder = Path(self._folder.name)
        self.live = SpikeDetection(exclude_batches_path=str(folder / "live.json"))
        self.probe = SpikeDetection(rtol=max(LIGHTNING_RTOLS), exclude_batches_path=str(folder / "probe.json"))
        self.live_flag: int | None = None
        self.relative_jump: list[float] = []

    def update(self, loss: torch.Tensor, step: int) -> None:
        from lightning.fabric.utilities.spike import TrainingSpikeException

        self.relative_jump.append(self._jump(float(loss), step))
        for detector in (self.live, self.probe):
            if detector is self.live and self.live_flag is not None:
                continue
            try:
                detector.on_train_batch_end(self.fabric, loss.detach(), None, step)
            except TrainingSpikeException:
                if detector is self.live:
                    self.live_flag = step

    def _jump(self, loss: float, step: int) -> float:
        if step < self.probe.warmup:
            return 0.0
        if not math.isfinite(loss):
            return math.inf
        if loss - float(self.probe.last_val) <= 0:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean = float(self.probe.running_mean.compute())
        return abs(loss - mean) / abs(mean) if mean else math.inf

    def first_flag(self, rtol: float) -> int | None:
        """The step a ``SpikeDetection(rtol=rtol)`` would first flag (rtol at most the probe's)."""
        return first_at_least(self.relative_jump, rtol)

    def close(self) -> None:
        self._folder.cleanup()


def first_at_least(values: Iterable[float], threshold: float) -> int | None:
    """The first index whose value is at least ``threshold``."""
    return next((step for step, value in enumerate(values) if value >= threshold), None)


@dataclass
class GradwatchFindings:
    """What gradwatch found in one run: per finding id, its first step (from the report) and the step it was raised."""

    first_step: dict[str, int] = field(default_factory=dict)
    raised_step: dict[str, int] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)

    def warning(self, ids: Iterable[str] | None) -> tuple[int | None, int | None, str | None]:
        """(first step, raised step, id) of the earliest-raised finding among ``ids`` (None: any finding)."""
        wanted = [name for name in self.raised_step if ids is None or name in set(ids)]
        if not wanted:
            return None, None, None
        name = min(wanted, key=lambda n: (self.raised_step[n], self.first_step.get(n, self.raised_step[n])))
        return self.first_step.get(name, self.raised_step[name]), self.raised_step[name], name

    def earliest_first_step(self, ids: Iterable[str]) -> int | None:
        """The earliest ``first_step`` the final report gives any finding among ``ids`` (it may predate when it was raised)."""
        wanted = set(ids)
        return min((step for name, step in self.first_step.items() if name in wanted), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {"first_step": self.first_step.get(name), "raised_step": step, "severity": self.severity.get(name)}
            for name, step in self.raised_step.items()
        }


class GradwatchProbe:
    """``gradwatch.integrations.pytorch.watch`` with its defaults, no printing, no live warnings.

    After every step it notes which finding ids are new (the step they were raised at); at the end it reads
    each finding's ``first_step`` from ``watcher.report().findings``.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        from gradwatch.integrations.pytorch import watch

        self.watcher = watch(model, optimizer, print_report=False, warn_on=None)
        self.found = GradwatchFindings()

    def step(self, loss: torch.Tensor, step: int) -> None:
        self.watcher.step(loss)
        for name in self.watcher.session.findings:
            self.found.raised_step.setdefault(name, step)

    def close(self) -> GradwatchFindings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.watcher.close()
            report = self.watcher.report()
        for finding in report.findings:
            self.found.first_step[finding.symptom] = finding.first_step
            self.found.severity[finding.symptom] = finding.severity
            self.found.raised_step.setdefault(finding.symptom, finding.first_step)
        return self.found

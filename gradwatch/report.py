"""Findings, the end-of-run report, and its JSON summary (schema ``gradwatch.summary/1``)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .facts import ModelFacts
from .stats import ratio
from .summary_check import SCHEMA, TRIAL_SCHEMA, SummaryError, parse, validate
from .symptoms import is_mistake

Severity = Literal["info", "warning", "critical"]
StopSeverity = Literal["warning", "critical"]  # what ``stop_on`` accepts: an ``info`` finding is no reason to stop
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
MAX_SUMMARY_BYTES = 64 * 1024 * 1024
# Fewer sampled steps than this cannot support "no problems found": detectors need a few samples in a row.
MIN_SAMPLES_TO_CLEAR = 3


@dataclass(frozen=True)
class Remedy:
    """One thing to try, with the reason it fits this model."""

    id: str
    title: str
    why: str


@dataclass
class Finding:
    """One diagnosed symptom: where, since when, how bad, the numbers, what to try."""

    symptom: str
    severity: Severity
    first_step: int
    layers: tuple[str, ...]
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedies: tuple[Remedy, ...] = ()
    last_step: int | None = None

    def at_least(self, severity: str) -> bool:
        """True when this finding is at least as severe as ``severity``."""
        return SEVERITY_RANK[self.severity] >= SEVERITY_RANK[severity]

    @property
    def is_mistake(self) -> bool:
        """True when the finding names a mistake in the training code, not a symptom."""
        return is_mistake(self.symptom)

    def to_dict(self) -> dict[str, Any]:
        return {
            "symptom": self.symptom,
            "severity": self.severity,
            "first_step": self.first_step,
            "last_step": self.first_step if self.last_step is None else self.last_step,
            "layers": list(self.layers),
            "message": self.message,
            "evidence": _json_safe(self.evidence),
            "remedies": [{"id": r.id, "title": r.title, "why": r.why} for r in self.remedies],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            symptom=data["symptom"],
            severity=data["severity"],
            first_step=int(data["first_step"]),
            last_step=data.get("last_step"),
            layers=tuple(data.get("layers", ())),
            message=data.get("message", ""),
            evidence=dict(data.get("evidence", {})),
            remedies=tuple(Remedy(r["id"], r["title"], r["why"]) for r in data.get("remedies", ())),
        )


@dataclass(frozen=True)
class LayerHistory:
    """One layer's (or activation's) sampled series, as the console, ``compare`` and the pictures read them.

    Each series has a value per entry of ``steps`` (None where it was not measured then);
    ``time_profile`` is a recurrent layer's latest gradient per time step.
    """

    name: str
    kind: str
    steps: list[int]
    grad_norm: list[float | None]
    weight_norm: list[float | None]
    update_norm: list[float | None]
    zero_grad_rows: list[float | None]
    dead_share: list[float | None]
    saturated_share: list[float | None]
    time_profile: list[float] | None = None

    @classmethod
    def from_summary(cls, layer: dict[str, Any]) -> LayerHistory:
        """From one entry of a summary's ``layers`` (a missing series reads as not measured)."""
        history = layer.get("history", {})
        steps = list(history.get("step", []))

        def series(metric: str) -> list[float | None]:
            values = history.get(metric)
            return list(values) if values is not None else [None] * len(steps)

        profile = layer.get("time_profile")
        return cls(
            name=layer["name"],
            kind=layer.get("kind", "?"),
            steps=steps,
            grad_norm=series("grad_norm"),
            weight_norm=series("weight_norm"),
            update_norm=series("update_norm"),
            zero_grad_rows=series("zero_grad_rows"),
            dead_share=series("dead_share"),
            saturated_share=series("saturated_share"),
            time_profile=list(profile) if profile else None,
        )

    def relative_grads(self) -> list[float | None]:
        """``|g| / |W|`` at each sampled step (None where either is unknown)."""
        return [ratio(g, w) for g, w in zip(self.grad_norm, self.weight_norm)]

    def latest_relative_grad(self) -> float | None:
        """The last measured ``|g| / |W|``."""
        return next((r for r in reversed(self.relative_grads()) if r is not None), None)


@dataclass
class Report:
    """What a run looked like: findings plus a bounded per-layer history."""

    framework: str
    steps: int
    findings: list[Finding] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    facts: ModelFacts = field(default_factory=ModelFacts)
    every_n_steps: int | None = None
    notes: list[str] = field(default_factory=list)
    sampled_steps: int | None = None
    written_to: Path | None = field(default=None, compare=False)
    """Where this run's JSON summary was written (not part of the summary)."""

    def histories(self) -> list[LayerHistory]:
        """``layers`` as typed series, bottom layer first."""
        return [LayerHistory.from_summary(layer) for layer in self.layers]

    @property
    def healthy(self) -> bool:
        """True when nothing at warning level or above was found (see ``too_little_measured``)."""
        return not any(f.at_least("warning") for f in self.findings)

    @property
    def too_little_measured(self) -> bool:
        """True when so few steps were sampled that silence says nothing (unknown for old summaries)."""
        return self.sampled_steps is not None and self.sampled_steps < MIN_SAMPLES_TO_CLEAR

    def measured_line(self) -> str:
        """How much of the run was measured, in words."""
        if self.sampled_steps is None:
            return f"{self.steps} steps"
        return f"{self.sampled_steps} sampled of {self.steps} steps"

    def worst(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=SEVERITY_RANK.__getitem__)

    def finding(self, symptom: str) -> Finding | None:
        return next((f for f in self.findings if f.symptom == symptom), None)

    def to_summary(self) -> dict[str, Any]:
        """The JSON summary as plain data (NaN and infinities become null)."""
        return {
            "schema": SCHEMA,
            "framework": self.framework,
            "steps": self.steps,
            "every_n_steps": self.every_n_steps,
            "findings": [f.to_dict() for f in self.findings],
            "layers": _json_safe(self.layers),
            "facts": _json_safe(self.facts.to_dict()),
            "notes": list(self.notes),
            "sampled_steps": self.sampled_steps,
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the summary atomically: a reader never sees a half-written file."""
        return write_atomic(Path(path), json.dumps(self.to_summary(), indent=1, allow_nan=False))

    @classmethod
    def from_summary(cls, data: Any) -> Report:
        """The report in a parsed summary, checked against the shipped schema first (``SummaryError`` if not valid)."""
        validate(data)
        return cls(
            framework=data["framework"],
            steps=int(data["steps"]),
            findings=[Finding.from_dict(f) for f in data["findings"]],
            layers=list(data["layers"]),
            facts=ModelFacts.from_dict(data.get("facts") or {}),
            every_n_steps=data.get("every_n_steps"),
            notes=list(data.get("notes", [])),
            sampled_steps=data.get("sampled_steps"),
        )


def load_summary(path: str | os.PathLike[str]) -> Report:
    """Read and check a summary file; every failure is a ``SummaryError`` with a one-line message."""
    path = Path(path)
    data = read_json(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema == TRIAL_SCHEMA:
        raise SummaryError(f"{path}: a remedy trial file ({TRIAL_SCHEMA}), not a summary: `gradwatch report {shlex.quote(str(path))}` renders it")
    if not isinstance(schema, str):
        raise SummaryError(f'{path}: not a gradwatch summary (no "schema": "{SCHEMA}" field)')
    try:
        return Report.from_summary(data)
    except SummaryError as exc:
        raise SummaryError(f"{path}: {exc}") from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a gradwatch JSON file (summary or trial); every failure is a ``SummaryError`` with a one-line message."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SUMMARY_BYTES + 1)  # never more than the limit, whatever the file claims
    except FileNotFoundError:
        raise SummaryError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SummaryError(f"{path}: is a directory, expected a JSON summary file") from None
    except OSError as exc:
        raise SummaryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SUMMARY_BYTES:
        raise SummaryError(f"{path}: larger than the {MAX_SUMMARY_BYTES}-byte limit for a summary")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SummaryError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    try:
        return parse(text)
    except SummaryError as exc:
        raise SummaryError(f"{path}: {exc}") from None


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename.

    A reader never sees a half-written file. The file gets the usual permissions
    (``0o666`` less the umask) or, when it exists, keeps its own. A symbolic link
    is written through, and a directory is refused before anything is created.
    """
    if path.is_symlink():
        path = path.resolve()
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a path for the JSON summary", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp makes the file 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)  # elsewhere: set and restore (briefly visible to other threads)
        os.umask(mask)
        return mask


def fmt(value: float | None) -> str:
    """A number in three significant digits for messages ("3e-09", "0.0215")."""
    if value is None:
        return "n/a"
    return f"{value:.3g}"


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless one ("1 layer", "3 layers")."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def layer_list(names: tuple[str, ...] | list[str]) -> str:
    """Layer names for a sentence: all of them, or first … last (count) when many."""
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} … {names[-1]} ({len(names)} layers)"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control and bidi-override characters shown as escapes (``\\x1b``), for a terminal.

    A summary may come from anywhere; its strings must not move the cursor or recolour the terminal.
    """
    return _CONTROL.sub(lambda match: ascii(match.group())[1:-1], text)


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by None and tuples by lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value

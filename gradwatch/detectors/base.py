"""What every detector shares: the interface, threshold checks and state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..checks import check_count, check_fraction, check_positive
from ..facts import ModelFacts
from ..report import Finding, Severity, counted, fmt
from ..stats import StepStats
from ..symptoms import Symptom


class Detector(ABC):
    """Watches one symptom over the stream of sampled steps.

    ``declares`` is the ``Symptom`` it names (its id, remedies, variants).
    ``observe`` returns a ``Finding`` (without remedies) while the symptom is
    present and ``None`` otherwise; the session keeps the first step and merges.
    Subclasses list their mutable attributes in ``state`` for checkpointing.
    Only detectors with ``sees_nonfinite`` get samples holding NaN or infinity:
    for the others such a sample is noise that would poison their state.
    """

    declares: ClassVar[Symptom]
    symptom: ClassVar[str]  # ``declares.id``
    state: ClassVar[tuple[str, ...]] = ()
    sees_nonfinite: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "declares" in cls.__dict__:
            cls.symptom = cls.declares.id

    @abstractmethod
    def observe(self, sample: StepStats, facts: ModelFacts) -> Finding | None: ...

    def state_dict(self) -> dict[str, Any]:
        return {name: _export(getattr(self, name)) for name in self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.state:
            if name not in state:
                continue
            current = getattr(self, name)
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(state[name])
            else:
                setattr(self, name, _copy(state[name]))

    def finding(self, sample: StepStats, severity: Severity, layers: list[str], message: str, **evidence: Any) -> Finding:
        return Finding(self.symptom, severity, sample.step, tuple(layers), message, evidence, last_step=sample.step)


def _export(value: Any) -> Any:
    return value.state_dict() if hasattr(value, "state_dict") else _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


__all__ = ["Detector", "check_count", "check_fraction", "check_positive", "counted", "fmt"]

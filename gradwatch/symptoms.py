"""What gradwatch can name, each declared once, beside the rule that finds it.

A detector module declares its symptom (or mistake) as a ``Symptom``: its id,
the remedies it considers (weighted by how directly they address it), its
variants (a kind of the finding, told apart by the evidence, with remedies of
its own) and whether it names the likely causes seen beside it. Constructing
the declaration registers it. The public id lists, the remedy ranking and the
session read the registry (``declared``, ``ids``, which load gradwatch's own
declarations first); a test holds the summary schemas' enums to it.

    DEAD_RELU = Symptom("dead_relu", remedies={"leaky_relu": 1.0, "lower_lr": 0.7})

    class DeadReLU(Detector):
        declares = DEAD_RELU
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Evidence = Mapping[str, Any]


@dataclass(frozen=True)
class Variant:
    """A kind of a finding with remedies of its own (decay through time, units that stay copies)."""

    name: str
    applies: Callable[[Evidence], bool]
    remedies: Mapping[str, float]


@dataclass(frozen=True)
class Symptom:
    """One thing gradwatch names: a symptom of the run, or (``mistake``) a mistake in the training code.

    ``names_causes``: a finding of it names the mistakes and model facts seen
    beside it as its likely causes, their fixes first (mistakes never do).
    ``supersedes``: remedies that a finding it causes no longer offers (a
    mistake's fix replaces them: a collapsed schedule is fixed, not outrun by a
    larger learning rate). ``as_cause``: how a symptom names a mistake finding
    as its likely cause, in a few words (default: the finding's whole message,
    whose numbers belong to the step it was raised at).
    """

    id: str
    remedies: Mapping[str, float] = field(default_factory=dict)
    mistake: bool = False
    variants: tuple[Variant, ...] = ()
    names_causes: bool = True
    supersedes: tuple[str, ...] = ()
    as_cause: str = ""

    def __post_init__(self) -> None:
        if self.id in _REGISTRY:
            raise ValueError(f"the symptom {self.id!r} is declared twice")
        _REGISTRY[self.id] = self

    def key(self, evidence: Evidence) -> str:
        """The remedy key of a finding with this ``evidence``: ``id``, or ``id:variant`` where a variant applies."""
        variant = next((v for v in self.variants if v.applies(evidence)), None)
        return self.id if variant is None else f"{self.id}:{variant.name}"

    def candidates(self, key: str) -> Mapping[str, float]:
        """The remedies considered under ``key`` (as ``key`` returns it), with their weights."""
        name = key.partition(":")[2]
        return next((v.remedies for v in self.variants if v.name == name), self.remedies)


_REGISTRY: dict[str, Symptom] = {}
REGISTRY: Mapping[str, Symptom] = MappingProxyType(_REGISTRY)
"""Every declared symptom and mistake by id, in declaration order (read it through ``declared``, ``ids``)."""


def _loaded() -> Mapping[str, Symptom]:
    """The registry with gradwatch's own declarations in it: their modules declare them when imported."""
    from . import causes, detectors  # noqa: F401  (imported for their declarations)

    return REGISTRY


def declared(symptom_id: str) -> Symptom | None:
    """The declaration of ``symptom_id``; None for an id nothing declares."""
    return _loaded().get(symptom_id)


def ids(*, mistakes: bool) -> tuple[str, ...]:
    """The declared ids of the mistakes (``True``) or of the symptoms (``False``)."""
    return tuple(s.id for s in _loaded().values() if s.mistake == mistakes)


def is_mistake(symptom_id: str) -> bool:
    """Whether ``symptom_id`` names a mistake in the training code (an unknown id does not)."""
    known = declared(symptom_id)
    return known is not None and known.mistake


__all__ = ["REGISTRY", "Symptom", "Variant", "declared", "ids", "is_mistake"]

"""The symptom registry: each symptom and mistake declared once, and everything that lists them agrees with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwatch import MISTAKES, SYMPTOMS, Finding
from gradwatch.causes import find_causes
from gradwatch.detectors import default_detectors
from gradwatch.facts import ModelFacts
from gradwatch.remedies import REMEDIES, rank, symptom_key
from gradwatch.symptoms import REGISTRY, Symptom, Variant

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_detector_declares_a_registered_symptom_once():
    symptoms = [detector.symptom for detector in default_detectors()]
    assert len(symptoms) == len(set(symptoms))
    for detector in default_detectors():
        assert REGISTRY[detector.symptom] is type(detector).declares


def test_the_public_lists_are_the_registry_split_into_symptoms_and_mistakes():
    assert set(SYMPTOMS) | set(MISTAKES) == set(REGISTRY) and not set(SYMPTOMS) & set(MISTAKES)
    assert all(REGISTRY[i].mistake for i in MISTAKES) and not any(REGISTRY[i].mistake for i in SYMPTOMS)


def test_every_remedy_a_declaration_considers_exists():
    for declared in REGISTRY.values():
        for candidates in (declared.remedies, *(v.remedies for v in declared.variants)):
            assert set(candidates) <= set(REMEDIES), declared.id


def test_every_declared_id_is_documented():
    text = (DOCS / "symptoms.md").read_text()
    assert [i for i in REGISTRY if f"`{i}`" not in text] == []


def test_a_variant_chooses_its_own_remedies_from_the_evidence():
    through_time = Finding("vanishing_gradients", "warning", 3, ("rnn",), "decays", {"axis": "time"})
    assert symptom_key(through_time) == "vanishing_gradients:time"
    assert symptom_key(Finding("vanishing_gradients", "warning", 3, (), "m", {"axis": "depth"})) == "vanishing_gradients"
    ranked = [r.id for r in rank("vanishing_gradients:time", ModelFacts())]
    assert "truncated_bptt" in ranked and "skip_connections" not in ranked


def test_a_declaration_registers_itself_and_a_second_one_of_the_same_id_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        Symptom("dead_relu")
    assert Symptom.__dataclass_fields__ and Variant.__dataclass_fields__  # both plain records


def test_causes_seen_directly_are_declared_mistakes():
    facts = ModelFacts(loss="mse_loss", loss_broadcast="(32, 1) against (32,)")
    direct = [c for c in find_causes(facts) if c.direct]
    assert direct and all(REGISTRY[c.id].mistake for c in direct)

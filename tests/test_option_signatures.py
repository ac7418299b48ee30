"""Every adapter takes the same options, under the same names and defaults, declared once in ``gradwatch.Options``."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

import pytest

from gradwatch.options import Framework, OptionArgs, Options

# Keywords an adapter may take besides the shared options (each says what only its framework has).
OWN = {"keras": {"log_metrics"}}


def _adapters() -> dict[str, Any]:
    from gradwatch.integrations.keras import GradWatchCallback as KerasCallback
    from gradwatch.integrations.lightning import GradWatchCallback as LightningCallback
    from gradwatch.integrations.pytorch import watch
    from gradwatch.integrations.transformers import GradWatchCallback as TrainerCallback

    return {"pytorch": watch, "lightning": LightningCallback, "keras": KerasCallback, "transformers": TrainerCallback}


def test_the_keyword_form_lists_exactly_the_options():
    assert list(OptionArgs.__annotations__) == [f.name for f in fields(Options)]
    as_written = {name: getattr(kind, "__forward_arg__", kind) for name, kind in OptionArgs.__annotations__.items()}
    assert as_written == {f.name: f.type for f in fields(Options)}


@pytest.mark.parametrize("framework", [f.value for f in Framework])
def test_each_adapter_takes_every_option_with_the_same_default(framework):
    adapter = _adapters()[framework]
    keywords = {p.name: p.default for p in inspect.signature(adapter).parameters.values() if p.kind is p.KEYWORD_ONLY}
    shared = {f.name: f.default for f in fields(Options)}
    assert {k: v for k, v in keywords.items() if k not in OWN.get(framework, set())} == shared


@pytest.mark.parametrize("framework", [f.value for f in Framework])
def test_a_misspelt_option_is_named_with_the_nearest_one(framework):
    adapter = _adapters()[framework]
    name = adapter.__name__
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'warn_onn'; did you mean 'warn_on'\?$"):
        adapter(warn_onn="info") if framework != "pytorch" else adapter(None, warn_onn="info")


def test_both_trials_take_the_trial_options_declared_once():
    from gradwatch.integrations.keras_trial import trial as keras_trial
    from gradwatch.integrations.torch_trial import trial as torch_trial
    from gradwatch.trial import TrialArgs, TrialOptions

    assert list(TrialArgs.__annotations__) == [f.name for f in fields(TrialOptions)]
    shared = {f.name: f.default for f in fields(TrialOptions)}
    for trial, own in ((torch_trial, {}), (keras_trial, {"epochs": 10, "batch_size": 64})):
        keywords = {p.name: p.default for p in inspect.signature(trial).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert keywords == own | shared
    with pytest.raises(TypeError, match=r"^trial\(\) got an unexpected keyword argument 'max_variant'; did you mean 'max_variants'\?$"):
        torch_trial(None, None, [], None, max_variant=2)
    with pytest.raises(ValueError, match="max_variants must be >= 0"):
        keras_trial(None, None, None, max_variants=-1)

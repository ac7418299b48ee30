"""``trial()`` for Keras 3: try the remedies gradwatch ranks in short, comparable fits.

    result = trial(make_model, x, y, epochs=10, batch_size=64)

``make_model()`` returns a fresh compiled model. Variants are clones
(``keras.models.clone_model`` with a ``clone_function``, or a rebuilt
``Sequential`` where layers are inserted) that keep the baseline's initial
weights wherever a layer's weights are unchanged, compiled with the same loss
and an optimizer rebuilt from its config (learning rate, weight decay,
``clipnorm``). Every run starts from the same seed and data.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gradwatch.facts import RELU_FAMILY
from gradwatch.options import takes
from gradwatch.report import Report
from gradwatch.trial import (
    CLIP_NORM,
    LEAKY_SLOPE,
    WEIGHT_DECAY_SCALE,
    NotApplicable,
    Recipe,
    TrialArgs,
    TrialOptions,
    TrialResult,
    clipping_recipe,
    error_line,
    lr_recipes,
    plan,
    plans,
    run_trials,
)

from ._keras import keras
from .keras_callback import GradWatchCallback
from .keras_facts import model_facts

if TYPE_CHECKING:
    from typing_extensions import Unpack

Edit = Callable[[Any, list[str]], Any]  # (keras.Model, layer names of the fresh model by index) -> a new keras.Model
SATURATING_KERAS = {"sigmoid", "tanh", "hard_sigmoid", "softsign"}
WEIGHTED = ("Dense", "Conv1D", "Conv2D", "Conv3D")
RECURRENT_KERAS = ("SimpleRNN", "LSTM", "GRU")
CONV_OR_DENSE = WEIGHTED + ("EinsumDense",)


@takes(TrialOptions)
def trial(
    make_model: Callable[[], Any],
    x: Any,
    y: Any,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    **options: Unpack[TrialArgs],
) -> TrialResult:
    """Fit the baseline and one variant per applicable ranked remedy on ``x, y``; returns the comparison.

    ``make_model()`` must build and compile a fresh model on each call. The
    other keywords are ``gradwatch.trial.TrialOptions``. Each build and fit starts with
    ``keras.utils.set_random_seed(seed)``, which also reseeds Python's and NumPy's
    global generators.
    """
    chosen = TrialOptions(**options)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    from gradwatch.console import print_trial, trial_progress

    runner = _Runner(make_model, x, y, epochs, batch_size, chosen.seed, chosen.every_n_steps, chosen.summary_dir)
    with trial_progress(enabled=chosen.print_report) as progress:
        framework, planned = f"keras/{keras.backend.backend()}", lambda ranked, report: _plan(ranked, report, runner)
        result, report = run_trials(framework, runner.steps, runner.run, planned, chosen, progress=progress)
    if report.facts.regularized:
        result.notes.append("losses exclude the layers' regularization penalties, so variants that change them compare on the data")
    if chosen.print_report:
        print_trial(result)
    return result


class _Runner:
    """Builds fresh models from the factory, derives variants, fits them identically, watched."""

    def __init__(
        self, make_model: Callable[[], Any], x: Any, y: Any, epochs: int, batch_size: int, seed: int, every_n_steps: int,
        summary_dir: str | os.PathLike[str] | None,
    ) -> None:  # fmt: skip
        self.make_model, self.x, self.y = make_model, x, y
        self.epochs, self.batch_size, self.seed, self.every_n_steps = epochs, batch_size, seed, every_n_steps
        self.summary_dir = Path(summary_dir) if summary_dir is not None else None
        self.samples = len(x)
        self.steps = epochs * -(-self.samples // batch_size)
        self._last: Any = None

    def fresh_model(self) -> Any:
        keras.utils.set_random_seed(self.seed)
        model = self.make_model()
        if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
            raise TypeError(f"make_model() must return a compiled keras.Model, got {type(model).__name__}")
        if model is self._last:
            raise ValueError("make_model() returned the same model again: it must build a fresh one each time")
        self._last = model
        return model

    def build(self, recipe: Recipe) -> Any:
        """A fresh model with the recipe's edits, the untouched layers' initial weights, compiled."""
        base = self.fresh_model()
        if not recipe.edits and recipe.lr_scale == recipe.weight_decay_scale == 1.0 and recipe.clip_norm is None:
            return base
        names = [layer.name for layer in base.layers]  # auto-generated names differ between builds: index -> name
        model = base
        for _, edit in recipe.edits:
            model = edit(model, names)
        if model is not base:
            _copy_initial_weights(base, model, frozenset(names[i] for i in recipe.fresh))
        model.compile(optimizer=_optimizer_like(base.optimizer, recipe), loss=base.loss, **_compile_options(base))
        return model

    def run(self, recipe: Recipe, name: str) -> tuple[Report, list[float], float]:
        start = time.perf_counter()
        model = self.build(recipe)
        x = _standardized(self.x) if recipe.standardize else self.x
        summary = self.summary_dir / f"{name}.json" if self.summary_dir is not None else None
        watcher = GradWatchCallback(
            summary_path=summary, every_n_steps=self.every_n_steps, warn_on=None, print_report=False, autosave_every_n_steps=None
        )
        losses = _BatchLosses(self.samples, self.batch_size)
        keras.utils.set_random_seed(self.seed)  # same shuffling and dropout in every run
        model.fit(x, self.y, epochs=self.epochs, batch_size=self.batch_size, shuffle=True, verbose=0, callbacks=[watcher, losses])
        return watcher.session.report(), losses.values, time.perf_counter() - start


class _BatchLosses(keras.callbacks.Callback):
    """Each batch's data loss: recovered from Keras' running epoch mean (weighted by batch size), minus the
    regularization penalty of the weights that batch saw, so variants that change regularizers compare fairly."""

    def __init__(self, samples: int, batch_size: int) -> None:
        super().__init__()
        self.samples, self.batch_size = samples, batch_size
        self.values: list[float] = []
        self._mean, self._seen, self._penalty = 0.0, 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._mean, self._seen = 0.0, 0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        penalties = self.model.losses  # regularizers of the weights this batch's step will use
        self._penalty = float(sum(float(keras.ops.convert_to_numpy(p)) for p in penalties)) if penalties else 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean = float((logs or {}).get("loss", float("nan")))
        size = min(self.batch_size, self.samples - self._seen) or self.batch_size
        seen = self._seen + size
        self.values.append((mean * seen - self._mean * self._seen) / size - self._penalty)
        self._mean, self._seen = mean, seen


def _plan(ranked: Sequence[str], report: Report, runner: _Runner) -> tuple[list[Recipe], list[NotApplicable]]:
    """Recipes for the applicable remedies, each edit tried once on a fresh model, then the combinations."""
    probe = runner.fresh_model()
    planners = {remedy: functools.partial(planner, probe=probe, runner=runner) for remedy, planner in PLANNERS.items()}

    def check(recipe: Recipe) -> str | None:
        try:
            model, names = probe, [layer.name for layer in probe.layers]
            for _, edit in recipe.edits:
                model = edit(model, names)
        except Exception as exc:  # noqa: BLE001  (this model cannot take the edit: say so)
            return f"the model could not be rebuilt with it: {error_line(exc)}"
        return None

    return plan(ranked, report, planners, check=check)


PLANNERS: dict[str, Callable[..., list[Recipe] | str]] = {}  # remedy id -> its planner, registered by @plans


# -- one planner per remedy id: a list of recipes, or the reason it cannot be applied ------------------------


def _output_layer(model: Any) -> str | None:
    weighted = [layer.name for layer in model.layers if layer.weights]
    return weighted[-1] if weighted else None


def _hidden_layers(model: Any) -> list[Any]:
    """Layers before the output layer (an activation after it shapes the prediction and is kept)."""
    output = _output_layer(model)
    names = [layer.name for layer in model.layers]
    cut = names.index(output) if output in names else len(names)
    return list(model.layers[:cut])


def _activation_key(layer: Any) -> str | None:
    function = getattr(layer, "activation", None)
    return getattr(function, "__name__", None)


def _swap(report: Report, probe: Any, kinds: set[str], target: str, remedy: str, layer_target: Callable[[], Any] | None) -> list[Recipe] | str:
    hidden = _hidden_layers(probe)
    indices = [
        i for i, layer in enumerate(hidden)
        if _activation_key(layer) in kinds or (layer_target is not None and type(layer).__name__ == "ReLU")
    ]  # fmt: skip
    if not indices:
        return f"no hidden layer applies {'/'.join(sorted(kinds))} (as activation= or an Activation layer) before the output layer"

    def edit(model: Any, names: list[str]) -> Any:
        chosen = {names[i] for i in indices}

        def clone(layer: Any) -> Any:
            if layer.name not in chosen:
                return layer.__class__.from_config(layer.get_config())
            if type(layer).__name__ == "ReLU" and layer_target is not None:
                replacement = layer_target()
                return replacement.__class__.from_config({**replacement.get_config(), "name": layer.name})
            return layer.__class__.from_config({**layer.get_config(), "activation": target})

        return keras.models.clone_model(model, clone_function=clone)

    found = "/".join(sorted({_activation_key(hidden[i]) or type(hidden[i]).__name__ for i in indices}))
    return [Recipe((remedy,), (f"{found} → {target} in {_count(indices, 'layer')}",), ((0, edit),))]


@plans(PLANNERS, "relu_family")
def plan_relu_family(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    return _swap(report, probe, SATURATING_KERAS, "relu", "relu_family", None)


@plans(PLANNERS, "leaky_relu")
def plan_leaky_relu(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    return _swap(report, probe, {"relu", "relu6"}, "leaky_relu", "leaky_relu", lambda: keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE))


@plans(PLANNERS, "matched_init")
def plan_matched_init(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    indices = [i for i, layer in enumerate(probe.layers) if type(layer).__name__ in CONV_OR_DENSE]
    if not indices:
        return "no Dense or Conv layer to re-initialise"

    def edit(model: Any, names: list[str]) -> Any:
        activations = {layer.name: layer.activation for layer in model_facts(model, None).layers}

        def clone(layer: Any) -> Any:
            config = layer.get_config()
            if layer.name in activations and type(layer).__name__ in CONV_OR_DENSE:
                config["kernel_initializer"] = _matched_initializer(activations[layer.name])
                if "bias_initializer" in config:
                    config["bias_initializer"] = "zeros"
            return layer.__class__.from_config(config)

        return keras.models.clone_model(model, clone_function=clone)

    words = f"He/LeCun/Glorot init by each layer's activation, biases 0, in {_count(indices, 'layer')}"
    return [Recipe(("matched_init",), (words,), ((2, edit),), frozenset(indices))]


def _matched_initializer(activation: str | None) -> str:
    if activation == "SELU":
        return "lecun_normal"
    if activation in RELU_FAMILY:
        return "he_normal"
    return "glorot_uniform"


@plans(PLANNERS, "normalization")
def plan_normalization(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    recipes: list[Recipe] = []
    reasons: list[str] = []
    indices = [i for i, layer in enumerate(_hidden_layers(probe)) if type(layer).__name__ in WEIGHTED]
    if not isinstance(probe, keras.Sequential):
        reasons.append("only a keras.Sequential stack gets normalisation layers inserted automatically")
    elif not indices:
        reasons.append("no Dense/Conv layer before the output layer")
    else:

        def edit(model: Any, names: list[str]) -> Any:
            chosen = {names[i] for i in indices}
            layers: list[Any] = [keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)]
            for layer in model.layers:
                config = layer.get_config()
                if layer.name not in chosen:
                    layers.append(layer.__class__.from_config(config))
                    continue
                activation = config.get("activation", "linear")
                layers.append(layer.__class__.from_config({**config, "activation": "linear"}))
                layers.append(keras.layers.BatchNormalization(name=f"{layer.name}_gw_norm"))
                if activation not in (None, "linear"):
                    layers.append(keras.layers.Activation(activation, name=f"{layer.name}_gw_act"))
            return keras.Sequential(layers, name=model.name)

        recipes.append(Recipe(("normalization",), (f"BatchNormalization after {_count(indices, 'layer')}, not the output layer",), ((1, edit),)))
    x = np.asarray(runner.x)
    if x.dtype.kind != "f" or x.ndim < 2:
        reasons.append("inputs are not a floating-point array that could be standardised")
    else:
        mean, std = float(x.mean()), float(x.std())
        if abs(mean) <= 0.5 and 0.5 <= std <= 2.0:
            reasons.append(f"inputs already look standardised (mean {mean:.2g}, std {std:.2g})")
        else:
            words = f"inputs standardised per feature (mean {mean:.2g} → 0, std {std:.2g} → 1)"
            recipes.append(Recipe(("normalization",), (words,), standardize=True))
    return recipes or "; ".join(reasons)


@plans(PLANNERS, "gradient_clipping")
def plan_gradient_clipping(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    config = probe.optimizer.get_config()
    if config.get("global_clipnorm") or config.get("clipvalue"):
        return "the optimizer already clips (global_clipnorm or clipvalue)"
    return clipping_recipe(f"optimizer clipnorm={CLIP_NORM:g}")


def _lr(probe: Any) -> float | None:
    value = probe.optimizer.get_config().get("learning_rate")
    return float(value) if isinstance(value, (int, float)) else None


@plans(PLANNERS, "lower_lr")
def plan_lower_lr(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    lr = _lr(probe)
    return lr_recipes(report, "lower_lr", lr) if lr is not None else "the learning rate is a schedule: scale it in your own schedule"


@plans(PLANNERS, "raise_lr")
def plan_raise_lr(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    lr = _lr(probe)
    return lr_recipes(report, "raise_lr", lr) if lr is not None else "the learning rate is a schedule: scale it in your own schedule"


@plans(PLANNERS, "reduce_weight_decay")
def plan_reduce_weight_decay(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    decay = probe.optimizer.get_config().get("weight_decay")
    regularized = [
        i for i, layer in enumerate(probe.layers)
        if any(getattr(layer, attr, None) is not None for attr in ("kernel_regularizer", "bias_regularizer"))
    ]  # fmt: skip
    if not decay and not regularized:
        return "neither optimizer weight decay nor a layer regularizer was found: a penalty inside your loss cannot be changed automatically"
    words, edits = [], []
    if decay:
        words.append(f"weight decay ×{WEIGHT_DECAY_SCALE:g} ({decay:.3g} → {decay * WEIGHT_DECAY_SCALE:.3g})")
    if regularized:

        def edit(model: Any, names: list[str]) -> Any:
            chosen = {names[i] for i in regularized}

            def clone(layer: Any) -> Any:
                config = layer.get_config()
                if layer.name in chosen:
                    for key in ("kernel_regularizer", "bias_regularizer"):
                        if config.get(key) is not None:
                            config[key] = _scaled_regularizer(getattr(layer, key))
                return layer.__class__.from_config(config)

            return keras.models.clone_model(model, clone_function=clone)

        words.append(f"regularizer factors ×{WEIGHT_DECAY_SCALE:g} in {_count(regularized, 'layer')}")
        edits.append((0, edit))
    return [Recipe(("reduce_weight_decay",), tuple(words), tuple(edits), weight_decay_scale=WEIGHT_DECAY_SCALE)]


def _scaled_regularizer(regularizer: Any) -> Any:
    config = regularizer.get_config()
    return regularizer.__class__.from_config({k: v * WEIGHT_DECAY_SCALE if isinstance(v, float) else v for k, v in config.items()})


@plans(PLANNERS, "gated_rnn")
def plan_gated_rnn(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    indices = [i for i, layer in enumerate(probe.layers) if type(layer).__name__ == "SimpleRNN"]
    if not indices:
        return "no SimpleRNN layer to replace"
    keep = ("units", "return_sequences", "return_state", "go_backwards", "stateful", "unroll", "dropout", "recurrent_dropout", "name")

    def edit(model: Any, names: list[str]) -> Any:
        chosen = {names[i] for i in indices}

        def clone(layer: Any) -> Any:
            config = layer.get_config()
            if layer.name in chosen:
                return keras.layers.GRU(**{k: config[k] for k in keep if k in config})
            return layer.__class__.from_config(config)

        return keras.models.clone_model(model, clone_function=clone)

    return [Recipe(("gated_rnn",), (f"SimpleRNN → GRU of the same size in {_count(indices, 'layer')}",), ((0, edit),), frozenset(indices))]


@plans(PLANNERS, "recurrent_init")
def plan_recurrent_init(report: Report, probe: Any, runner: _Runner) -> list[Recipe] | str:
    recurrent = [i for i, layer in enumerate(probe.layers) if type(layer).__name__ in RECURRENT_KERAS]
    if not recurrent:
        return "no SimpleRNN/LSTM/GRU layer whose recurrent weights could be re-initialised"
    off = [i for i in recurrent if type(getattr(probe.layers[i].cell, "recurrent_initializer", None)).__name__ != "Orthogonal"]
    if not off:
        return "the recurrent weights already start orthogonal (Keras' default)"

    def edit(model: Any, names: list[str]) -> Any:
        chosen = {names[i] for i in off}

        def clone(layer: Any) -> Any:
            config = layer.get_config()
            if layer.name in chosen:
                config["recurrent_initializer"] = "orthogonal"
            return layer.__class__.from_config(config)

        return keras.models.clone_model(model, clone_function=clone)

    return [Recipe(("recurrent_init",), (f"orthogonal recurrent init in {_count(off, 'layer')}",), ((2, edit),), frozenset(off))]


def _copy_initial_weights(base: Any, model: Any, fresh: frozenset[str]) -> None:
    """Give each unchanged layer of ``model`` the initial weights of its namesake in ``base``."""
    by_name = {layer.name: layer for layer in base.layers}
    for layer in model.layers:
        source = by_name.get(layer.name)
        if source is None or layer.name in fresh or not layer.weights:
            continue
        weights = source.get_weights()
        if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(weights)


def _optimizer_like(optimizer: Any, recipe: Recipe) -> Any:
    config = dict(optimizer.get_config())
    if recipe.lr_scale != 1.0:
        config["learning_rate"] = float(config["learning_rate"]) * recipe.lr_scale
    if recipe.weight_decay_scale != 1.0 and config.get("weight_decay"):
        config["weight_decay"] = float(config["weight_decay"]) * recipe.weight_decay_scale
    if recipe.clip_norm is not None:
        config["clipnorm"] = recipe.clip_norm
    return optimizer.__class__.from_config(config)


def _compile_options(model: Any) -> dict[str, Any]:
    try:
        config = model.get_compile_config() or {}
    except Exception:  # noqa: BLE001  (an unserialisable loss: compile with the defaults)
        config = {}
    return {k: config[k] for k in ("loss_weights", "run_eagerly", "steps_per_execution", "jit_compile") if k in config}


def _standardized(x: Any) -> np.ndarray:
    values = np.asarray(x, dtype=np.float32)
    std = values.std(0, keepdims=True)
    standardized: np.ndarray = (values - values.mean(0, keepdims=True)) / np.where(std > 1e-8, std, 1.0)
    return standardized


def _count(indices: Sequence[int], noun: str) -> str:
    """``3 layers (model.layers[0, 2, 4])`` or ``10 layers (model.layers[0 … 9])``: names differ between builds."""
    shown = ", ".join(map(str, indices)) if len(indices) <= 3 else f"{indices[0]} … {indices[-1]}"
    return f"{len(indices)} {noun}{'s' if len(indices) != 1 else ''} (model.layers[{shown}])"


__all__ = ["trial"]

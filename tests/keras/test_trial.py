"""Remedy trials on Keras 3 (TensorFlow in this process): clones that keep the initial weights, and a cure."""

from __future__ import annotations

import json

import jsonschema
import keras
import numpy as np

from benchmarks.clinic.keras_cases import data, dense_stack, sgd
from gradwatch.integrations.keras import trial
from gradwatch.integrations.keras_trial import (
    _Runner,
    plan_normalization,
    plan_relu_family,
)
from gradwatch.trial import Recipe, trial_schema_path


def compiled(build, optimizer):
    def make() -> keras.Model:
        model = build()
        model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    return make


def test_deep_sigmoid_stack_is_cured_by_the_activation_or_init_variant(tmp_path):
    x, y = data()
    result = trial(
        compiled(lambda: dense_stack("sigmoid", 10), lambda: sgd(0.05)), x, y, epochs=5, batch_size=64,
        remedies=["relu_family", "matched_init", "skip_connections"], print_report=False,
    )  # fmt: skip
    assert result.framework == "keras/tensorflow" and result.steps == 160
    assert "vanishing_gradients" in result.baseline.symptoms_after
    assert [row.remedies for row in result.rows] == [("relu_family",), ("matched_init",), ("relu_family", "matched_init")]
    assert result.rows[0].change == "sigmoid → relu in 10 layers (model.layers[0 … 9])"
    best = result.best
    assert best is not None and "relu_family" in best.remedies and result.cures(best), result.rows
    assert [entry.remedy for entry in result.not_applicable] == ["skip_connections"]
    data_ = json.loads(result.write_json(tmp_path / "trial.json").read_text())
    jsonschema.validate(data_, json.loads(trial_schema_path().read_text()))


def test_variants_keep_the_initial_weights_of_unchanged_layers_and_rebuild_the_optimizer():
    x, y = data()

    def build() -> keras.Sequential:
        model = dense_stack("sigmoid", 2)
        model.layers[1].set_weights([w + 1.0 for w in model.layers[1].get_weights()])  # not what the initializer gives
        return model

    runner = _Runner(compiled(build, lambda: sgd(0.05)), x[:256], y[:256], 1, 64, 0, 20, None)
    probe = runner.fresh_model()
    (swap,) = plan_relu_family(None, probe, runner)  # type: ignore[arg-type, misc]
    (norm,) = plan_normalization(None, probe, runner)  # type: ignore[arg-type, misc]
    recipe = swap + norm + Recipe(("lower_lr",), ("×0.1",), lr_scale=0.1, clip_norm=1.0)
    reference = runner.fresh_model()
    model = runner.build(recipe)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation", "Dense", "BatchNormalization", "Activation", "Dense"]
    assert [layer.get_config()["activation"] for layer in model.layers if kinds[model.layers.index(layer)] == "Activation"] == ["relu", "relu"]
    for index, layer in ((0, model.layers[0]), (1, model.layers[3]), (2, model.layers[6])):
        for mine, theirs in zip(layer.get_weights(), reference.layers[index].get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    assert float(model.optimizer.learning_rate) == np.float32(0.005) and model.optimizer.clipnorm == 1.0


def test_a_regularizer_cut_is_judged_on_the_data_loss_not_on_the_smaller_penalty():
    x, y = data()
    regularized = compiled(
        lambda: dense_stack("relu", 4, kernel_regularizer=keras.regularizers.L2(1.0), kernel_initializer="he_normal"),
        lambda: keras.optimizers.SGD(0.05),
    )
    result = trial(regularized, x, y, epochs=5, batch_size=64, remedies=["reduce_weight_decay"], print_report=False)
    assert "weight_collapse" in result.baseline.symptoms_after
    (row,) = result.rows
    assert row.change == "regularizer factors ×0.01 in 4 layers (model.layers[0 … 3])"
    assert result.cures(row) and row.loss_ratio < 0.5, row
    assert result.notes == ["losses exclude the layers' regularization penalties, so variants that change them compare on the data"]

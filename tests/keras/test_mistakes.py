"""An output activation that does not match the compiled loss, named as the mistake (TensorFlow, in-process)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradwatch.integrations.keras import GradWatchCallback


@pytest.mark.parametrize(
    ("activation", "units", "loss", "words"),
    [
        ("softmax", 2, keras.losses.SparseCategoricalCrossentropy(from_logits=True), "from_logits=True, which expects raw scores"),
        (None, 2, "sparse_categorical_crossentropy", "is linear under sparse_categorical_crossentropy"),
        ("softmax", 1, "binary_crossentropy", "softmax over one unit"),
        (None, 2, keras.losses.SparseCategoricalCrossentropy(from_logits=True), None),
    ],
)
def test_output_activation_and_loss(activation, units, loss, words):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(512, 20)).astype("float32")
    y = (x[:, :3].sum(1) > 0).astype("int64")
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(units, activation=activation)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    callback = GradWatchCallback(print_report=False, warn_on=None)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[callback])
    found = callback.report.finding("output_loss_mismatch")
    if words is None:
        assert found is None and callback.report.healthy
    else:
        assert found is not None and callback.report.findings[0] is found and words in found.message
        assert found.layers == (model.layers[-1].name,) and found.remedies[0].id == "fix_output"

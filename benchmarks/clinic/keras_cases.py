"""Keras 3 clinic cases (whatever backend ``KERAS_BACKEND`` selects; TensorFlow by default)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gradwatch import Report  # noqa: E402
from gradwatch.integrations.demo import teacher_data  # noqa: E402
from gradwatch.integrations.keras import GradWatchCallback  # noqa: E402

from .case import Case  # noqa: E402

EPOCHS, BATCH = 10, 64  # 2048 samples: 320 optimizer steps, like the PyTorch cases


def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = teacher_data(2048)
    return x.numpy(), y.numpy()


def dense_stack(activation: str, depth: int, *, batch_norm: bool = False, **dense: Any) -> keras.Sequential:
    keras.utils.set_random_seed(0)
    layers: list[Any] = [keras.Input((16,))]
    for _ in range(depth):
        layers.append(keras.layers.Dense(64, activation=None if batch_norm else activation, **dense))
        if batch_norm:
            layers += [keras.layers.BatchNormalization(), keras.layers.Activation(activation)]
    return keras.Sequential([*layers, keras.layers.Dense(3)])


def fit(model: keras.Model, optimizer: keras.optimizers.Optimizer, callback: GradWatchCallback | None = None, **compile: Any) -> Report:
    callback = callback or GradWatchCallback(print_report=False, warn_on=None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, **compile)
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[callback])
    return callback.report


def sgd(lr: float) -> keras.optimizers.SGD:
    return keras.optimizers.SGD(lr, momentum=0.9)


def dead_bias() -> keras.Sequential:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dense(64, activation="relu", bias_initializer=keras.initializers.Constant(-6.0)),
        keras.layers.Dense(3),
    ])  # fmt: skip


def run(make: Callable[[], keras.Model], optimizer: Callable[[], keras.optimizers.Optimizer], **compile: Any) -> Callable[[], Report]:
    return lambda: fit(make(), optimizer(), **compile)


def recurrent(cell: str, steps: int) -> Callable[[], Report]:
    """Long-range task: the label is the sign of the first of ``steps`` noise inputs."""

    def run() -> Report:
        x = np.random.default_rng(0).normal(size=(2048, steps, 1)).astype("float32")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((steps, 1)), getattr(keras.layers, cell)(32), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callback = GradWatchCallback(print_report=False, warn_on=None)
        model.fit(x, (x[:, 0, 0] > 0).astype("int64"), batch_size=64, epochs=4, verbose=0, callbacks=[callback])
        return callback.report

    return run


HE = {"kernel_initializer": "he_normal"}
CASES = [
    Case("keras_deep_sigmoid", "keras", "vanishing_gradients", run(lambda: dense_stack("sigmoid", 10), lambda: sgd(0.05)), "10 sigmoid Dense"),
    Case("keras_deep_sigmoid_xla", "keras", "vanishing_gradients", run(lambda: dense_stack("sigmoid", 10), lambda: sgd(0.05), jit_compile=True), "same, jit_compile"),
    Case("keras_dead_bias", "keras", "dead_relu", run(dead_bias, lambda: sgd(0.05)), "Dense bias -6"),
    Case("keras_tiny_lr", "keras", "early_stagnation", run(lambda: dense_stack("relu", 4, **HE), lambda: keras.optimizers.SGD(1e-7)), "SGD lr 1e-7"),
    Case("keras_heavy_l2", "keras", "weight_collapse", run(lambda: dense_stack("relu", 4, kernel_regularizer=keras.regularizers.L2(1.0), **HE), lambda: keras.optimizers.SGD(0.05)), "L2 factor 1"),
    Case("keras_huge_lr", "keras", "nonfinite", run(lambda: dense_stack("relu", 4, **HE), lambda: keras.optimizers.SGD(1e4)), "SGD lr 1e4"),
    Case("keras_relu_bn", "keras", None, run(lambda: dense_stack("relu", 10, batch_norm=True, **HE), lambda: sgd(0.05)), "10 Dense+BN+ReLU"),
    Case("keras_shallow_sigmoid", "keras", None, run(lambda: dense_stack("sigmoid", 1), lambda: sgd(0.5)), "trap: 1 sigmoid layer"),
    Case("keras_simple_rnn_T100", "keras", "vanishing_gradients", recurrent("SimpleRNN", 100), "label = first of 100 steps"),
    Case("keras_gru_T10", "keras", None, recurrent("GRU", 10), "GRU, label = first of 10 steps"),
    Case("keras_lstm_T10", "keras", None, recurrent("LSTM", 10), "LSTM, label = first of 10 steps"),
    Case("keras_adamw", "keras", None, run(lambda: dense_stack("relu", 4, **HE), lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.05)), "trap: AdamW wd 0.05"),
]

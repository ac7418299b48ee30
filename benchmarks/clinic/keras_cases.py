"""Keras 3 clinic cases (whatever backend ``KERAS_BACKEND`` selects; TensorFlow by default)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gradwatch import Report  # noqa: E402
from gradwatch.integrations.keras import GradWatchCallback  # noqa: E402

from .case import Case  # noqa: E402
from .data import teacher_arrays  # noqa: E402

EPOCHS, BATCH = 10, 64  # 2048 samples: 320 optimizer steps, like the PyTorch cases


def data() -> tuple[np.ndarray, np.ndarray]:
    return teacher_arrays()


def dense_stack(activation: str, depth: int, *, batch_norm: bool = False, **dense: Any) -> keras.Sequential:
    keras.utils.set_random_seed(0)
    layers: list[Any] = [keras.Input((16,))]
    for _ in range(depth):
        layers.append(keras.layers.Dense(64, activation=None if batch_norm else activation, **dense))
        if batch_norm:
            layers += [keras.layers.BatchNormalization(), keras.layers.Activation(activation)]
    return keras.Sequential([*layers, keras.layers.Dense(3)])


def fit(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    callback: GradWatchCallback | None = None,
    *,
    samples: Callable[[], tuple[np.ndarray, np.ndarray]] = data,
    epochs: int = EPOCHS,
    **compile: Any,
) -> Report:
    callback = callback or GradWatchCallback(print_report=False, warn_on=None)
    model.compile(optimizer=optimizer, loss=case_loss(), **compile)
    x, y = samples()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[callback])
    return callback.report


def case_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


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


@dataclass(frozen=True)
class Setup:
    """A clinic fit as factories (model, optimizer, data), so a remedy trial can rebuild it; calling it runs the case."""

    make: Callable[[], keras.Model]
    optimizer: Callable[[], keras.optimizers.Optimizer]
    samples: Callable[[], tuple[np.ndarray, np.ndarray]] = data
    epochs: int = EPOCHS
    compile: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self) -> Report:
        return fit(self.make(), self.optimizer(), samples=self.samples, epochs=self.epochs, **self.compile)

    def compiled(self) -> keras.Model:
        """A fresh model compiled as the case compiles it."""
        model = self.make()
        model.compile(optimizer=self.optimizer(), loss=case_loss(), **self.compile)
        return model


def run(make: Callable[[], keras.Model], optimizer: Callable[[], keras.optimizers.Optimizer], **compile: Any) -> Setup:
    return Setup(make, optimizer, compile=compile)


def recurrent(cell: str, steps: int) -> Setup:
    """Long-range task: the label is the sign of the first of ``steps`` noise inputs."""

    def samples() -> tuple[np.ndarray, np.ndarray]:
        x = np.random.default_rng(0).normal(size=(2048, steps, 1)).astype("float32")
        return x, (x[:, 0, 0] > 0).astype("int64")

    def make() -> keras.Sequential:
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((steps, 1)), getattr(keras.layers, cell)(32), keras.layers.Dense(2)])

    return Setup(make, lambda: keras.optimizers.Adam(1e-3), samples, epochs=4)


HE = {"kernel_initializer": "he_normal"}
CASES = [
    Case("keras_deep_sigmoid", "keras", "vanishing_gradients", run(lambda: dense_stack("sigmoid", 10), lambda: sgd(0.05)), "10 sigmoid Dense"),
    Case(
        "keras_deep_sigmoid_xla",
        "keras",
        "vanishing_gradients",
        run(lambda: dense_stack("sigmoid", 10), lambda: sgd(0.05), jit_compile=True),
        "same, jit_compile",
    ),
    Case("keras_dead_bias", "keras", "dead_relu", run(dead_bias, lambda: sgd(0.05)), "Dense bias -6"),
    Case("keras_tiny_lr", "keras", "early_stagnation", run(lambda: dense_stack("relu", 4, **HE), lambda: keras.optimizers.SGD(1e-7)), "SGD lr 1e-7"),
    Case(
        "keras_heavy_l2",
        "keras",
        "weight_collapse",
        run(lambda: dense_stack("relu", 4, kernel_regularizer=keras.regularizers.L2(1.0), **HE), lambda: keras.optimizers.SGD(0.05)),
        "L2 factor 1",
    ),
    Case("keras_huge_lr", "keras", "nonfinite", run(lambda: dense_stack("relu", 4, **HE), lambda: keras.optimizers.SGD(1e4)), "SGD lr 1e4"),
    Case("keras_relu_bn", "keras", None, run(lambda: dense_stack("relu", 10, batch_norm=True, **HE), lambda: sgd(0.05)), "10 Dense+BN+ReLU"),
    Case("keras_shallow_sigmoid", "keras", None, run(lambda: dense_stack("sigmoid", 1), lambda: sgd(0.5)), "trap: 1 sigmoid layer"),
    Case("keras_simple_rnn_T100", "keras", "vanishing_gradients", recurrent("SimpleRNN", 100), "label = first of 100 steps"),
    Case("keras_gru_T10", "keras", None, recurrent("GRU", 10), "GRU, label = first of 10 steps"),
    Case("keras_lstm_T10", "keras", None, recurrent("LSTM", 10), "LSTM, label = first of 10 steps"),
    Case(
        "keras_adamw",
        "keras",
        None,
        run(lambda: dense_stack("relu", 4, **HE), lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.05)),
        "trap: AdamW wd 0.05",
    ),
]

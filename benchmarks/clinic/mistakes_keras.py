"""Keras 3 programs of the mistakes clinic (TensorFlow backend, in-process), under ``GradWatchCallback`` or the oracle.

Each program returns a ``Setup``: a compiled model, its data and ``fit`` arguments, a probe batch and
what the compiled loss expects of the model's output. ``run`` fits it with gradwatch's callback,
``oracle`` with ``OracleCallback`` (plain Keras, no gradwatch): the per-batch loss (recovered from
the running epoch mean Keras logs), the output std on the probe before training, and at the end the
probe metric and the output's domain (``mistakes_oracle.output_kind``).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import math  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from keras import layers  # noqa: E402

from .mistakes_oracle import MistakeCase, Probe, build_cases, metric, output_kind  # noqa: E402

QUICKSTART = "tensorflow/docs site/en/tutorials/quickstart/beginner.ipynb (Dense(10) logits, SparseCategoricalCrossentropy(from_logits=True))"
CLASSIFY = "tensorflow/docs site/en/tutorials/keras/classification.ipynb"


@dataclass
class Setup:
    """A compiled program ready for ``model.fit(x, y, **fit)``; ``probe`` = (rows, labels) held out."""

    model: keras.Model
    x: np.ndarray
    y: np.ndarray
    fit: dict[str, Any]
    probe: tuple[np.ndarray, np.ndarray]
    task: str = "multiclass"
    expects: str = "logits"
    extra: dict[str, Any] = field(default_factory=dict)


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's digits as 8x8 images in [0, 1]: 1500 training rows, 297 held out."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8).astype("float32")
    return x[:-297], y[:-297].astype("int64"), x[-297:], y[-297:].astype("int64")


def quickstart(*, output: str = "logits", labels: str = "aligned") -> Setup:
    """Flatten -> Dense(128, relu) -> Dropout(0.2) -> Dense(10), Adam, batch 32, 5 epochs.

    ``output``: ``logits`` (Dense(10) under from_logits=True, the tutorial), ``softmax_from_logits``
    (Dense(10, softmax) under from_logits=True), ``linear_probs`` (Dense(10) under the string loss
    "sparse_categorical_crossentropy", i.e. from_logits=False), ``softmax`` (Dense(10, softmax) under
    the string loss). ``labels="shuffled"``: np.random.shuffle(y_train) alone, before fit.
    """
    keras.utils.set_random_seed(0)
    x, y, px, py = digits()
    if labels == "shuffled":
        np.random.shuffle(y)
    softmax = output in ("softmax_from_logits", "softmax")
    model = keras.Sequential([
        keras.Input((8, 8)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax" if softmax else None),
    ])  # fmt: skip
    from_logits = output in ("logits", "softmax_from_logits")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if from_logits else "sparse_categorical_crossentropy"
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return Setup(model, x, y, {"batch_size": 32, "epochs": 5}, (px, py), expects="logits" if from_logits else "probs")


def binary(*, activation: str = "sigmoid") -> Setup:
    """Breast-cancer table: Normalization -> Dense(16, relu) -> Dense(1, activation), binary_crossentropy, Adam.

    ``activation="softmax"`` takes a softmax over the single output unit: the prediction is 1.0 for every row.
    """
    from sklearn.datasets import load_breast_cancer

    keras.utils.set_random_seed(0)
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype("float32"), y[order].astype("float32")[:, None]
    norm = layers.Normalization()
    norm.adapt(x[:-169])
    model = keras.Sequential([keras.Input((30,)), norm, layers.Dense(16, activation="relu"), layers.Dense(1, activation=activation)])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Setup(model, x[:-169], y[:-169], {"batch_size": 32, "epochs": 10}, (x[-169:], y[-169:]), task="binary", expects="probs")


PROGRAMS: dict[str, Callable[[], Setup]] = {
    "ks_softmax_from_logits": partial(quickstart, output="softmax_from_logits"),
    "ks_linear_into_probs_loss": partial(quickstart, output="linear_probs"),
    "ks_logits_from_logits": quickstart,
    "ks_softmax_probs_loss": partial(quickstart, output="softmax"),
    "ks_softmax_one_unit": partial(binary, activation="softmax"),
    "ks_sigmoid_binary": binary,
    "ks_labels_shuffled": partial(quickstart, labels="shuffled"),
}


# -- running them -----------------------------------------------------------------------------------------


def gradwatch_run(program: Callable[[], Setup]) -> Callable[[], Any]:
    def run() -> Any:
        from gradwatch.integrations.keras import GradWatchCallback

        setup = program()
        callback = GradWatchCallback(print_report=False, warn_on=None)
        setup.model.fit(setup.x, setup.y, verbose=0, callbacks=[callback], **setup.fit)
        return callback.report

    return run


class OracleCallback(keras.callbacks.Callback):
    """Per-batch losses from the running epoch mean; the probe's outputs before and after training."""

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        self.setup = setup
        n, size = len(setup.x), int(setup.fit.get("batch_size", 32))
        self.sizes = [min(size, n - i) for i in range(0, n, size)]
        self.losses: list[float] = []
        self._prev = (0.0, 0)
        self.out0: np.ndarray | None = None
        self.out_end: np.ndarray | None = None

    def _outputs(self) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.model(self.setup.probe[0], training=False))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.out0 = self._outputs()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._prev = (0.0, 0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean = float((logs or {}).get("loss", math.nan))
        seen = self._prev[1] + self.sizes[batch]
        self.losses.append((mean * seen - self._prev[0] * self._prev[1]) / self.sizes[batch])
        self._prev = (mean, seen)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.out_end = self._outputs()


def oracle(program: Callable[[], Setup]) -> dict[str, Any]:
    """Fit the program under ``OracleCallback``; the numbers ``mistakes_oracle.summarise`` picks from."""
    setup = program()
    recorder = OracleCallback(setup)
    setup.model.fit(setup.x, setup.y, verbose=0, callbacks=[recorder], **setup.fit)
    assert recorder.out0 is not None and recorder.out_end is not None
    losses = recorder.losses
    px, py = setup.probe
    y = torch.as_tensor(py).flatten() if setup.task != "regression" else torch.as_tensor(py)
    chance = Probe(px, y, setup.task).chance
    loss0, loss_end = losses[0], statistics.median(losses[-max(1, len(losses) // 10) :])
    out0, out_end = torch.as_tensor(recorder.out0), torch.as_tensor(recorder.out_end)
    return {
        "steps": len(losses),
        "loss0": loss0,
        "loss_end": loss_end,
        "chance": chance,
        "metric0": metric(setup.task, out0, y),
        "metric_end": metric(setup.task, out_end, y),
        "loss_end/loss0": loss_end / loss0,
        "loss_end/chance": loss_end / chance,
        "grad_med": None,  # not measured in Keras
        "out_std0": float(out0.double().std()),
        "out_kind": output_kind(out_end),
        "expects": setup.expects,
    }


# name -> (mistake, topic, words (None: the topic's), about, source, twin)
# fmt: off
LABELS: dict[str, tuple[str | None, str, tuple[str, ...] | None, str, str, str | None]] = {
    "ks_softmax_from_logits": ("output_loss_mismatch", "output_loss_mismatch", ("softmax", "from_logits"), "Dense(10, activation='softmax') under SparseCategoricalCrossentropy(from_logits=True)", QUICKSTART, "ks_softmax_probs_loss"),
    "ks_linear_into_probs_loss": ("output_loss_mismatch", "output_loss_mismatch", ("from_logits", "logits", "softmax", "probabilit*"), "linear Dense(10) under loss='sparse_categorical_crossentropy' (from_logits=False)", QUICKSTART, "ks_logits_from_logits"),
    "ks_logits_from_logits": (None, "output_loss_mismatch", None, "the quickstart: Dense(10) logits under from_logits=True", QUICKSTART, "ks_linear_into_probs_loss"),
    "ks_softmax_probs_loss": (None, "output_loss_mismatch", None, "Dense(10, activation='softmax') under loss='sparse_categorical_crossentropy'", CLASSIFY, "ks_softmax_from_logits"),
    "ks_softmax_one_unit": ("output_loss_mismatch", "output_loss_mismatch", ("softmax",), "Dense(1, activation='softmax') for a binary label: every prediction is 1.0", "keras-io examples/structured_data/structured_data_classification_from_scratch.py (Dense(1, sigmoid)); breast-cancer table", "ks_sigmoid_binary"),
    "ks_sigmoid_binary": (None, "output_loss_mismatch", None, "Dense(1, activation='sigmoid') under binary_crossentropy", "keras-io examples/structured_data/structured_data_classification_from_scratch.py", "ks_softmax_one_unit"),
    "ks_labels_shuffled": ("chance_level_loss", "chance_level_loss", None, "np.random.shuffle(y_train) alone before fit: labels no longer belong to the images", QUICKSTART, "ks_logits_from_logits"),
}
# fmt: on
SLOW = {
    "ks_softmax_from_logits",
    "ks_linear_into_probs_loss",
    "ks_softmax_one_unit",
    "ks_sigmoid_binary",
    "ks_softmax_probs_loss",
}  # 2-3.6 s each (two fast ones cover the adapter)

# fmt: off
ORACLE: dict[str, dict[str, Any]] = {
    'ks_softmax_from_logits': {'steps': 235, 'loss0': 2.43, 'loss_end': 0.335, 'chance': 2.3, 'metric_end': 0.855, 'out_kind': 'probs', 'expects': 'logits'},
    'ks_linear_into_probs_loss': {'steps': 235, 'loss0': 8.85, 'loss_end': 2.23, 'chance': 2.3, 'metric_end': 0.519, 'out_kind': 'logits', 'expects': 'probs'},
    'ks_logits_from_logits': {'steps': 235, 'loss0': 2.43, 'loss_end': 0.335, 'chance': 2.3, 'metric_end': 0.855, 'out_kind': 'logits', 'expects': 'logits'},
    'ks_softmax_probs_loss': {'steps': 235, 'loss0': 2.43, 'loss_end': 0.335, 'chance': 2.3, 'metric_end': 0.855, 'out_kind': 'probs', 'expects': 'probs'},
    'ks_softmax_one_unit': {'steps': 130, 'loss0': 1.64, 'loss_end': 0.243, 'chance': 0.666, 'metric_end': 0.615, 'out_kind': 'constant', 'expects': 'probs'},
    'ks_sigmoid_binary': {'steps': 130, 'loss0': 1.64, 'loss_end': 0.243, 'chance': 0.666, 'metric_end': 0.935, 'out_kind': 'probs', 'expects': 'probs'},
    'ks_labels_shuffled': {'steps': 235, 'loss0': 2.45, 'loss_end': 2.29, 'chance': 2.3, 'metric_end': 0.037, 'loss_end/chance': 0.995, 'grad_med': None},
}
# fmt: on


CASES: list[MistakeCase] = build_cases("keras", LABELS, ORACLE, SLOW, lambda name: (gradwatch_run(PROGRAMS[name]), partial(oracle, PROGRAMS[name])))

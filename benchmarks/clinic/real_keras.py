"""Real public Keras programs, shrunk to seconds on one CPU thread, healthy and with reported faults.

Each program is written once as a function returning a compiled ``Setup`` (model, data, fit
arguments); ``run`` trains it under gradwatch, ``keras_oracle`` trains the same program with the
same seed under an independent callback and derives the label (rules in its docstring). Sources:
keras-io examples (not mnist_convnet, addition_rnn, autoencoder), TensorFlow's Keras tutorials,
and Stack Exchange / forum questions that are not in the DeepLocalize benchmark. Data is generated
or comes from sklearn; ports keep model, optimizer, loss, initialisation and the fit call, with
smaller widths, fewer rows and fewer epochs.

Held out and checked: the 30 StackOverflow ids and 11 GitHub projects of the DeepLocalize benchmark
(Wardat-ISU/DeepLocalize, Benchmark/); none of the questions used here is among them or shares
their code. Left out after labelling: the structured-data example without its Normalization layer
(raw features to 2500; the oracle calls it "unclear": loss 164 -> 57, no rule holds) and a softmax
over one unit under *binary* cross-entropy (Keras 3 takes the cached pre-softmax logit, so the loss
trains normally and only the predictions are constant: not visible in training dynamics).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from gradwatch import Report  # noqa: E402
from gradwatch.integrations.keras import GradWatchCallback  # noqa: E402

from .case import Case  # noqa: E402
from .keras_oracle import Setup  # noqa: E402


def seeded(seed: int = 0) -> np.random.Generator:
    keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


# --- keras-io structured_data/structured_data_classification_from_scratch ---------------------
def structured(fault: str = "") -> Setup:
    """Normalised numeric features -> Dense(32, relu) -> Dropout(0.5) -> Dense(1, sigmoid), Adam, BCE.

    The heart-disease CSV (303 rows, 13 features) becomes sklearn's breast-cancer table (569 x 30).
    """
    from sklearn.datasets import load_breast_cancer

    seeded(0)
    x, y = load_breast_cancer(return_X_y=True)
    x, y = x.astype("float32"), y.astype("float32")[:, None]
    dense: dict[str, Any] = {}
    if fault == "zeros":
        dense = {"kernel_initializer": "zeros"}
    if fault == "l2":
        dense = {"kernel_regularizer": keras.regularizers.L2(10.0)}
    inputs = keras.Input((30,))
    h = inputs
    if fault != "unscaled":
        norm = layers.Normalization()
        norm.adapt(x)
        h = norm(h)
    h = layers.Dense(32, activation="relu", **dense)(h)
    h = layers.Dropout(0.5)(h)
    outputs = layers.Dense(1, activation="sigmoid", **dense)(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return Setup(model, x, y, {"batch_size": 32, "epochs": 30 if fault == "l2" else 8})


# --- keras-io structured_data/imbalanced_classification ---------------------------------------
def imbalanced(lr: float = 1e-2) -> Setup:
    """Fraud detection: standardised features, 3 x Dense(256, relu) with dropout, sigmoid, class weights.

    Credit-card data (284,807 x 30, 0.17% fraud) becomes 4096 generated rows with ~3% positives;
    widths 256 -> 64; Adam(1e-2), batch 2048 (2 steps per epoch), 30 epochs.
    """
    rng = seeded(0)
    n, d = 4096, 29
    y = (rng.random(n) < 0.03).astype("float32")
    x = rng.normal(size=(n, d)).astype("float32")
    x[:, :6] += y[:, None] * rng.normal(1.5, 0.5, size=6).astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    counts = np.bincount(y.astype(int))
    model = keras.Sequential([
        keras.Input((d,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    model.compile(keras.optimizers.Adam(lr), "binary_crossentropy", metrics=[keras.metrics.Recall(name="recall")])
    weights = {0: 1.0 / counts[0], 1: 1.0 / counts[1]}
    return Setup(model, x, y[:, None], {"batch_size": 2048, "epochs": 30, "class_weight": weights})


# --- keras-io timeseries/timeseries_classification_from_scratch -------------------------------
def timeseries(lr: float = 1e-3) -> Setup:
    """FCN: 3 x (Conv1D(64, 3, same) + BatchNorm + ReLU), global average pooling, softmax, Adam.

    FordA (3601 engine-noise series of 500 steps) becomes 512 generated series of 128 steps whose
    class sets the frequency band of a noisy oscillation; filters 64 -> 32; 3 epochs of 16 steps.
    """
    rng = seeded(0)
    n, t = 512, 128
    y = rng.integers(0, 2, n)
    freq = np.where(y == 1, rng.uniform(0.08, 0.12, n), rng.uniform(0.04, 0.07, n))
    phase = rng.uniform(0, 2 * np.pi, n)
    steps = np.arange(t)
    x = np.sin(2 * np.pi * freq[:, None] * steps + phase[:, None]) + rng.normal(0, 0.8, (n, t))
    x = ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True))[..., None].astype("float32")
    inputs = keras.Input((t, 1))
    h = inputs
    for _ in range(3):
        h = layers.Conv1D(32, 3, padding="same")(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU()(h)
    h = layers.GlobalAveragePooling1D()(h)
    outputs = layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return Setup(model, x, y.astype("int64"), {"batch_size": 32, "epochs": 3})


# --- keras-io nlp/text_classification_from_scratch ---------------------------------------------
def text_cnn() -> Setup:
    """Embedding -> Dropout -> 2 x Conv1D(128, 7, strides=3, relu) -> GlobalMaxPool -> Dense(128) -> sigmoid.

    IMDB (20k-word vocabulary, 500 tokens) becomes 2048 generated reviews of 60 tokens over 200 words,
    sentiment carried by a few marker words; widths 128 -> 32; 3 epochs as in the example.
    """
    rng = seeded(0)
    n, length, vocab = 2048, 60, 200
    y = rng.integers(0, 2, n)
    x = rng.integers(22, vocab, (n, length))
    for i in range(n):
        markers = rng.integers(2, 12, 4) + 10 * y[i]  # words 2-11 negative, 12-21 positive
        x[i, rng.choice(length, 4, replace=False)] = markers
    inputs = keras.Input((length,), dtype="int64")
    h = layers.Embedding(vocab, 32)(inputs)
    h = layers.Dropout(0.5)(h)
    h = layers.Conv1D(32, 7, padding="valid", activation="relu", strides=3)(h)
    h = layers.Conv1D(32, 7, padding="valid", activation="relu", strides=3)(h)
    h = layers.GlobalMaxPooling1D()(h)
    h = layers.Dense(32, activation="relu")(h)
    h = layers.Dropout(0.5)(h)
    outputs = layers.Dense(1, activation="sigmoid", name="predictions")(h)
    model = keras.Model(inputs, outputs)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return Setup(model, x.astype("int64"), y.astype("float32")[:, None], {"batch_size": 32, "epochs": 3})


# --- tensorflow/docs tutorials/keras/classification -------------------------------------------
def classification(fault: str = "") -> Setup:
    """Flatten -> Dense(128, relu) -> Dense(10) logits, Adam, SparseCategoricalCrossentropy(from_logits).

    Fashion-MNIST 28x28 becomes sklearn's 8x8 digits (1797 images, pixels scaled to [0, 1]); 5 epochs.
    Faults: a -4 bias initialiser on the hidden layer; 10 sigmoid hidden layers instead of one ReLU.
    """
    from sklearn.datasets import load_digits

    seeded(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8).astype("float32")
    if fault == "deep_sigmoid":
        hidden = [layers.Dense(64, activation="sigmoid") for _ in range(10)]
    elif fault == "dead_bias":
        hidden = [layers.Dense(128, activation="relu", bias_initializer=keras.initializers.Constant(-4.0))]
    else:
        hidden = [layers.Dense(128, activation="relu")]
    model = keras.Sequential([keras.Input((8, 8)), layers.Flatten(), *hidden, layers.Dense(10)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return Setup(model, x, y.astype("int64"), {"batch_size": 32, "epochs": 5})


# --- tensorflow/docs tutorials/keras/regression (DNN, full batch) ------------------------------
def regression(fault: str = "") -> Setup:
    """Normalization -> Dense(64, relu) -> Dense(64, relu) -> Dense(1), Adam(1e-3), mean absolute error.

    Auto MPG (392 cars, 9 features) becomes 392 generated cars (displacement, horsepower, weight,
    acceleration, year, ...; MPG 9-46 from weight, horsepower and year). Trained full-batch
    (``batch_size=len(x)``: one step per epoch), 300 epochs. Fault: a sigmoid on the output unit.
    """
    rng = seeded(0)
    n = 392
    cylinders = rng.choice([4, 6, 8], n, p=[0.5, 0.2, 0.3])
    displacement = cylinders * rng.normal(40, 6, n)
    horsepower = 0.35 * displacement + rng.normal(20, 10, n)
    weight = 8.0 * displacement + rng.normal(1200, 250, n)
    acceleration = rng.normal(15.5, 2.5, n) - 0.02 * (horsepower - 100)
    year = rng.integers(70, 83, n)
    origin = rng.integers(1, 4, n)
    mpg = 46 - 0.0065 * weight - 0.03 * horsepower + 0.75 * (year - 70) + rng.normal(0, 2, n)
    x = np.stack([cylinders, displacement, horsepower, weight, acceleration, year, origin == 1, origin == 2, origin == 3], 1).astype("float32")
    y = np.clip(mpg, 9, 46).astype("float32")[:, None]
    norm = layers.Normalization(axis=-1)
    norm.adapt(x)
    model = keras.Sequential([
        keras.Input((9,)),
        norm,
        layers.Dense(64, activation="relu"),
        layers.Dense(64, activation="relu"),
        layers.Dense(1, activation="sigmoid" if fault == "sigmoid_out" else None),
    ])  # fmt: skip
    model.compile(loss="mean_absolute_error", optimizer=keras.optimizers.Adam(0.001))
    return Setup(model, x, y, {"batch_size": len(x), "epochs": 300})


# --- Cross Validated 481881 "Convolutional neural network fails even when given answer" ------
def cnn_softmax_one_unit() -> Setup:
    """Conv2D(30, 3, relu) -> Conv2D(64, 3, relu) -> Flatten -> Dense(1, softmax), Adam, categorical CE.

    A softmax over one unit is 1 for every input; under categorical cross-entropy (Keras takes the
    cached logit) the loss is exactly 0 and no gradient flows: nothing ever trains. The question's
    99 x 25 x 2 inputs (the answer bit hidden in channel 2) become 512 generated 12 x 8 x 2 inputs;
    1 epoch as posted (default batch 32: 16 steps).
    """
    rng = seeded(0)
    n = 512
    y = rng.integers(0, 2, n).astype("float32")
    x = rng.normal(size=(n, 12, 8, 2)).astype("float32")
    x[:, :, :, 1] = y[:, None, None]
    model = keras.Sequential([
        keras.Input((12, 8, 2)),
        layers.Conv2D(30, kernel_size=3, activation="relu"),
        layers.Conv2D(64, kernel_size=3, activation="relu"),
        layers.Flatten(),
        layers.Dense(1, activation="softmax"),
    ])  # fmt: skip
    model.compile("adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return Setup(model, x, y[:, None], {"epochs": 1})


# --- DeepLearning.AI forum "Loss values do not change" (y = 2x - 1, ReLU output) ---------------
def relu_line(seed: int = 0) -> Setup:
    """Dense(4, relu) -> Dense(2, relu) -> Dense(1, relu) on 7 points of y = 2x - 1, Adam(1e-3), MSE.

    The poster reports the loss frozen in 6-7 of 10 runs: a ReLU output (and tiny ReLU layers) can
    start or fall dead. Seven points, default batch 32: full batch, 500 epochs as posted. With the
    oracle, seeds 1, 4, 5 start dead, 6 falls dead during training, 3 is stuck, 0 and 2 train.
    """
    seeded(seed)
    x = np.array([[-1.0], [0.0], [1.0], [2.0], [3.0], [4.0], [5.0]], dtype="float32")
    inputs = keras.Input((1,))
    h = layers.Dense(4, activation="relu")(inputs)
    h = layers.Dense(2, activation="relu")(h)
    outputs = layers.Dense(1, activation="relu")(h)
    model = keras.Model(inputs, outputs)
    model.compile(loss=keras.losses.MeanSquaredError(), optimizer=keras.optimizers.Adam(0.001))
    probe = np.linspace(-1, 5, 256, dtype="float32")[:, None]
    return Setup(model, x, 2 * x - 1, {"epochs": 500}, probe=probe)


# --- Stack Exchange "Why does accuracy remain the same" (threshold 50000, ReLU output) ----------
def threshold_relu() -> Setup:
    """Dense(3, relu) -> Dense(5, relu) -> Dense(1, relu) under binary cross-entropy, Adam, batch 5.

    Raw integers in [0, 100000) (unscaled) labelled by ``x >= 50000``; the question trains 10 epochs on
    10,000 rows; here 1000 rows, 1 epoch (200 steps).
    """
    rng = seeded(0)
    half = 500
    low = rng.integers(0, 50000, half)
    high = rng.integers(50000, 100000, half)
    data = np.concatenate([np.stack([low, np.zeros(half)], 1), np.stack([high, np.ones(half)], 1)])
    data = data[rng.permutation(len(data))]
    model = keras.Sequential([
        keras.Input((1,)),
        layers.Dense(3, activation="relu"),
        layers.Dense(5, activation="relu"),
        layers.Dense(1, activation="relu"),
    ])  # fmt: skip
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return Setup(model, data[:, :1].astype("float32"), data[:, 1:].astype("float32"), {"batch_size": 5, "epochs": 1})


# --- Cross Validated 284189 "Simple Linear Regression in Keras" (unscaled, SGD) -----------------
def linear_unscaled() -> Setup:
    """One linear Dense unit, SGD() defaults, MSE, batch_size=1, shuffle=False: NaN loss in the question.

    The poster's two-column data set becomes 100 generated rows of the classic head-size (cm^3) vs
    brain-weight (g) kind: x in [2700, 4700], y ~ 0.26 x + 325; 2 epochs of 100 steps.
    """
    rng = seeded(0)
    x = rng.uniform(2700, 4700, (100, 1)).astype("float32")
    y = (0.26 * x + 325 + rng.normal(0, 70, (100, 1))).astype("float32")
    inputs = keras.Input((1,))
    model = keras.Model(inputs, layers.Dense(1, activation="linear")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(), loss="mse", metrics=["mse"])
    return Setup(model, x, y, {"batch_size": 1, "epochs": 2, "shuffle": False}, probe=x)


PROGRAMS: dict[str, Callable[[], Setup]] = {
    "rk_structured": structured,
    "rk_structured_zero_init": lambda: structured("zeros"),
    "rk_structured_l2": lambda: structured("l2"),
    "rk_imbalanced": imbalanced,
    "rk_imbalanced_lr10": lambda: imbalanced(10.0),
    "rk_timeseries_fcn": timeseries,
    "rk_timeseries_lr1e-7": lambda: timeseries(1e-7),
    "rk_text_cnn": text_cnn,
    "rk_tf_classify": classification,
    "rk_tf_classify_bias": lambda: classification("dead_bias"),
    "rk_tf_classify_sigmoid10": lambda: classification("deep_sigmoid"),
    "rk_tf_regress_fullbatch": regression,
    "rk_tf_regress_sigmoid": lambda: regression("sigmoid_out"),
    "rk_cv_cnn_softmax1": cnn_softmax_one_unit,
    "rk_forum_relu_line_s0": relu_line,
    "rk_forum_relu_line_s6": lambda: relu_line(6),
    "rk_se_threshold_relu": threshold_relu,
    "rk_cv_linear_unscaled": linear_unscaled,
}


def run(program: Callable[[], Setup]) -> Callable[[], Report]:
    def train() -> Report:
        setup = program()
        callback = GradWatchCallback(print_report=False, warn_on=None)
        setup.model.fit(setup.x, setup.y, callbacks=[callback], verbose=0, **setup.fit)
        assert callback.report is not None
        return callback.report

    return train


CASES: list[Case] = [
    Case(
        "rk_structured",
        "keras",
        None,
        run(PROGRAMS["rk_structured"]),
        "unmodified: Normalization, Dense 32, Dropout, sigmoid",
        allowed=(),
        source="keras-team/keras-io examples/structured_data/structured_data_classification_from_scratch.py",
        oracle={
            "steps": 144,
            "L_first": 0.544,
            "L0": 0.577,
            "L20": 0.352,
            "Lend": 0.135,
            "const": 0.66,
            "first_nan": None,
            "max_loss": 0.891,
            "P0": 0.777,
            "P20": 0.404,
            "Pend": 0.149,
            "grad0": 1.4,
            "grad_max": 1.4,
            "ratio0": 1.34,
            "ratio20": 1.52,
            "ratio_end": 0.845,
            "dead20": 0.0,
            "dead_end": 0.0,
            "dead_sustained": 0.0,
            "wnorm0": 5.7,
            "wnorm_end": 6.01,
            "finite_end": True,
            "acc_end": 0.944,
        },
    ),
    Case(
        "rk_structured_zero_init",
        "keras",
        "dead_relu",
        run(PROGRAMS["rk_structured_zero_init"]),
        "kernel_initializer='zeros' on both Dense",
        allowed=("early_stagnation",),
        source="keras-team/keras-io examples/structured_data/structured_data_classification_from_scratch.py",
        oracle={
            "steps": 144,
            "L_first": 0.693,
            "L0": 0.693,
            "L20": 0.69,
            "Lend": 0.68,
            "const": 0.66,
            "first_nan": None,
            "max_loss": 0.693,
            "P0": 0.693,
            "P20": 0.693,
            "Pend": 0.696,
            "grad0": 0.0,
            "grad_max": 0.0,
            "ratio0": "nan",
            "ratio20": "nan",
            "ratio_end": "nan",
            "dead20": 1.0,
            "dead_end": 1.0,
            "dead_sustained": 1.0,
            "wnorm0": 0.0,
            "wnorm_end": 0.0,
            "finite_end": True,
            "acc_end": 0.627,
        },
    ),
    Case(
        "rk_structured_l2",
        "keras",
        "weight_collapse",
        run(PROGRAMS["rk_structured_l2"]),
        "L2(10) kernel regularizer, 30 epochs",
        allowed=(),
        source="keras-team/keras-io examples/structured_data/structured_data_classification_from_scratch.py",
        oracle={
            "steps": 540,
            "L_first": 325.0,
            "L0": 287.0,
            "L20": 109.0,
            "Lend": 1.31,
            "const": 0.66,
            "first_nan": None,
            "max_loss": 325.0,
            "P0": 325.0,
            "P20": 108.0,
            "Pend": 1.16,
            "grad0": 114.0,
            "grad_max": 114.0,
            "ratio0": 3.7,
            "ratio20": 3.01,
            "ratio_end": 0.857,
            "dead20": 0.0,
            "dead_end": 0.0938,
            "dead_sustained": 0.0,
            "wnorm0": 5.7,
            "wnorm_end": 0.212,
            "finite_end": True,
            "acc_end": 0.627,
        },
    ),
    Case(
        "rk_imbalanced",
        "keras",
        None,
        run(PROGRAMS["rk_imbalanced"]),
        "unmodified: Adam 1e-2, class weights, 2 steps/epoch",
        allowed=(),
        source="keras-team/keras-io examples/structured_data/imbalanced_classification.py",
        oracle={
            "steps": 60,
            "L_first": 0.000339,
            "L0": 0.000324,
            "L20": 4.49e-05,
            "Lend": 2.05e-06,
            "const": 0.141,
            "first_nan": None,
            "max_loss": 0.000339,
            "P0": 0.952,
            "P20": 0.0723,
            "Pend": 0.000207,
            "grad0": 1.45,
            "grad_max": 1.45,
            "ratio0": 0.193,
            "ratio20": 1.69,
            "ratio_end": 5.58,
            "dead20": 0.0,
            "dead_end": 0.0156,
            "dead_sustained": 0.0,
            "wnorm0": 13.0,
            "wnorm_end": 14.4,
            "finite_end": True,
            "acc_end": None,
        },
    ),
    Case(
        "rk_imbalanced_lr10",
        "keras",
        "exploding_gradients",
        run(PROGRAMS["rk_imbalanced_lr10"]),
        "Adam lr 1e-2 -> 10 (x1000)",
        allowed=("dead_relu", "early_stagnation"),
        source="keras-team/keras-io examples/structured_data/imbalanced_classification.py",
        oracle={
            "steps": 60,
            "L_first": 0.000339,
            "L0": 639.0,
            "L20": 175.0,
            "Lend": 0.000618,
            "const": 0.141,
            "first_nan": None,
            "max_loss": 19200.0,
            "P0": 0.952,
            "P20": 24700.0,
            "Pend": 2.34,
            "grad0": 1.45,
            "grad_max": 8310.0,
            "ratio0": 0.193,
            "ratio20": 10.5,
            "ratio_end": "nan",
            "dead20": 0.594,
            "dead_end": 0.797,
            "dead_sustained": 0.594,
            "wnorm0": 13.0,
            "wnorm_end": 4510.0,
            "finite_end": True,
            "acc_end": None,
        },
    ),
    Case(
        "rk_timeseries_fcn",
        "keras",
        None,
        run(PROGRAMS["rk_timeseries_fcn"]),
        "unmodified FCN, 3 epochs of 16 steps",
        allowed=(),
        source="keras-team/keras-io examples/timeseries/timeseries_classification_from_scratch.py",
        oracle={
            "steps": 48,
            "L_first": 0.72,
            "L0": 0.735,
            "L20": 0.578,
            "Lend": 0.303,
            "const": 0.689,
            "first_nan": None,
            "max_loss": 0.768,
            "P0": 0.742,
            "P20": 0.55,
            "Pend": 0.265,
            "grad0": 0.627,
            "grad_max": 0.627,
            "ratio0": 0.423,
            "ratio20": 0.674,
            "ratio_end": 0.266,
            "dead20": 0.0,
            "dead_end": 0.0,
            "dead_sustained": 0.0,
            "wnorm0": 8.3,
            "wnorm_end": 8.42,
            "finite_end": True,
            "acc_end": 0.965,
        },
    ),
    Case(
        "rk_timeseries_lr1e-7",
        "keras",
        "early_stagnation",
        run(PROGRAMS["rk_timeseries_lr1e-7"]),
        "Adam lr 1e-3 -> 1e-7 (/1e4)",
        allowed=(),
        source="keras-team/keras-io examples/timeseries/timeseries_classification_from_scratch.py",
        oracle={
            "steps": 48,
            "L_first": 0.72,
            "L0": 0.748,
            "L20": 0.774,
            "Lend": 0.697,
            "const": 0.689,
            "first_nan": None,
            "max_loss": 0.891,
            "P0": 0.742,
            "P20": 0.742,
            "Pend": 0.742,
            "grad0": 0.627,
            "grad_max": 0.627,
            "ratio0": 0.423,
            "ratio20": 0.422,
            "ratio_end": 0.423,
            "dead20": 0.0,
            "dead_end": 0.0,
            "dead_sustained": 0.0,
            "wnorm0": 8.3,
            "wnorm_end": 8.3,
            "finite_end": True,
            "acc_end": 0.545,
        },
    ),
    Case(
        "rk_text_cnn",
        "keras",
        None,
        run(PROGRAMS["rk_text_cnn"]),
        "unmodified 1D convnet, tiny vocabulary",
        allowed=(),
        source="keras-team/keras-io examples/nlp/text_classification_from_scratch.py",
        oracle={
            "steps": 192,
            "L_first": 0.696,
            "L0": 0.694,
            "L20": 0.692,
            "Lend": 0.0747,
            "const": 0.692,
            "first_nan": None,
            "max_loss": 0.714,
            "P0": 0.693,
            "P20": 0.692,
            "Pend": 0.0401,
            "grad0": 0.024,
            "grad_max": 0.0892,
            "ratio0": 3.61,
            "ratio20": 2.59,
            "ratio_end": 0.559,
            "dead20": 0.0312,
            "dead_end": 0.281,
            "dead_sustained": 0.0312,
            "wnorm0": 9.9,
            "wnorm_end": 11.5,
            "finite_end": True,
            "acc_end": 0.865,
        },
    ),
    Case(
        "rk_tf_classify",
        "keras",
        None,
        run(PROGRAMS["rk_tf_classify"]),
        "unmodified: Dense 128 relu, logits",
        allowed=(),
        source="tensorflow/docs site/en/tutorials/keras/classification.ipynb",
        oracle={
            "steps": 285,
            "L_first": 2.34,
            "L0": 2.18,
            "L20": 1.32,
            "Lend": 0.233,
            "const": 2.3,
            "first_nan": None,
            "max_loss": 2.37,
            "P0": 2.3,
            "P20": 1.33,
            "Pend": 0.217,
            "grad0": 0.666,
            "grad_max": 0.666,
            "ratio0": 1.37,
            "ratio20": 1.17,
            "ratio_end": 0.958,
            "dead20": 0.0859,
            "dead_end": 0.109,
            "dead_sustained": 0.0859,
            "wnorm0": 10.2,
            "wnorm_end": 12.9,
            "finite_end": True,
            "acc_end": 0.948,
        },
    ),
    Case(
        "rk_tf_classify_bias",
        "keras",
        "dead_relu",
        run(PROGRAMS["rk_tf_classify_bias"]),
        "hidden bias_initializer -4",
        allowed=("early_stagnation",),
        source="tensorflow/docs site/en/tutorials/keras/classification.ipynb",
        oracle={
            "steps": 285,
            "L_first": 2.3,
            "L0": 2.3,
            "L20": 2.3,
            "Lend": 2.3,
            "const": 2.3,
            "first_nan": None,
            "max_loss": 2.31,
            "P0": 2.3,
            "P20": 2.3,
            "Pend": 2.3,
            "grad0": 0.0,
            "grad_max": 0.0,
            "ratio0": "nan",
            "ratio20": "nan",
            "ratio_end": "nan",
            "dead20": 1.0,
            "dead_end": 1.0,
            "dead_sustained": 1.0,
            "wnorm0": 10.2,
            "wnorm_end": 10.2,
            "finite_end": True,
            "acc_end": 0.101,
        },
    ),
    Case(
        "rk_tf_classify_sigmoid10",
        "keras",
        "vanishing_gradients",
        run(PROGRAMS["rk_tf_classify_sigmoid10"]),
        "10 sigmoid hidden layers",
        allowed=("early_stagnation",),
        source="tensorflow/docs site/en/tutorials/keras/classification.ipynb",
        oracle={
            "steps": 285,
            "L_first": 2.84,
            "L0": 2.51,
            "L20": 2.31,
            "Lend": 2.31,
            "const": 2.3,
            "first_nan": None,
            "max_loss": 2.84,
            "P0": 2.66,
            "P20": 2.31,
            "Pend": 2.31,
            "grad0": 1.11,
            "grad_max": 1.11,
            "ratio0": 4.89e-07,
            "ratio20": 2e-06,
            "ratio_end": 1.96e-06,
            "dead20": 0.0,
            "dead_end": 0.0,
            "dead_sustained": 0.0,
            "wnorm0": 25.6,
            "wnorm_end": 25.7,
            "finite_end": True,
            "acc_end": 0.0829,
        },
    ),
    Case(
        "rk_tf_regress_fullbatch",
        "keras",
        None,
        run(PROGRAMS["rk_tf_regress_fullbatch"]),
        "unmodified DNN, full batch, MAE",
        allowed=(),
        source="tensorflow/docs site/en/tutorials/keras/regression.ipynb",
        oracle={
            "steps": 300,
            "L_first": 27.0,
            "L0": 26.4,
            "L20": 15.6,
            "Lend": 1.65,
            "const": 5.21,
            "first_nan": None,
            "max_loss": 27.0,
            "P0": 26.9,
            "P20": 15.3,
            "Pend": 1.62,
            "grad0": 1.98,
            "grad_max": 8.66,
            "ratio0": 0.435,
            "ratio20": 0.357,
            "ratio_end": 2.98,
            "dead20": 0.125,
            "dead_end": 0.141,
            "dead_sustained": 0.125,
            "wnorm0": 8.97,
            "wnorm_end": 11.7,
            "finite_end": True,
            "acc_end": None,
        },
    ),
    Case(
        "rk_tf_regress_sigmoid",
        "keras",
        "early_stagnation",
        run(PROGRAMS["rk_tf_regress_sigmoid"]),
        "sigmoid output on MPG target, full batch",
        allowed=(),
        source="tensorflow/docs site/en/tutorials/keras/regression.ipynb",
        oracle={
            "steps": 300,
            "L_first": 26.7,
            "L0": 26.5,
            "L20": 26.2,
            "Lend": 26.2,
            "const": 5.21,
            "first_nan": None,
            "max_loss": 26.7,
            "P0": 26.6,
            "P20": 26.1,
            "Pend": 26.1,
            "grad0": 0.485,
            "grad_max": 0.485,
            "ratio0": 0.434,
            "ratio20": 0.356,
            "ratio_end": 0.333,
            "dead20": 0.0156,
            "dead_end": 0.0156,
            "dead_sustained": 0.0156,
            "wnorm0": 8.97,
            "wnorm_end": 9.73,
            "finite_end": True,
            "acc_end": None,
        },
    ),
    Case(
        "rk_cv_cnn_softmax1",
        "keras",
        "early_stagnation",
        run(PROGRAMS["rk_cv_cnn_softmax1"]),
        "Dense(1, softmax) + categorical CE: loss 0",
        allowed=(),
        source="Cross Validated (stats.stackexchange.com) question 481881 'Convolutional neural network fails even when given answer'",
        oracle={
            "steps": 16,
            "L_first": 0.0,
            "L0": 0.0,
            "L20": 0.0,
            "Lend": 0.0,
            "const": None,
            "first_nan": None,
            "max_loss": 0.0,
            "P0": 0.0,
            "P20": 0.0,
            "Pend": 0.0,
            "grad0": 1.56,
            "grad_max": 8.93,
            "ratio0": 0.107,
            "ratio20": 0.21,
            "ratio_end": 0.439,
            "dead20": 0.0,
            "dead_end": 0.0,
            "dead_sustained": 0.0,
            "wnorm0": 6.8,
            "wnorm_end": 7.04,
            "finite_end": True,
            "acc_end": 0.545,
        },
    ),
    Case(
        "rk_forum_relu_line_s0",
        "keras",
        None,
        run(PROGRAMS["rk_forum_relu_line_s0"]),
        "as posted, a seed that trains",
        allowed=(),
        source="community.deeplearning.ai/t/loss-values-do-not-change/324182 (y = 2x - 1, ReLU output)",
        oracle={
            "steps": 500,
            "L_first": 22.3,
            "L0": 21.9,
            "L20": 18.8,
            "Lend": 3.04,
            "const": 16.0,
            "first_nan": None,
            "max_loss": 22.3,
            "P0": 22.3,
            "P20": 18.8,
            "Pend": 2.68,
            "grad0": 11.7,
            "grad_max": 20.7,
            "ratio0": 0.95,
            "ratio20": 0.598,
            "ratio_end": 0.673,
            "dead20": 0.25,
            "dead_end": 0.25,
            "dead_sustained": 0.25,
            "wnorm0": 2.06,
            "wnorm_end": 2.95,
            "finite_end": True,
            "acc_end": None,
        },
    ),
    Case(
        "rk_forum_relu_line_s6",
        "keras",
        "dead_relu",
        run(PROGRAMS["rk_forum_relu_line_s6"]),
        "as posted, a seed whose ReLUs fall dead",
        allowed=("early_stagnation",),
        source="community.deeplearning.ai/t/loss-values-do-not-change/324182 (y = 2x - 1, ReLU output)",
        oracle={
            "steps": 500,
            "L_first": 25.2,
            "L0": 25.1,
            "L20": 25.0,
            "Lend": 25.0,
            "const": 16.0,
            "first_nan": None,
            "max_loss": 25.2,
            "P0": 25.2,
            "P20": 25.0,
            "Pend": 25.0,
            "grad0": 1.59,
            "grad_max": 1.59,
            "ratio0": 6.42,
            "ratio20": "nan",
            "ratio_end": "nan",
            "dead20": 1.0,
            "dead_end": 1.0,
            "dead_sustained": 1.0,
            "wnorm0": 2.3,
            "wnorm_end": 2.27,
            "finite_end": True,
            "acc_end": None,
        },
    ),
    Case(
        "rk_se_threshold_relu",
        "keras",
        "dead_relu",
        run(PROGRAMS["rk_se_threshold_relu"]),
        "raw inputs to 1e5, ReLU output under BCE",
        allowed=("early_stagnation",),
        source="Stack Exchange question 'Why does accuracy remain the same' (threshold 50000; mirrored at geeksmental.com/question/why-does-accuracy-remain-the-same)",
        oracle={
            "steps": 200,
            "L_first": 6.38,
            "L0": 6.38,
            "L20": 9.57,
            "Lend": 6.38,
            "const": 0.693,
            "first_nan": None,
            "max_loss": 15.9,
            "P0": 8.16,
            "P20": 8.16,
            "Pend": 8.16,
            "grad0": 0.0,
            "grad_max": 0.0,
            "ratio0": "nan",
            "ratio20": "nan",
            "ratio_end": "nan",
            "dead20": 0.8,
            "dead_end": 0.8,
            "dead_sustained": 0.8,
            "wnorm0": 2.59,
            "wnorm_end": 2.59,
            "finite_end": True,
            "acc_end": 0.5,
        },
    ),
    Case(
        "rk_cv_linear_unscaled",
        "keras",
        "nonfinite",
        run(PROGRAMS["rk_cv_linear_unscaled"]),
        "unscaled x ~ 3000, SGD 0.01, batch 1",
        allowed=("exploding_gradients",),
        source="Cross Validated (stats.stackexchange.com) question 284189 'Simple Linear Regression in Keras'",
        oracle={
            "steps": 200,
            "L_first": 1100000.0,
            "L0": "nan",
            "L20": "nan",
            "Lend": "nan",
            "const": 28600.0,
            "first_nan": 4,
            "max_loss": 5.47e37,
            "P0": 1230000.0,
            "P20": "nan",
            "Pend": "nan",
            "grad0": 8500000.0,
            "grad_max": 8500000.0,
            "ratio0": 1.0,
            "ratio20": "nan",
            "ratio_end": "nan",
            "dead20": 0.0,
            "dead_end": 0.0,
            "dead_sustained": 0.0,
            "wnorm0": 0.0543,
            "wnorm_end": "nan",
            "finite_end": False,
            "acc_end": None,
        },
    ),
]

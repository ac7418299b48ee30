"""Independent oracle for the real Keras clinic cases (``real_keras``); it never imports gradwatch.

``python -m benchmarks.clinic.keras_oracle [NAMES]`` reruns each program with the same seed, a plain
Keras callback instead of gradwatch, and prints the numbers and the label they give.

Measurements (TensorFlow backend):

* per-batch loss, recovered from the running mean Keras puts in ``logs`` (a sample-weighted mean
  from the epoch start): ``loss_k = (m_k * N_k - m_{k-1} * N_{k-1}) / n_k`` with ``N_k`` the samples
  seen in the epoch so far; ``L0`` = median of the first 5% of steps, ``L20`` = median of steps in
  15-25% of the run, ``Lend`` = median of the last 10%; first step with a non-finite loss;
* at the start, at 20%, 50% and the end: on a fixed probe batch (first 256 training rows), the
  gradient of the compiled loss plus regularisation losses, by ``tf.GradientTape`` around
  ``model.stateless_call(training=True)`` (no BatchNorm/seed state is written back), per
  kernel-bearing layer (Dense/Conv); the first/last layer gradient-norm ratio; the share of units of
  each ReLU layer never active (output > 0 nowhere, over >= 256 probe rows and all positions), from a
  probe sub-model, also stateless; the global kernel norm;
* ``const``: the loss of the best constant predictor (prior entropy for cross-entropy, variance for
  MSE, mean absolute deviation for MAE; class weights ignored); the last epoch's accuracy if logged.

Label rules (the first that holds is ``expected``; any other that holds goes into ``allowed``):

1. nonfinite: a non-finite batch loss, or a non-finite weight at a probe;
2. exploding_gradients: the gradient norm at a probe exceeds the start's by > 1e3, or a finite
   batch loss exceeds 1e3 times the first batch's (also checked when a NaN follows: growth first);
3. dead_relu: some ReLU layer has > 50% of its units never active at both the 20% and end probes;
4. vanishing_gradients: first/last layer gradient-norm ratio < 1e-3 at both the 20% and end probes;
5. weight_collapse: the global kernel norm at the end is < 10% of its initial value;
6. early_stagnation: ``L20`` and ``Lend`` both >= 0.95 ``L0`` (flat from the start; or the same on
   the fixed probe batch's loss ``P0``/``P20``/``Pend``, which has no batch-to-batch noise), or stuck at a
   bad value: ``Lend >= 0.95 L20`` (no progress over the last 80%) and ``Lend >= 0.9 const``;
7. healthy: none of the above, and it trains clearly: ``Lend <= 0.7 L0`` and, where ``const`` is
   known, ``Lend < 0.8 const``. A run that meets neither a symptom nor this bar is "unclear".
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import math  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")

SYMPTOM_ORDER = ("nonfinite", "exploding_gradients", "dead_relu", "vanishing_gradients", "weight_collapse", "early_stagnation")


@dataclass
class Setup:
    """A compiled program ready for ``model.fit(x, y, **fit)``; ``probe`` are >= 256 input rows for activity."""

    model: keras.Model
    x: Any
    y: np.ndarray
    fit: dict[str, Any]
    probe: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def rows(x: Any, index: slice | np.ndarray) -> Any:
    return [a[index] for a in x] if isinstance(x, list) else x[index]


def n_rows(x: Any) -> int:
    return len(x[0]) if isinstance(x, list) else len(x)


def constant_loss(loss: Any, y: np.ndarray) -> float | None:
    """Loss of the best input-independent prediction, or None when the loss is not one we know."""
    name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
    name = str(name).lower()
    y = np.asarray(y, dtype="float64")
    if "sparse_categorical" in name:
        p = np.bincount(y.astype(int).ravel()) / y.size
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    if "binary" in name:
        p = float(y.mean())
        return float(-(p * math.log(p) + (1 - p) * math.log(1 - p))) if 0 < p < 1 else 0.0
    if name in ("mse", "mean_squared_error"):
        return float(y.var())
    if name in ("mae", "mean_absolute_error"):
        return float(np.abs(y - np.median(y)).mean())
    return None


def _loss_fn(model: keras.Model) -> Callable[[Any, Any], Any]:
    loss = model.loss
    return keras.losses.get(loss) if isinstance(loss, str) else loss


class OracleCallback(keras.callbacks.Callback):
    """Records per-batch losses and, at four points, gradient norms, dead ReLU shares and kernel norms."""

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        import tensorflow as tf

        self.tf = tf
        self.setup = setup
        n = n_rows(setup.x)
        self.batch_size = int(setup.fit.get("batch_size", 32))
        self.sizes = [min(self.batch_size, n - i) for i in range(0, n, self.batch_size)]
        epochs = int(setup.fit.get("epochs", 1))
        self.total = epochs * len(self.sizes)
        self.probe_at = {max(1, math.ceil(0.2 * self.total)): "p20", max(1, math.ceil(0.5 * self.total)): "p50"}
        index = np.arange(min(256, n))
        self.probe_x, self.probe_y = rows(setup.x, index), setup.y[index]
        self.activity_x = setup.probe if setup.probe is not None else rows(setup.x, np.arange(n)[: max(256, min(n, 1024))])
        self.losses: list[float] = []
        self.probes: dict[str, dict[str, Any]] = {}
        self.accuracy: float | None = None
        self.step = 0
        self._prev = (0.0, 0)  # running mean and samples seen in this epoch

    # --- measurements -------------------------------------------------------------------------
    def _kernels(self) -> list[tuple[str, Any]]:
        return [(layer.name, layer.kernel) for layer in self.model._flatten_layers(include_self=False) if getattr(layer, "kernel", None) is not None]

    def _relu_layers(self) -> list[Any]:
        found = []
        for layer in self.model._flatten_layers(include_self=False):
            act = getattr(layer, "activation", None)
            if isinstance(layer, keras.layers.ReLU) or getattr(act, "__name__", "") == "relu":
                found.append(layer)
        return found

    def _probe(self) -> dict[str, Any]:
        tf, model = self.tf, self.model
        trainable = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
        fixed = [tf.convert_to_tensor(v.value) for v in model.non_trainable_variables]
        loss_fn = _loss_fn(model)
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            out, _, extra = model.stateless_call(trainable, fixed, self.probe_x, training=True, return_losses=True)
            loss = tf.reduce_mean(loss_fn(self.probe_y, out)) + sum(extra, tf.constant(0.0))
        grads = tape.gradient(loss, trainable)
        by_path = {v.path: g for v, g in zip(model.trainable_variables, grads, strict=True)}
        layer_norms = []
        for name, kernel in self._kernels():
            g = by_path.get(kernel.path)
            norm = float(tf.norm(tf.convert_to_tensor(g))) if g is not None else 0.0
            layer_norms.append((name, norm))
        kernel_norm = math.sqrt(sum(float(np.sum(np.square(keras.ops.convert_to_numpy(k)))) for _, k in self._kernels()))
        finite = all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in model.weights)
        first, last = layer_norms[0][1], layer_norms[-1][1]
        result: dict[str, Any] = {
            "loss": float(loss),
            "grad_first": first,
            "grad_last": last,
            "ratio": first / last if last > 0 else float("nan"),
            "grad_total": math.sqrt(sum(n * n for _, n in layer_norms)),
            "kernel_norm": kernel_norm,
            "finite": finite,
            "dead": self._dead_shares(),
        }
        return result

    def _dead_shares(self) -> dict[str, float]:
        layers = self._relu_layers()
        if not layers:
            return {}
        sub = keras.Model(self.model.inputs, [layer.output for layer in layers])
        trainable = [v.value for v in sub.trainable_variables]
        fixed = [v.value for v in sub.non_trainable_variables]
        outs, _ = sub.stateless_call(trainable, fixed, self.activity_x, training=True)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        shares = {}
        for layer, out in zip(layers, outs, strict=True):
            a = keras.ops.convert_to_numpy(out)
            active = (a > 0).reshape(-1, a.shape[-1]).any(axis=0)
            shares[layer.name] = float(1.0 - active.mean())
        return shares

    # --- Keras events -------------------------------------------------------------------------
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.probes["p0"] = self._probe()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._prev = (0.0, 0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        mean = float((logs or {}).get("loss", float("nan")))
        seen = self._prev[1] + self.sizes[batch]
        self.losses.append((mean * seen - self._prev[0] * self._prev[1]) / self.sizes[batch])
        self._prev = (mean, seen)
        self.step += 1
        if self.step in self.probe_at:
            self.probes[self.probe_at[self.step]] = self._probe()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            if "accuracy" in key and not key.startswith("val_"):
                self.accuracy = float(value)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.probes["end"] = self._probe()


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def measure(setup: Setup) -> dict[str, Any]:
    """Train the program with the oracle attached; return its numbers (and the label they give)."""
    oracle = OracleCallback(setup)
    setup.model.fit(setup.x, setup.y, callbacks=[oracle], verbose=0, **setup.fit)
    losses, total = oracle.losses, len(oracle.losses)
    nan_steps = [i for i, value in enumerate(losses) if not math.isfinite(value)]
    head = losses[: max(1, round(0.05 * total))]
    mid = losses[int(0.15 * total) : max(int(0.15 * total) + 1, math.ceil(0.25 * total))]
    tail = losses[-max(1, round(0.1 * total)) :]
    p = oracle.probes
    dead = {name: min(p["p20"]["dead"].get(name, 0.0), p["end"]["dead"].get(name, 0.0)) for name in p["end"]["dead"]}
    numbers: dict[str, Any] = {
        "steps": total,
        "L_first": losses[0] if losses else float("nan"),
        "L0": _median(head),
        "L20": _median(mid),
        "Lend": _median(tail),
        "const": constant_loss(setup.model.loss, setup.y),
        "first_nan": nan_steps[0] if nan_steps else None,
        "max_loss": max((v for v in losses if math.isfinite(v)), default=float("nan")),
        "P0": p["p0"]["loss"],
        "P20": p["p20"]["loss"],
        "Pend": p["end"]["loss"],
        "grad0": p["p0"]["grad_total"],
        "grad_max": max(p[k]["grad_total"] for k in p),
        "ratio0": p["p0"]["ratio"],
        "ratio20": p["p20"]["ratio"],
        "ratio_end": p["end"]["ratio"],
        "dead20": max(p["p20"]["dead"].values(), default=0.0),
        "dead_end": max(p["end"]["dead"].values(), default=0.0),
        "dead_sustained": max(dead.values(), default=0.0),
        "wnorm0": p["p0"]["kernel_norm"],
        "wnorm_end": p["end"]["kernel_norm"],
        "finite_end": p["end"]["finite"],
        "acc_end": oracle.accuracy,
    }
    numbers["symptoms"] = symptoms(numbers)
    numbers["label"] = label(numbers)
    return numbers


def symptoms(n: dict[str, Any]) -> list[str]:
    """Every symptom whose rule (module docstring) holds, in priority order."""
    found = []
    nonfinite = n["first_nan"] is not None or not n["finite_end"]
    if nonfinite:
        found.append("nonfinite")
    growth = n["grad_max"] / n["grad0"] if n["grad0"] > 0 else 1.0  # no gradient at all: no growth to speak of
    if growth > 1e3 or (math.isfinite(n["max_loss"]) and n["max_loss"] > 1e3 * abs(n["L_first"])):
        found.append("exploding_gradients")
    if n["dead_sustained"] > 0.5:
        found.append("dead_relu")
    if n["ratio20"] < 1e-3 and n["ratio_end"] < 1e-3:
        found.append("vanishing_gradients")
    if n["wnorm_end"] < 0.1 * n["wnorm0"]:
        found.append("weight_collapse")
    flat = n["L20"] >= 0.95 * n["L0"] and n["Lend"] >= 0.95 * n["L0"]
    flat = flat or (n["P20"] >= 0.95 * n["P0"] and n["Pend"] >= 0.95 * n["P0"])
    stuck = n["const"] is not None and n["Lend"] >= 0.95 * n["L20"] and n["Lend"] >= 0.9 * n["const"]
    if flat or stuck:
        found.append("early_stagnation")
    return found


def label(n: dict[str, Any]) -> str:
    if n["symptoms"]:
        return n["symptoms"][0]
    trains = n["Lend"] <= 0.7 * n["L0"] and (n["const"] is None or n["Lend"] < 0.8 * n["const"])
    return "healthy" if trains else "unclear"


def compact(numbers: dict[str, Any]) -> dict[str, Any]:
    """The numbers as short literals for a Case's ``oracle`` field."""
    out: dict[str, Any] = {}
    for key, value in numbers.items():
        if isinstance(value, float):
            out[key] = float(f"{value:.3g}") if math.isfinite(value) else str(value)
        elif isinstance(value, list):
            out[key] = ",".join(value) or "-"
        else:
            out[key] = value
    return out


def main(argv: list[str]) -> int:
    from .real_keras import PROGRAMS

    names = argv or list(PROGRAMS)
    for name in names:
        numbers = compact(measure(PROGRAMS[name]()))
        print(f"{name}: label={numbers.pop('label')} symptoms={numbers.pop('symptoms')}")
        print("   ", numbers)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

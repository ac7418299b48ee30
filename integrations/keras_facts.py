"""Architecture facts of a Keras 3 model and its optimizer, for ranking remedies."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import numpy as np

from gradwatch.facts import RECURRENT, LayerFacts, ModelFacts

from ._keras import keras, ops

# Keras activation function names -> the names gradwatch's facts use.
ACTIVATION_NAMES = {
    "relu": "ReLU", "relu6": "ReLU6", "leaky_relu": "LeakyReLU", "elu": "ELU", "selu": "SELU", "gelu": "GELU",
    "silu": "SiLU", "swish": "SiLU", "mish": "Mish", "sigmoid": "Sigmoid", "tanh": "Tanh",
    "hard_sigmoid": "Hardsigmoid", "softsign": "Softsign", "softmax": "Softmax",
}  # fmt: skip
ACTIVATION_LAYERS = {"ReLU": "ReLU", "LeakyReLU": "LeakyReLU", "PReLU": "PReLU", "ELU": "ELU"}
NORMALIZATION = ("BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization")


def activation_of(layer: Any) -> str | None:
    """The activation a layer applies itself (``Dense(activation=...)``, ``Activation``, ``ReLU``...)."""
    kind = type(layer).__name__
    if kind in ACTIVATION_LAYERS:
        return ACTIVATION_LAYERS[kind]
    function = getattr(layer, "activation", None)
    if kind in RECURRENT and getattr(layer, "cell", None) is not None:
        function = getattr(layer.cell, "activation", function)
    name = getattr(function, "__name__", None)
    return ACTIVATION_NAMES.get(name) if name else None


def trainable_layers(model: Any) -> list[Any]:
    """Top-level layers that own trainable weights, in model order."""
    return [layer for layer in model.layers if layer.trainable_weights]


def model_facts(model: Any, optimizer: Any | None) -> ModelFacts:
    """Activations per layer, normalisation, recurrence, residual merges, regularizers, optimizer."""
    layers: list[LayerFacts] = []
    pending: list[int] = []
    normalization, recurrent, regularized = [], [], []
    residual: bool | None = None
    for layer in model.layers:
        kind = type(layer).__name__
        activation = activation_of(layer)
        if kind in ("Add",):
            residual = True
        if kind in NORMALIZATION:
            normalization.append(layer.name)
        if kind in RECURRENT:
            recurrent.append(kind)
        if getattr(layer, "kernel_regularizer", None) is not None or getattr(layer, "bias_regularizer", None) is not None:
            regularized.append(layer.name)
        if not layer.weights or kind in ACTIVATION_LAYERS and kind != "PReLU":
            if activation is not None:
                for index in pending:
                    layers[index] = replace(layers[index], activation=activation, activation_module=layer.name)
                pending = []
            continue
        kernel = _kernel(layer)
        layers.append(
            LayerFacts(
                name=layer.name,
                kind=kind,
                trainable=bool(layer.trainable_weights),
                activation=activation,
                activation_module=layer.name if activation is not None else None,
                init_gain=_gain(kernel),
                fan_in=int(np.prod(kernel.shape[:-1])) if kernel is not None else None,
                units=int(kernel.shape[-1]) if kernel is not None else None,
            )
        )
        if kind in NORMALIZATION:
            pending.append(len(layers) - 1)
        else:
            pending = [len(layers) - 1] if activation is None else []
    if residual is None and isinstance(model, keras.Sequential):
        residual = False  # a Sequential stack cannot merge a skip path
    return ModelFacts(
        layers=tuple(layers),
        normalization=tuple(normalization),
        residual=residual,
        recurrent=tuple(recurrent),
        optimizer=type(optimizer).__name__ if optimizer is not None else None,
        lr=learning_rate(optimizer),
        weight_decay=_float(getattr(optimizer, "weight_decay", None)),
        grad_clipping=any(getattr(optimizer, name, None) for name in ("clipnorm", "global_clipnorm", "clipvalue")) if optimizer else None,
        regularized=tuple(regularized),
        loss=loss_name(getattr(model, "loss", None)),
        dtype=_weights_dtype(model),
    )


def _weights_dtype(model: Any) -> str | None:
    """The dtype most of the model's trainable weights are kept in (``"float32"``), where Keras tells it."""
    sizes: dict[str, int] = {}
    for weight in getattr(model, "trainable_weights", []):
        dtype = str(getattr(weight, "dtype", "") or "")
        if "float" in dtype:
            sizes[dtype] = sizes.get(dtype, 0) + int(math.prod(getattr(weight, "shape", ()) or (1,)))
    return max(sizes, key=sizes.__getitem__) if sizes else None


def loss_name(loss: Any) -> str | None:
    """The compiled loss in snake case (``"categorical_crossentropy"``); logits losses get ``_from_logits``."""
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return None
    if isinstance(loss, str):
        name = loss
    else:
        name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if name[:1].isupper() else name
    aliases = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
    name = aliases.get(name, name)
    return f"{name}_from_logits" if getattr(loss, "from_logits", False) else name


def learning_rate(optimizer: Any | None) -> float | None:
    """The current learning rate (a host read: call it on sampled steps only)."""
    if optimizer is None:
        return None
    try:
        return float(ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # a schedule or an unusual optimizer: not worth failing over
        return None


def _kernel(layer: Any) -> Any | None:
    kernel = getattr(layer, "kernel", None)
    if kernel is None and getattr(layer, "cell", None) is not None:
        kernel = getattr(layer.cell, "kernel", None)
    return kernel if kernel is not None and len(kernel.shape) >= 2 else None


def _gain(kernel: Any | None) -> float | None:
    if kernel is None:
        return None
    values = np.asarray(ops.convert_to_numpy(kernel), dtype=np.float64)
    fan_in = int(np.prod(values.shape[:-1]))
    std = float(values.std())
    return std * math.sqrt(fan_in) if math.isfinite(std) else None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None

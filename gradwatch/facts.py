"""What an adapter learned about the model's architecture and optimizer.

Remedies are ranked from these facts, so "use ReLU" is only said to a model
that does not already use it. ``None`` always means "could not be determined".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

RELU_FAMILY = frozenset({"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish"})
SATURATING = frozenset({"Sigmoid", "Tanh", "Hardsigmoid", "Hardtanh", "Softsign", "LogSigmoid"})
RECURRENT = frozenset({"RNN", "LSTM", "GRU", "SimpleRNN"})
ADAPTIVE = (
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "Adafactor",
    "Lion",
    "Muon",
)  # steps scaled by running gradient statistics
GATED_RECURRENT = frozenset({"LSTM", "GRU"})
DEAD_KINDS = frozenset({"ReLU", "ReLU6"})  # a unit never positive over many rows is dead: measured per unit
# layers with one weight row (PyTorch) or kernel column (Keras) per output unit: their units can be compared
UNIT_LAYERS = frozenset({"Linear", "Conv1d", "Conv2d", "Conv3d", "Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense"})
# optimizers whose step runs several iterations on a curvature model: a step as large as the weights is by design
QUASI_NEWTON = frozenset({"LBFGS"})
MULTICLASS = ("cross_entropy", "categorical_crossentropy", "sparse_categorical_crossentropy")  # losses over several classes
# outputs outside (low, high) sit in an activation's flat tails, where its local derivative is below about 0.01
SATURATED_OUTSIDE = {"Sigmoid": (0.01, 0.99), "Tanh": (-0.99, 0.99)}
HE_GAIN = 2**0.5
# std(W)·sqrt(fan_in) that suits each activation: He for ReLU, LeCun for SELU, Xavier-like ≈ 1 otherwise.
MATCHED_GAIN = {"ReLU": HE_GAIN, "ReLU6": HE_GAIN, "LeakyReLU": HE_GAIN, "PReLU": HE_GAIN, "SELU": 1.0}
INIT_OFF = 3.0  # std·√fan_in this many times above or below what the activation wants: a scale off, not a taste
COMPOUNDED_OFF = 1e3  # activations this many times too large or too small at the output, compounded over the layers


@dataclass(frozen=True)
class LayerFacts:
    """One parameterised layer, in forward (registration) order.

    ``activation`` is the activation applied to its output, if known, and
    ``activation_module`` the name of the separate module applying it (PyTorch's
    ``nn.ReLU``; None where the layer applies it itself, as Keras' ``Dense`` does).
    ``init_gain`` is ``std(W) * sqrt(fan_in)`` measured when watching began:
    about 0.58 for PyTorch's default, 1.0 for LeCun, 1.41 for He. ``units``
    is the number of outputs (features or channels) of the layer.
    """

    name: str
    kind: str
    trainable: bool = True
    activation: str | None = None
    init_gain: float | None = None
    fan_in: int | None = None
    activation_module: str | None = None
    units: int | None = None


@dataclass(frozen=True)
class ModelFacts:
    """Architecture and optimisation facts of the watched model.

    ``regularized``: layers with a kernel or bias regularizer (an L1/L2 penalty
    in the loss, which shrinks weights like weight decay does). ``loss``: the
    loss function in snake case where the adapter can tell (``"cross_entropy"``,
    ``"categorical_crossentropy"``, ``"mse_loss"`` ...). Where the loss's own
    computation shows it (PyTorch's autograd graph): ``loss_input``, the
    activation applied to the prediction just before the loss (``"Softmax"``,
    ``"LogSoftmax"``, ``"Sigmoid"``, ``"ReLU"``, ``"linear"``; ``"other"``: an
    operation between the last layer and the loss, such as pooling);
    ``loss_reduction`` (``"mean"``, ``"sum"``, ``"none"``); ``loss_rows``, the
    rows of one batch; ``loss_broadcast``, the shapes of a prediction and a
    target that an elementwise loss broadcast against each other. ``dtype``:
    the floating type most trainable weights are kept in (``"float32"``,
    ``"float64"``, ``"bfloat16"`` ...). ``grad_clipping`` and ``lr_rose``: the
    training code clips the gradients, its learning rate has risen between two
    samples (a warmup), as set up or as seen.
    """

    layers: tuple[LayerFacts, ...] = ()
    normalization: tuple[str, ...] = ()
    residual: bool | None = None
    recurrent: tuple[str, ...] = ()
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    grad_clipping: bool | None = None
    lr_rose: bool | None = None
    regularized: tuple[str, ...] = ()
    loss: str | None = None
    loss_input: str | None = None
    loss_reduction: str | None = None
    loss_rows: int | None = None
    loss_broadcast: str | None = None
    dtype: str | None = None

    @cached_property
    def kinds(self) -> dict[str, str]:
        """Each layer's kind by its name (computed once per facts object)."""
        return {layer.name: layer.kind for layer in self.layers}

    @property
    def trainable_layers(self) -> tuple[LayerFacts, ...]:
        return tuple(layer for layer in self.layers if layer.trainable)

    @property
    def depth(self) -> int:
        """Number of parameterised layers (trainable or not)."""
        return len(self.layers)

    def activation_counts(self) -> Counter[str]:
        """How many layers are followed by each activation kind."""
        return Counter(layer.activation for layer in self.layers if layer.activation)

    def layers_with(self, kinds: frozenset[str]) -> tuple[LayerFacts, ...]:
        """Layers whose following activation is one of ``kinds``."""
        return tuple(layer for layer in self.layers if layer.activation in kinds)

    def init_mismatch(self) -> tuple[float, list[tuple[LayerFacts, float]], int]:
        """How far the initialisation is from the scale each activation wants: the factor compounded over the
        trainable layers with a known activation (how much activations grow or shrink from input to output),
        the layers more than ``INIT_OFF`` times off with the gain they want, and how many layers were judged."""
        judged = [(layer, MATCHED_GAIN.get(layer.activation or "", 1.0)) for layer in self.trainable_layers if layer.init_gain and layer.activation]
        compounded = 1.0
        for layer, want in judged:
            compounded *= (layer.init_gain or 1.0) / want
        off = [(layer, want) for layer, want in judged if not 1 / INIT_OFF <= (layer.init_gain or 0.0) / want <= INIT_OFF]
        return compounded, off, len(judged)

    @property
    def mostly_frozen(self) -> bool:
        """At most 5% of the weights train (by fan-in × units; by layers where sizes are unknown), in a model of
        three or more layers."""
        if self.depth < 3 or not self.trainable_layers:
            return False
        sizes = {layer.name: (layer.fan_in or 0) * (layer.units or 0) for layer in self.layers}
        total = sum(sizes.values())
        if total == 0:
            return 20 * len(self.trainable_layers) <= self.depth
        return 20 * sum(sizes[layer.name] for layer in self.trainable_layers) <= total

    @property
    def init_far_off(self) -> bool:
        """The initialisation's scale, compounded over the layers, is off by more than ``COMPOUNDED_OFF`` either way."""
        compounded, _, _ = self.init_mismatch()
        return not 1 / COMPOUNDED_OFF < compounded < COMPOUNDED_OFF

    def layer(self, name: str) -> LayerFacts | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFacts:
        """Inverse of ``to_dict``; fields this version does not know (from a newer writer) are ignored."""
        layer_fields, own_fields = _field_names(LayerFacts), _field_names(cls) - {"layers"}
        layers = tuple(LayerFacts(**{k: v for k, v in layer.items() if k in layer_fields}) for layer in data.get("layers", ()))
        rest: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in own_fields}
        return cls(layers=layers, **rest)


def _field_names(kind: type) -> set[str]:
    return {f.name for f in fields(kind)}


__all__ = ["GATED_RECURRENT", "HE_GAIN", "MATCHED_GAIN", "QUASI_NEWTON", "RECURRENT", "RELU_FAMILY", "SATURATING", "LayerFacts", "ModelFacts"]

"""Architecture facts of a ``torch.nn.Module`` and its optimizer, for ranking remedies."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from gradwatch.facts import RECURRENT, RELU_FAMILY, SATURATING, LayerFacts, ModelFacts

from ._torch import torch

ACTIVATIONS = RELU_FAMILY | SATURATING | {"Softplus", "Softmax", "LogSoftmax"}
# The loss function behind a loss tensor, from the autograd node that made it (no sync). nll_loss fed by a
# log_softmax is cross-entropy; ``loss_facts`` tells them apart.
LOSS_NODES = {
    "NllLossBackward0": "nll_loss",
    "NllLoss2DBackward0": "nll_loss",
    "MseLossBackward0": "mse_loss",
    "L1LossBackward0": "l1_loss",
    "SmoothL1LossBackward0": "smooth_l1_loss",
    "HuberLossBackward0": "huber_loss",
    "BinaryCrossEntropyBackward0": "binary_crossentropy",
    "BinaryCrossEntropyWithLogitsBackward0": "binary_cross_entropy_with_logits",
}
ELEMENTWISE_LOSSES = frozenset(LOSS_NODES.values()) - {"nll_loss"}
REDUCTIONS = ("none", "mean", "sum")  # a loss node's saved reduction, by index
# what the prediction went through just before the loss, by autograd node; shape-only nodes are looked through
ACTIVATION_NODES = {
    "SoftmaxBackward0": "Softmax",
    "LogSoftmaxBackward0": "LogSoftmax",
    "SigmoidBackward0": "Sigmoid",
    "ReluBackward0": "ReLU",
    "ThresholdBackward0": "ReLU",
    "AddmmBackward0": "linear",
    "MmBackward0": "linear",
    "ConvolutionBackward0": "linear",
}
SHAPE_NODES = frozenset(
    {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "SqueezeBackward0", "SqueezeBackward1", "UnsqueezeBackward0"}
    | {"PermuteBackward0", "TransposeBackward0", "CloneBackward0", "ToCopyBackward0", "SelectBackward0", "SliceBackward0", "ExpandBackward0"}
)
REDUCING_NODES = frozenset({"MeanBackward0", "MeanBackward1", "SumBackward0", "SumBackward1", "MulBackward0", "DivBackward0", "AddBackward0"})
RESIDUAL_NAME = re.compile(r"residual|resblock|basicblock|bottleneck|skip|attention|transformer", re.IGNORECASE)  # attention: in a block
_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def module_path(name: str) -> str:
    """A module's name as Python reaches it: ``encoder.0.fc`` is ``encoder[0].fc``, a top-level ``0`` is ``model[0]``."""
    name = _INDEX.sub(r"[\1]", name)
    return re.sub(r"^(\d+)", r"model[\1]", name)


def named_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``model.named_modules()`` under the names users read (``module_path``); the model itself is ``""``."""
    return [(module_path(name), module) for name, module in model.named_modules()]


def module_kind(module: torch.nn.Module) -> str:
    """The module's class name; for a module FSDP2's ``fully_shard`` re-classed (``FSDPLinear``), the original one."""
    cls = type(module)
    if cls.__name__.startswith("FSDP") and any(base.__name__ == "FSDPModule" for base in cls.__mro__):
        return next(base.__name__ for base in cls.__mro__[1:] if base.__name__ != "FSDPModule" and not base.__name__.startswith("FSDP"))
    return cls.__name__


def activation_kind(module: torch.nn.Module) -> str | None:
    """The activation a module applies, by class name; Hugging Face's ``NewGELUActivation`` and kin count as GELU/SiLU."""
    kind = module_kind(module)
    if kind in ACTIVATIONS:
        return kind
    if not kind.endswith("Activation") and not kind.startswith("GELU"):
        return None
    for family in ("GELU", "SiLU"):
        if family.lower() in kind.lower():
            return family
    stem = kind.removesuffix("Activation")
    return stem if stem in ACTIVATIONS else None


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (an FSDP2 shard); any other tensor as it is."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None and _is_dtensor(tensor) else tensor


def is_lazy(tensor: torch.Tensor) -> bool:
    """A parameter of a lazy module (``nn.LazyLinear``) before its first forward: it has no shape yet."""
    return isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin)  # type: ignore[attr-defined]  # public, not in the stubs


def shard_count(tensor: torch.Tensor) -> int:
    """Into how many distinct pieces a DTensor is split over its mesh (FSDP2: the world size; HSDP: the shard group); 1 otherwise."""
    if not _is_dtensor(tensor):
        return 1
    mesh, count = tensor.device_mesh, 1  # type: ignore[attr-defined]
    for dim, placement in enumerate(tensor.placements):  # type: ignore[attr-defined]
        if placement.is_shard():
            count *= mesh.size(dim)
    return count


def _is_dtensor(tensor: object) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.4, or no distributed support
        return False
    return isinstance(tensor, DTensor)


def parameterised_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules that own parameters directly, in registration (usually forward) order."""
    return [
        (name or type(model).__name__, module) for name, module in named_modules(model) if next(module.parameters(recurse=False), None) is not None
    ]


def activation_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(name, m) for name, m in named_modules(model) if module_kind(m) in ACTIVATIONS]


def model_facts(model: torch.nn.Module, trainable: Iterable[str] | None = None, optimizer: torch.optim.Optimizer | None = None) -> ModelFacts:
    """Read what remedies need to know: activations per layer, norms, recurrence, residuals, optimizer."""
    trainable_names = set(trainable) if trainable is not None else None
    layers: list[LayerFacts] = []
    pending: list[int] = []  # layers still waiting for the activation that follows them
    normalization: list[str] = []
    recurrent: list[str] = []
    residual = None
    custom_containers = False
    for name, module in named_modules(model):
        kind = module_kind(module)
        if RESIDUAL_NAME.search(kind):
            residual = True
        applied = activation_kind(module)
        if applied is not None:
            for index in pending:
                layers[index] = replace(layers[index], activation=applied, activation_module=name)
            pending = []
            continue
        if "Norm" in kind:
            normalization.append(name)
        if kind in RECURRENT:
            recurrent.append(kind)
        elif (
            next(module.children(), None) is not None
            and not isinstance(module, (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict))
            and module is not model
        ):
            custom_containers = True
        if next(module.parameters(recurse=False), None) is None:
            continue
        layer_name = name or kind
        activation = _rnn_activation(module) if kind in RECURRENT else None
        layers.append(
            LayerFacts(
                name=layer_name,
                kind=kind,
                trainable=layer_name in trainable_names if trainable_names is not None else _requires_grad(module),
                activation=activation,
                init_gain=_init_gain(module),
                fan_in=_fan_in(module),
                units=_units(module),
            )
        )
        if "Norm" in kind:
            pending.append(len(layers) - 1)
        else:
            pending = [len(layers) - 1] if activation is None else []
    if residual is None and not custom_containers and type(model).forward is torch.nn.Sequential.forward:
        residual = False  # a plain Sequential cannot add a skip path
    group = optimizer.param_groups[0] if optimizer is not None and optimizer.param_groups else {}
    sizes: Counter[str] = Counter()
    for p in model.parameters():
        if p.requires_grad and not is_lazy(p) and p.is_floating_point():
            sizes[str(p.dtype).removeprefix("torch.")] += p.numel()
    return ModelFacts(
        dtype=sizes.most_common(1)[0][0] if sizes else None,
        layers=tuple(layers),
        normalization=tuple(normalization),
        residual=residual,
        recurrent=tuple(recurrent),
        optimizer=type(optimizer).__name__ if optimizer is not None else None,
        lr=_float(group.get("lr")),
        weight_decay=_float(group.get("weight_decay")),
    )


def _requires_grad(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _rnn_activation(module: torch.nn.Module) -> str:
    return "ReLU" if getattr(module, "nonlinearity", "tanh") == "relu" else "Tanh"


def _weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The layer's weight matrix (this rank's rows of a sharded one)."""
    weight = getattr(module, "weight", None)
    if weight is None:
        weight = getattr(module, "weight_hh_l0", None)
    if not isinstance(weight, torch.Tensor) or is_lazy(weight) or weight.dim() < 2:
        return None
    weight = local(weight)
    return weight if weight.numel() > 0 else None


def _fan_in(module: torch.nn.Module) -> int | None:
    weight = _weight(module)
    return math.prod(weight.shape[1:]) if weight is not None else None


def _units(module: torch.nn.Module) -> int | None:
    weight = _weight(module)
    return int(weight.shape[0]) if weight is not None and "Transpose" not in type(module).__name__ else None


def loss_facts(loss: torch.Tensor) -> dict[str, Any]:
    """What the loss's autograd graph shows, as ``ModelFacts`` fields: the loss function, its reduction, the activation
    applied to the prediction just before it, and a prediction broadcast against the targets. Reads node types and
    saved sizes only (they outlive backward), never a tensor: no sync, at any point of the step."""
    node, outer = _loss_node(loss.grad_fn)
    if node is None:
        return {}
    kind = LOSS_NODES[type(node).__name__]
    reduction = REDUCTIONS[node._saved_reduction] if getattr(node, "_saved_reduction", None) in (0, 1, 2) else None
    if reduction == "none" and outer is not None:
        reduction = "sum" if outer.startswith("Sum") else "mean" if outer.startswith("Mean") else None
    facts: dict[str, Any] = {"loss_reduction": reduction}
    prediction = _input(node)
    if kind == "nll_loss" and type(prediction).__name__ == "LogSoftmaxBackward0":
        kind, prediction = "cross_entropy", _input(prediction)
    if kind in ELEMENTWISE_LOSSES and type(prediction).__name__ == "ExpandBackward0":
        facts["loss_broadcast"] = f"predictions of shape {list(prediction._saved_self_sym_sizes)} against targets of another shape"
    while type(prediction).__name__ in SHAPE_NODES:
        prediction = _input(prediction)
    facts.update(loss=kind, loss_input=ACTIVATION_NODES.get(type(prediction).__name__, "other"))
    return facts


def _loss_node(root: Any) -> tuple[Any, str | None]:
    """The loss function's node under at most three reducing nodes (a mean of a per-row loss, a loss plus a penalty),
    and the first reducing node on the way."""
    frontier, outer = [root], None
    for _ in range(4):
        found = next((node for node in frontier if type(node).__name__ in LOSS_NODES), None)
        if found is not None:
            return found, outer
        reducing = [node for node in frontier if type(node).__name__ in REDUCING_NODES]
        outer = outer or next((type(node).__name__ for node in reducing), None)
        frontier = [child for node in reducing for child, _ in node.next_functions if child is not None]
    return None, None


def _input(node: Any) -> Any:
    """The node that produced a node's first input (the prediction, for a loss)."""
    return node.next_functions[0][0] if node.next_functions else None


def _init_gain(module: torch.nn.Module) -> float | None:
    """``std(W)·sqrt(fan_in)``: 0.58 for PyTorch's default Linear init, 1.41 for He."""
    weight = _weight(module)
    if weight is None or not weight.dtype.is_floating_point:
        return None
    with torch.no_grad():
        std = float(weight.detach().float().std()) if weight.numel() > 1 else 0.0
    return std * math.sqrt(weight[0].numel()) if math.isfinite(std) else None


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None

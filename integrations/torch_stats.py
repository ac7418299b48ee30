"""Per-layer statistics of a ``torch.nn.Module``, measured on the device.

Nothing here touches the host on unsampled steps: gradients and weights are
reduced with grouped ``torch._foreach_*`` kernels on sampled steps only, and
everything a sample needs leaves the device in a single transfer in ``flush``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from gradwatch.safety import FaultGuard
from gradwatch.stats import ActivationStats, LayerStats, SequenceStats, StepStats

from ._torch import torch
from .torch_facts import activation_modules, parameterised_modules

DEAD_KINDS = ("ReLU", "ReLU6")
RECURRENT_TYPES = (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)
SATURATION_KINDS = ("Sigmoid", "Tanh")
ROW_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d")
# Parameters above LARGE_PARAM elements have their update measured on a fixed random sample of
# max(numel/UPDATE_SUBSAMPLE, MIN_SUBSET) elements (an unbiased estimate of |ΔW|², about 1% error
# on |ΔW|), so a sampled step's snapshot costs a fraction of the model instead of a full copy.
LARGE_PARAM, UPDATE_SUBSAMPLE, MIN_SUBSET = 1 << 16, 64, 1 << 14


@dataclass
class _Sample:
    """Device tensors gathered for one sampled step, waiting for ``flush``."""

    grad_layers: list[int] = field(default_factory=list)
    grad_norms: Any = None
    row_layers: list[int] = field(default_factory=list)
    row_norms: list[Any] = field(default_factory=list)  # per output unit (row) of each Linear/Conv weight gradient
    before: list[Any] | None = None
    weight_norms: Any = None
    update_norms: Any = None
    activations: dict[str, tuple[str, str, Any]] = field(default_factory=dict)  # name -> (kind, "dead", unit maxima) or (kind, "saturated", share)
    sequences: dict[str, Any] = field(default_factory=dict)  # recurrent layer -> per-time-step input-gradient norms


class TorchCollector:
    """Reads gradient, weight, update and activation statistics of one model.

    ``trainable`` restricts the layers to parameters an optimizer updates
    (frozen or un-optimised parameters are never evidence). Call
    ``capture_gradients`` after backward and before the optimizer step,
    ``capture_updates`` right after it, and ``flush`` to get a ``StepStats``.
    """

    def __init__(self, model: torch.nn.Module, *, guard: FaultGuard | None = None) -> None:
        self.guard = guard or FaultGuard()
        self.model = model
        self.sampling = True
        self._handles: list[Any] = []
        self._sample = _Sample()
        self._loss_tensor: torch.Tensor | None = None
        self._loss_float = 0.0
        self._loss_count = 0
        self.set_trainable(None)

    def set_trainable(self, params: Collection[torch.nn.Parameter] | None) -> None:
        """Watch only ``params`` (by identity) among the model's parameters; ``None``: all with requires_grad."""
        ids = {id(p) for p in params} if params is not None else None
        self.layer_names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        owners: list[int] = []
        self.row_params: dict[int, int] = {}  # parameter index -> layer index, for Linear/Conv weights
        seen: set[int] = set()  # a tied parameter (an LM head sharing the embedding) belongs to its first owner
        for name, module in parameterised_modules(self.model):
            own = [p for p in module.parameters(recurse=False) if p.requires_grad and (ids is None or id(p) in ids)]
            own = [p for p in own if p.numel() > 0 and p.dtype.is_floating_point and id(p) not in seen]
            seen.update(id(p) for p in own)
            if not own:
                continue
            index = len(self.layer_names)
            self.layer_names.append(name)
            weight = getattr(module, "weight", None)
            if type(module).__name__ in ROW_KINDS and weight is not None and weight.dim() >= 2:
                self.row_params.update({len(self.params) + k: index for k, p in enumerate(own) if p is weight})
            self.params.extend(own)
            owners.extend([index] * len(own))
        device = self.params[0].device if self.params else torch.device("cpu")
        generator = torch.Generator().manual_seed(0)
        self._update_index = [
            torch.randint(p.numel(), (max(p.numel() // UPDATE_SUBSAMPLE, MIN_SUBSET),), generator=generator).to(p.device)
            if p.numel() > LARGE_PARAM
            else None
            for p in self.params
        ]
        self._owner_list = owners
        self._owner_orders: dict[tuple[int, ...], torch.Tensor] = {}
        self._owners = torch.tensor(owners, dtype=torch.long, device=device)

    def attach(self) -> None:
        """Install forward hooks on ReLU, Sigmoid and Tanh modules (idempotent)."""
        if self._handles:
            return
        conv_before: dict[str, bool] = {}
        last_conv = False
        for name, module in self.model.named_modules():
            kind = type(module).__name__
            if next(module.parameters(recurse=False), None) is not None:
                last_conv = kind.startswith("Conv")
            conv_before[name] = last_conv
        for name, module in activation_modules(self.model):
            kind = type(module).__name__
            if kind in DEAD_KINDS or kind in SATURATION_KINDS:
                hook = self._activation_hook(name, kind, 1 if conv_before[name] else -1)
                self._handles.append(module.register_forward_hook(hook))
        for name, module in self.model.named_modules():
            if isinstance(module, RECURRENT_TYPES):
                self._handles.append(module.register_forward_pre_hook(self._sequence_hook(name, module.batch_first)))

    def detach(self) -> None:
        """Remove every hook this collector installed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _activation_hook(self, name: str, kind: str, unit_dim: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self.sampling and name not in self._sample.activations and module.training and torch.is_grad_enabled():
                self.guard.run("activation hook", self._record_activation, name, kind, unit_dim, output)

        return hook

    def _sequence_hook(self, name: str, batch_first: bool) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if self.sampling and name not in self._sample.sequences and module.training and torch.is_grad_enabled():
                return self.guard.run("recurrent hook", self._watch_sequence, name, batch_first, args)
            return None

        return hook

    def _watch_sequence(self, name: str, batch_first: bool, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Have backward report the gradient reaching each time step of the layer's input.

        An input that needs no gradient (raw data) is swapped for a detached copy
        that does; nothing below it needed a gradient, so training is unchanged.
        """
        inputs = args[0] if args else None
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.dim() < 2:
            return None
        time_dim = 1 if batch_first and inputs.dim() == 3 else 0
        replaced = None
        if not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
            replaced = (inputs, *args[1:])
        other = [d for d in range(inputs.dim()) if d != time_dim]
        sequences = self._sample.sequences
        sequences[name] = None  # armed once per sampled step

        def record(grad: torch.Tensor) -> None:
            sequences[name] = grad.detach().float().square().sum(other).sqrt()

        inputs.register_hook(lambda grad: self.guard.run("recurrent hook", record, grad))
        return replaced

    def _record_activation(self, name: str, kind: str, unit_dim: int, output: Any) -> None:
        """One small reduction per module here; the shares are finished for all modules at once in ``flush``."""
        if not isinstance(output, torch.Tensor) or output.numel() == 0 or not output.is_floating_point():
            return
        output = output.detach()
        if kind in DEAD_KINDS:
            units = output.movedim(unit_dim, -1).reshape(-1, output.shape[unit_dim]) if output.dim() > 1 else output[None]
            self._sample.activations[name] = (kind, "dead", units.amax(0))
        else:
            tail = (output < 0.01) | (output > 0.99) if kind == "Sigmoid" else output.abs() > 0.99
            self._sample.activations[name] = (kind, "saturated", tail.float().mean())

    @torch.no_grad()
    def capture_gradients(self, *, scale: float | None = None) -> None:
        """Gradient norms per layer and zero-gradient rows; snapshot weights for the update size.

        ``scale``: divide gradients by it (a loss scale an AMP scaler left in place).
        """
        sample = self._sample
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None and not p.grad.is_sparse]
        rowed = [i for i in with_grad if i in self.row_params]
        others = [i for i in with_grad if i not in self.row_params]
        # One read of a Linear/Conv weight's gradient gives both its norm and its all-zero rows (dead units).
        row_norms = [torch.linalg.vector_norm(self.params[i].grad.flatten(1), dim=1, dtype=torch.float32) for i in rowed]
        sample.row_layers = [self.row_params[i] for i in rowed]
        sample.row_norms = row_norms
        if with_grad:
            other_grads = [self.params[i].grad for i in others]
            norms = [*(torch._foreach_norm(other_grads, 2, dtype=torch.float32) if others else ()), *(torch._foreach_norm(row_norms, 2) if rowed else ())]
            owners = [self._owner_list[i] for i in others + rowed]
            per_layer = self._per_layer(norms, owners)
            sample.grad_norms = per_layer / scale if scale else per_layer
            sample.grad_layers = sorted(set(owners))
        sample.before = self._watched_elements() if self.params else None

    @torch.no_grad()
    def capture_updates(self) -> None:
        """Weight norms after the optimizer step and the size of the step ``|ΔW|``."""
        sample = self._sample
        if not self.params:
            return
        sample.weight_norms = self._per_layer(torch._foreach_norm(self.params, 2, dtype=torch.float32))
        if sample.before is not None:
            torch._foreach_sub_(sample.before, self._watched_elements(copy=False))  # the snapshot becomes -ΔW
            norms = torch._foreach_norm(sample.before, 2, dtype=torch.float32)
            scale = [(p.numel() / len(i)) ** 0.5 if i is not None else 1.0 for p, i in zip(self.params, self._update_index)]
            sample.update_norms = self._per_layer(torch._foreach_mul(norms, scale))
            sample.before = None

    def _watched_elements(self, *, copy: bool = True) -> list[torch.Tensor]:
        """The parameters (copies, or views where ``copy`` is false); a fixed random subset of the elements for large ones."""
        return [
            (p.detach().clone() if copy else p.detach()) if index is None else p.detach().reshape(-1)[index]
            for p, index in zip(self.params, self._update_index)
        ]

    def add_loss(self, loss: torch.Tensor | float) -> None:
        """Accumulate the step's loss without a host sync (a tensor stays on its device)."""
        if isinstance(loss, torch.Tensor):
            value = loss.detach().float()
            value = value.mean() if value.dim() else value  # the usual 0-d loss costs one addition per step
            self._loss_tensor = value if self._loss_tensor is None else self._loss_tensor + value
        else:
            self._loss_float += float(loss)
        self._loss_count += 1

    def discard(self) -> None:
        """Drop the pending sample (its optimizer step was skipped); losses are kept."""
        self._sample = _Sample()

    def flush(
        self, step: int, lr: float | None = None, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> StepStats:
        """Bring the pending sample to the host in one transfer and reset it.

        ``reduce`` combines the packed statistics across processes (e.g. an
        all-reduce mean under DDP) before the transfer; every rank must call it.
        """
        sample, self._sample = self._sample, _Sample()
        if sample.weight_norms is None and self.params:
            sample.weight_norms = self._per_layer(torch._foreach_norm(self.params, 2, dtype=torch.float32))
        n = len(self.layer_names)
        acts = sorted(sample.activations.items(), key=lambda item: item[1][1])  # "dead" first, then "saturated"
        dead = [maxima for _, (_, metric, maxima) in acts if metric == "dead"]
        saturated = [share for _, (_, metric, share) in acts if metric == "saturated"]
        sequences = [(name, profile) for name, profile in sample.sequences.items() if profile is not None]
        parts = [
            sample.grad_norms,
            sample.weight_norms,
            sample.update_norms,
            _share_not_positive(sample.row_norms) if sample.row_norms else None,
            _share_not_positive(dead) if dead else None,
            torch.stack(saturated) if saturated else None,
            self._loss_tensor.reshape(1) if self._loss_tensor is not None else None,
            torch.cat([profile for _, profile in sequences]) if sequences else None,
        ]
        present = [p for p in parts if p is not None]
        device = present[0].device if present else torch.device("cpu")
        packed = torch.cat([p.float().reshape(-1).to(device) for p in present]) if present else torch.zeros(0)
        values = (reduce(packed) if reduce is not None else packed).tolist()
        cursor = iter(values)
        grad = _take(cursor, n) if parts[0] is not None else [None] * n
        weight = _take(cursor, n) if parts[1] is not None else [None] * n
        update = _take(cursor, n) if parts[2] is not None else [None] * n
        rows = dict(zip(sample.row_layers, _take(cursor, len(sample.row_layers))))
        act_values = _take(cursor, len(acts))
        loss_sum = self._loss_float + (next(cursor) if parts[6] is not None else 0.0)
        profiles = tuple(SequenceStats(name, tuple(_take(cursor, profile.shape[0]))) for name, profile in sequences)
        loss = loss_sum / self._loss_count if self._loss_count else None
        self._loss_tensor, self._loss_float, self._loss_count = None, 0.0, 0
        has_grad = set(sample.grad_layers)
        layers = tuple(
            LayerStats(
                name,
                grad_norm=grad[i] if i in has_grad else None,
                weight_norm=weight[i],
                update_norm=update[i],
                zero_grad_rows=rows.get(i),
            )
            for i, name in enumerate(self.layer_names)
        )
        activations = tuple(
            ActivationStats(name, kind, **{f"{metric}_share": value})
            for (name, (kind, metric, _)), value in zip(acts, act_values)
        )
        return StepStats(step=step, layers=layers, activations=activations, loss=loss, lr=lr, sequences=profiles)

    def _per_layer(self, norms: list[torch.Tensor], owners: list[int] | None = None) -> torch.Tensor:
        """Combine per-parameter norms into per-layer norms (sqrt of summed squares), on the device."""
        squares = torch.stack(norms).square()
        if owners is None:
            index = self._owners
        else:  # built once per distinct order: no host-to-device copy on later sampled steps
            key = tuple(owners)
            index = self._owner_orders.get(key)
            if index is None:
                index = self._owner_orders[key] = torch.tensor(owners, dtype=torch.long, device=squares.device)
        out = torch.zeros(len(self.layer_names), device=squares.device)
        return out.index_add_(0, index, squares).sqrt()


def _share_not_positive(maxima: list[torch.Tensor]) -> torch.Tensor:
    """For each vector, the share of entries not above zero (a unit never active, a gradient row all zero).

    One grouped computation for all layers instead of a few kernels per layer.
    """
    device = maxima[0].device
    counts = [m.numel() for m in maxima]
    sizes = torch.tensor(counts, device=device)
    segments = torch.repeat_interleave(torch.arange(len(maxima), device=device), sizes, output_size=sum(counts))  # no host sync
    alive = torch.zeros(len(maxima), device=device).index_add_(0, segments, (torch.cat(maxima) > 0).float())
    return 1.0 - alive / sizes


def _take(cursor: Any, count: int) -> list[float]:
    return [next(cursor) for _ in range(count)]

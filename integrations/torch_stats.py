"""Per-layer statistics of a ``torch.nn.Module``, measured on the device.

Nothing here touches the host on unsampled steps: gradients and weights are
reduced with grouped ``torch._foreach_*`` kernels on sampled steps only, and
everything a sample needs leaves the device in a single transfer in ``flush``.

Sharded parameters (FSDP2's DTensors) are measured on each rank's local
shard: a layer's squared norms are summed over ranks, never gathered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradwatch.safety import FaultGuard
from gradwatch.stats import ActivationStats, LayerStats, SequenceStats, StepStats

from ._torch import torch
from .torch_facts import (
    activation_modules,
    local,
    module_kind,
    parameterised_modules,
    shard_count,
)

DEAD_KINDS = ("ReLU", "ReLU6")
RECURRENT_TYPES = (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)
SATURATION_KINDS = ("Sigmoid", "Tanh")
ROW_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d")
# Parameters above LARGE_PARAM elements have their update measured on a fixed random sample of
# max(numel/UPDATE_SUBSAMPLE, MIN_SUBSET) elements (an unbiased estimate of |ΔW|², about 1% error
# on |ΔW|), so a sampled step's snapshot costs a fraction of the model instead of a full copy.
LARGE_PARAM, UPDATE_SUBSAMPLE, MIN_SUBSET = 1 << 16, 64, 1 << 14
# A unit is dead only if it never fires over sampled batches of at least this many rows in all:
# one small batch leaves many units of a naturally sparse layer silent by chance.
MIN_DEAD_ROWS = 256


@dataclass
class _Sample:
    """Device tensors gathered for one sampled step, waiting for ``flush``."""

    grad_layers: list[int] = field(default_factory=list)
    grad_norms: Any = None  # per layer: summed squared norms (see ``TorchCollector.pack``)
    before: list[Any] | None = None
    weight_norms: Any = None  # squared, before the optimizer step: the scale a step is judged against
    update_norms: Any = None
    activations: dict[str, tuple[str, Any, int]] = field(default_factory=dict)  # name -> (kind, saturated share or unit maxima, rows)
    sequences: dict[str, Any] = field(default_factory=dict)  # recurrent layer -> per-time-step input-gradient norms
    raw_grad_sq: Any = None  # squared total gradient norm as backward produced it (before any clipping)
    backward_passes: int = 0
    inputs: Any = None  # mean |x| and std of the first layer's input
    batch_rows: int = 0  # rows of the first layer's input (for the dead-unit windows)


class TorchCollector:
    """Reads gradient, weight, update and activation statistics of one model.

    ``trainable`` restricts the layers to parameters an optimizer updates
    (frozen or un-optimised parameters are never evidence). Call
    ``capture_gradients`` after backward and before the optimizer step,
    ``capture_updates`` right after it, and ``flush`` to get a ``StepStats``.
    Dead units are judged over windows of sampled batches growing to
    ``MIN_DEAD_ROWS`` rows: per-unit maxima stay on the device until then.
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
        self._dead_window: dict[str, tuple[str, Any, int]] = {}  # activation -> (kind, unit maxima, rows)
        self._row_window: dict[int, tuple[Any, int]] = {}  # Linear/Conv weight -> (gradient row norm maxima, rows)
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
            if module_kind(module) in ROW_KINDS and weight is not None and weight.dim() >= 2:
                self.row_params.update({len(self.params) + k: index for k, p in enumerate(own) if p is weight})
            self.params.extend(own)
            owners.extend([index] * len(own))
        generator = torch.Generator().manual_seed(0)
        self.shards = [shard_count(p) for p in self.params]  # how many ranks hold distinct pieces of each
        shards = [local(p) for p in self.params]
        self._update_index = [
            torch.randint(t.numel(), (max(t.numel() // UPDATE_SUBSAMPLE, MIN_SUBSET),), generator=generator).to(t.device)
            if t.numel() > LARGE_PARAM
            else None
            for t in shards
        ]
        self._owner_list = owners
        self._row_window = {}  # keyed by parameter index: starts afresh with the parameters
        self._indices: dict[tuple[int, ...] | None, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def attach(self) -> None:
        """Install forward hooks on ReLU, Sigmoid and Tanh modules (idempotent)."""
        if self._handles:
            return
        conv_before: dict[str, bool] = {}
        last_conv = False
        for name, module in self.model.named_modules():
            kind = module_kind(module)
            if next(module.parameters(recurse=False), None) is not None:
                last_conv = kind.startswith("Conv")
            conv_before[name] = last_conv
        for name, module in activation_modules(self.model):
            kind = module_kind(module)
            if kind in DEAD_KINDS or kind in SATURATION_KINDS:
                hook = self._activation_hook(name, kind, 1 if conv_before[name] else -1)
                self._handles.append(module.register_forward_hook(hook))
        for name, module in self.model.named_modules():
            if isinstance(module, RECURRENT_TYPES):
                self._handles.append(module.register_forward_pre_hook(self._sequence_hook(name, module.batch_first)))
        first = next(iter(parameterised_modules(self.model)), None)
        if first is not None:
            self._handles.append(first[1].register_forward_pre_hook(self._input_hook))

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

    def _input_hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self.sampling and self._sample.inputs is None and module.training and torch.is_grad_enabled():
            self.guard.run("input hook", self._record_inputs, args)

    def _record_inputs(self, args: tuple[Any, ...]) -> None:
        """Rows and scale of the model's first layer input: unscaled features are a cause of their own."""
        x = local(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        if x is None or x.dim() == 0:
            return
        self._sample.batch_rows = int(x.shape[0])
        if x.is_floating_point() and x.numel() > 1:
            x = x.detach().float()
            self._sample.inputs = torch.stack([x.abs().mean(), x.std()])

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
        if kind in DEAD_KINDS:  # the windows are kept in ``pack``: the hook may run inside a compiled graph
            units = output.movedim(unit_dim, -1).reshape(-1, output.shape[unit_dim]) if output.dim() > 1 else output[None]
            self._sample.activations[name] = (kind, units.amax(0), units.shape[0])
        else:
            tail = (output < 0.01) | (output > 0.99) if kind == "Sigmoid" else output.abs() > 0.99
            self._sample.activations[name] = (kind, tail.float().mean(), 0)

    @torch.no_grad()
    def capture_gradients(self, *, scale: float | None = None, weights: bool = True) -> None:
        """Gradient norms per layer and zero-gradient rows; weight norms and a snapshot before the step.

        ``scale``: divide gradients by it (a loss scale an AMP scaler left in place).
        ``weights``: also take the weight norms and the snapshot for the update.
        """
        sample = self._sample
        grads = {i: local(p.grad) for i, p in enumerate(self.params) if p.grad is not None and not p.grad.is_sparse}
        with_grad = list(grads)
        rowed = [i for i in with_grad if i in self.row_params]
        others = [i for i in with_grad if i not in self.row_params]
        # One read of a Linear/Conv weight's gradient gives both its norm and its all-zero rows (dead units).
        row_norms = [torch.linalg.vector_norm(grads[i].flatten(1), dim=1, dtype=torch.float32) for i in rowed]
        for i, norms in zip(rowed, row_norms):
            maxima, rows = self._row_window.get(i, (None, 0))
            self._row_window[i] = (norms if maxima is None else torch.maximum(maxima, norms), rows + max(sample.batch_rows, 1))
        if with_grad:
            other_grads = [grads[i] for i in others]
            norms = [*(torch._foreach_norm(other_grads, 2, dtype=torch.float32) if others else ()), *(torch._foreach_norm(row_norms, 2) if rowed else ())]
            squares = self._per_layer(norms, others + rowed)
            sample.grad_norms = squares / scale**2 if scale else squares
            sample.grad_layers = sorted({self._owner_list[i] for i in with_grad})
        if self.params and weights:
            sample.weight_norms = self._weight_squares()
            sample.before = self._watched_elements()

    @torch.no_grad()
    def capture_backward_total(self) -> None:
        """The squared total gradient norm right after backward, before any clipping the user applies."""
        present = [local(p.grad) for p in self.params if p.grad is not None and not p.grad.is_sparse]
        if present:
            self._sample.raw_grad_sq = torch.stack(torch._foreach_norm(present, 2, dtype=torch.float32)).square().sum()
        self.note_backward_pass()

    def note_backward_pass(self) -> None:
        """Count a backward pass of the sampled step (the pre-clip total holds for exactly one)."""
        self._sample.backward_passes += 1

    @property
    def has_gradients(self) -> bool:
        """Whether the pending sample holds gradient norms."""
        return bool(self._sample.grad_layers)

    @torch.no_grad()
    def capture_updates(self) -> None:
        """The size of the optimizer step ``|ΔW|``, from the snapshot taken with the gradients."""
        sample = self._sample
        if sample.before is not None:
            torch._foreach_sub_(sample.before, self._watched_elements(copy=False))  # the snapshot becomes -ΔW
            norms = torch._foreach_norm(sample.before, 2, dtype=torch.float32)
            scale = [(local(p).numel() / len(i)) ** 0.5 if i is not None else 1.0 for p, i in zip(self.params, self._update_index)]
            sample.update_norms = self._per_layer(torch._foreach_mul(norms, scale))
            sample.before = None

    def _weight_squares(self) -> torch.Tensor:
        return self._per_layer(torch._foreach_norm([local(p) for p in self.params], 2, dtype=torch.float32))

    def _watched_elements(self, *, copy: bool = True) -> list[torch.Tensor]:
        """The parameters (copies, or views where ``copy`` is false); a fixed random subset of the elements for large ones."""
        tensors = [local(p.detach()) for p in self.params]
        return [
            (t.clone() if copy else t) if index is None else t.reshape(-1)[index]
            for t, index in zip(tensors, self._update_index)
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

        ``reduce`` combines the packed statistics across processes (an
        all-reduce mean, see ``torch_distributed.mean_across_ranks``) before the
        transfer; every rank must call it.
        """
        packed = self.pack()
        return self.unpack(packed, (reduce(packed.values) if reduce is not None else packed.values).tolist(), step, lr)

    def pack(self) -> Packed:
        """The pending sample as one device vector whose mean over ranks is the combined sample; resets it.

        Squared norms and row counts of a parameter sharded ``k`` ways are
        multiplied by ``k``, so the mean over ranks sums its pieces. Dead-unit
        windows are reported as they stand, and start afresh once full.
        """
        sample, self._sample = self._sample, _Sample()
        if sample.weight_norms is None and self.params:
            sample.weight_norms = self._weight_squares()
        saturated = [(name, kind, share) for name, (kind, share, _) in sample.activations.items() if kind not in DEAD_KINDS]
        for name, (kind, maxima, rows) in sample.activations.items():
            if kind in DEAD_KINDS:
                _, kept, seen = self._dead_window.get(name, (kind, None, 0))
                self._dead_window[name] = (kind, maxima if kept is None else torch.maximum(kept, maxima), seen + rows)
        dead = _windows(self._dead_window, lambda entry: entry[2])
        rows = _windows(self._row_window, lambda entry: entry[1])
        sequences = [(name, profile) for name, profile in sample.sequences.items() if profile is not None]
        parts: dict[str, Any] = {
            "grad": sample.grad_norms,
            "weight": sample.weight_norms,
            "update": sample.update_norms,
            "dead": _share_not_positive([maxima for _, maxima, _ in dead.values()]) if dead else None,
            "saturated": torch.stack([share for _, _, share in saturated]) if saturated else None,
            "sequences": torch.cat([profile for _, profile in sequences]) if sequences else None,
            "raw_grad_sq": sample.raw_grad_sq if sample.backward_passes == 1 else None,
            "inputs": sample.inputs,
        }
        if rows:
            not_positive, sizes = _count_not_positive([maxima for maxima, _ in rows.values()])
            factor = torch.tensor([float(self.shards[i]) for i in rows], device=sizes.device)
            parts["rows"] = torch.cat([not_positive * factor, sizes * factor])
        present = {name: part.float().reshape(-1) for name, part in parts.items() if part is not None}
        device = next(iter(present.values())).device if present else torch.device("cpu")
        loss = self._loss_tensor.reshape(1) + self._loss_float if self._loss_tensor is not None else torch.full((1,), self._loss_float)
        present["loss"] = torch.cat([loss.float().to(device), torch.full((1,), float(self._loss_count), device=device)])
        self._loss_tensor, self._loss_float, self._loss_count = None, 0.0, 0
        values = torch.cat([part.to(device) for part in present.values()])
        return Packed(
            values,
            sample,
            layout=[(name, part.numel()) for name, part in present.items()],
            dead=[(name, kind, seen) for name, (kind, _, seen) in dead.items()],
            rows=[(self.row_params[i], seen) for i, (_, seen) in rows.items()],
            saturated=[(name, kind) for name, kind, _ in saturated],
            sequences=[(name, int(profile.shape[0])) for name, profile in sequences],
        )

    def unpack(self, packed: Packed, values: list[float], step: int, lr: float | None = None) -> StepStats:
        """The ``StepStats`` of a packed sample from its (combined) values."""
        n = len(self.layer_names)
        parts, start = {}, 0
        for name, length in packed.layout:
            parts[name], start = values[start : start + length], start + length
        grad, weight, update = (_roots(parts[key]) if key in parts else [None] * n for key in ("grad", "weight", "update"))
        counts, k = parts.get("rows", []), len(packed.rows)
        zero_rows: dict[int, tuple[float, int]] = {}
        for j, (layer, seen) in enumerate(packed.rows):  # a layer's weight is its one row-judged parameter
            if counts[k + j] > 0:
                zero_rows[layer] = (counts[j] / counts[k + j], seen)
        loss_sum, loss_count = parts["loss"]
        raw = parts.get("raw_grad_sq")
        inputs = parts.get("inputs", [None, None])
        has_grad = set(packed.sample.grad_layers)
        layers = tuple(
            LayerStats(
                name,
                grad_norm=grad[i] if i in has_grad else None,
                weight_norm=weight[i],
                update_norm=update[i],
                zero_grad_rows=zero_rows[i][0] if i in zero_rows else None,
                zero_grad_window=zero_rows[i][1] if i in zero_rows else None,
            )
            for i, name in enumerate(self.layer_names)
        )
        activations = tuple(
            [ActivationStats(name, kind, dead_share=share, window=seen) for (name, kind, seen), share in zip(packed.dead, parts.get("dead", []))]
            + [ActivationStats(name, kind, saturated_share=share) for (name, kind), share in zip(packed.saturated, parts.get("saturated", []))]
        )
        profile_values = iter(parts.get("sequences", []))
        profiles = tuple(SequenceStats(name, tuple(_take(profile_values, length))) for name, length in packed.sequences)
        return StepStats(
            step=step,
            layers=layers,
            activations=activations,
            loss=loss_sum / loss_count if loss_count > 0 else None,
            lr=lr,
            sequences=profiles,
            grad_norm_unclipped=math.sqrt(raw[0]) if raw and math.isfinite(raw[0]) and raw[0] >= 0 else None,
            input_mean_abs=inputs[0],
            input_std=inputs[1],
        )

    def _per_layer(self, norms: Sequence[torch.Tensor], params: list[int] | None = None) -> torch.Tensor:
        """Per-layer sums of squared per-parameter norms, on the device.

        ``params``: which parameter each norm belongs to (default: all, in
        order). A parameter sharded ``k`` ways counts ``k`` times (see ``pack``).
        """
        squares = torch.stack(list(norms)).square()
        key = tuple(params) if params is not None else None
        cached = self._indices.get(key)
        if cached is None:  # built once per distinct order: no host-to-device copy on later sampled steps
            order = list(params) if params is not None else list(range(len(self.params)))
            index = torch.tensor([self._owner_list[i] for i in order], dtype=torch.long, device=squares.device)
            shards = [float(self.shards[i]) for i in order]
            factor = torch.tensor(shards, device=squares.device) if any(k != 1.0 for k in shards) else None
            cached = self._indices[key] = (index, factor)
        index, factor = cached
        if factor is not None:
            squares = squares * factor
        return torch.zeros(len(self.layer_names), device=squares.device).index_add_(0, index, squares)


@dataclass
class Packed:
    """A sample packed by ``TorchCollector.pack``: the values to combine and how to read them back.

    ``layout`` names each part of ``values`` and its length, in order; the other
    lists say what the dead-unit, zero-row, saturation and time-profile parts hold.
    """

    values: torch.Tensor
    sample: _Sample
    layout: list[tuple[str, int]]
    dead: list[tuple[str, str, int]]
    rows: list[tuple[int, int]]
    saturated: list[tuple[str, str]]
    sequences: list[tuple[str, int]]


def _roots(squares: list[float]) -> list[float]:
    """Layer norms from summed squares (a NaN or infinity stays what it is: evidence)."""
    return [math.sqrt(max(v, 0.0)) if math.isfinite(v) else v for v in squares]


def _count_not_positive(maxima: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each vector, how many entries are not above zero, and how many it has (on the device, no host sync).

    One grouped computation for all layers instead of a few kernels per layer.
    """
    device = maxima[0].device
    counts = [m.numel() for m in maxima]
    sizes = torch.tensor(counts, device=device, dtype=torch.float32)
    segments = torch.repeat_interleave(torch.arange(len(maxima), device=device), sizes.long(), output_size=sum(counts))
    alive = torch.zeros(len(maxima), device=device).index_add_(0, segments, (torch.cat(maxima) > 0).float())
    return sizes - alive, sizes


def _share_not_positive(maxima: list[torch.Tensor]) -> torch.Tensor:
    """For each vector, the share of entries not above zero (a unit never active, a gradient row all zero)."""
    not_positive, sizes = _count_not_positive(maxima)
    return not_positive / sizes


def _take(cursor: Any, count: int) -> list[float]:
    return [next(cursor) for _ in range(count)]


def _windows(windows: dict[Any, Any], rows: Callable[[Any], int]) -> dict[Any, Any]:
    """Every window as it stands; those that have seen ``MIN_DEAD_ROWS`` rows start afresh."""
    current = dict(windows)
    for key, entry in current.items():
        if rows(entry) >= MIN_DEAD_ROWS:
            del windows[key]
    return current

"""What only the forward pass of a sampled step shows, for the PyTorch collector.

Forward hooks on ReLU, sigmoid and tanh modules reduce their outputs (unit
maxima for dead units, small ones in groups of like shape, by the end of the
model's forward pass; the saturated share); hooks on the model itself read
the precursors of a loss spike (``torch_precursors``); a pre-hook on the first layer
reads the input's rows and scale; a pre-hook on each recurrent layer has
backward report the gradient reaching every time step of its input. Hooks do
nothing on unsampled steps. Dead units are judged over windows of sampled
batches growing to ``WINDOW_ROWS`` rows, kept on the device until then.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from gradwatch.blocks import CACHE_CHUNK, LARGE_PARAM
from gradwatch.detectors.dead_relu import WINDOW_ROWS
from gradwatch.facts import DEAD_KINDS, SATURATED_OUTSIDE
from gradwatch.safety import FaultGuard

from ._torch import ModelHook, StackBuffers, is_compiling, torch
from .torch_facts import activation_modules, local, module_kind, named_modules, parameterised_modules
from .torch_precursors import AttentionProbe, attention_names, log_partition, output_logits

RECURRENT_TYPES = (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)
ACTIVATION_HOOK = "activation hook"
PRECURSOR_HOOK = "precursor hook"
HELD_ELEMENTS = 1 << 22  # small ReLU outputs held at once for grouped reductions (16 MiB in float32)
KEPT = 64  # stacking buffers and unit orders kept at most (shapes that keep changing: the old ones are dropped)


_Held = tuple[str, str, int, Any, int]  # a small ReLU output held for ``_reduce``: name, kind, rows, output, its version then


_Entry = tuple[str, str, int, int]  # an activation's name, kind, units and rows


@dataclass
class Seen:
    """What the forward pass of the pending sampled step recorded (device tensors)."""

    activations: dict[str, tuple[str, Any, int]] = field(default_factory=dict)  # name -> (kind, saturated share or unit maxima, rows)
    held: dict[tuple[Any, ...], list[_Held]] = field(default_factory=dict)  # (shape, dtype, device, unit dim) -> outputs for ``_reduce``
    held_elements: int = 0
    reduced: list[tuple[list[_Entry], Any]] = field(default_factory=list)  # (activations, their unit maxima in one vector)
    sequences: dict[str, Any] = field(default_factory=dict)  # recurrent layer -> per-time-step input-gradient norms
    inputs: Any = None  # mean |x| and std of the first layer's input
    batch_rows: int = 0  # rows of the first layer's input (for the dead-unit windows)
    log_partition: Any = None  # mean logsumexp of the output logits (1 element)
    attention: list[tuple[Any, Any]] | None = None  # per attention call: per-head largest logit, mean entropy


@dataclass
class Forward:
    """The forward half of a sample, ready to pack: names and kinds, with their values as device vectors."""

    dead: list[tuple[str, str, int]]  # (name, kind, rows in its window) of each dead-unit share
    dead_shares: Any
    saturated: list[tuple[str, str]]
    saturated_shares: Any
    sequences: list[tuple[str, Any]]  # (recurrent layer, per-time-step norms)
    inputs: Any
    batch_rows: int
    log_partition: Any = None
    attention: list[tuple[str, int]] = field(default_factory=list)  # (attention, heads) of each call
    attention_maxima: Any = None  # per head of every call, in order
    attention_entropies: Any = None


class ForwardProbes:
    """The forward hooks of one model; ``sampling`` says whether the current step is measured."""

    def __init__(self, model: torch.nn.Module, guard: FaultGuard) -> None:
        self.model = model
        self.guard = guard
        self.sampling = True
        self.seen = Seen()
        self._handles: list[Any] = []
        self._dead_window: _Window | None = None  # per-unit maxima of the ReLU outputs
        self._buffers = StackBuffers(limit=KEPT)  # for the held outputs
        self._orders: dict[tuple[tuple[str, int], ...], tuple[list[int], Any]] = {}  # entries as reduced -> forward order
        self._direct: set[str] = set()  # modules whose output was once overwritten after the hook: reduced in it
        self._in_forward = False  # inside the model's own forward: what it holds is reduced when that ends
        self._attention = AttentionProbe()  # entered around a sampled training forward (see ``_precursors_done``)
        self._attention_names: list[str] = []  # the model's attention modules, to name the calls seen
        self._looks_for_attention = True
        self._reading_forward = False  # inside the sampled step's first training forward

    def measures(self, name: str) -> bool:
        """Whether this step measures the activation module ``name`` (as far as known now: an output held for
        later and overwritten before it is read is dropped then, see ``_reduce``)."""
        return name in self.seen.activations

    def discard(self) -> None:
        """Drop what the pending step recorded."""
        self._leave_attention()
        self.seen = Seen()

    def take(self) -> Forward:
        """The pending step's forward half, with the dead-unit windows grown by it; resets it."""
        self._leave_attention()
        seen, self.seen = self.seen, Seen()
        self._reduce_held(seen)
        saturated = [(name, kind, share) for name, (kind, share, _) in seen.activations.items() if kind not in DEAD_KINDS]
        entries, maxima = self._unit_maxima(seen)
        if entries:
            self._dead_window = _Window.extend(self._dead_window, entries, maxima)
        windows, shares = self._dead_window.take() if self._dead_window is not None else ([], None)
        return Forward(
            dead=windows,
            dead_shares=shares,
            saturated=[(name, kind) for name, kind, _ in saturated],
            saturated_shares=torch.stack([share for _, _, share in saturated]) if saturated else None,
            sequences=[(name, profile) for name, profile in seen.sequences.items() if profile is not None],
            inputs=seen.inputs,
            batch_rows=seen.batch_rows,
            log_partition=seen.log_partition,
            **self._attention_part(seen.attention or []),
        )

    def _attention_part(self, calls: list[tuple[Any, Any]]) -> dict[str, Any]:
        """The attention calls named (by the model's attention modules where one call each, else by order) and packed."""
        if not calls:
            return {}
        names = self._attention_names if len(self._attention_names) == len(calls) else [f"attention call {i}" for i in range(len(calls))]
        return {
            "attention": [(name, int(maxima.numel())) for name, (maxima, _) in zip(names, calls)],
            "attention_maxima": torch.cat([maxima for maxima, _ in calls]),
            "attention_entropies": torch.cat([entropies for _, entropies in calls]),
        }

    def _unit_maxima(self, seen: Seen) -> tuple[list[_Entry], Any]:
        """The ReLU-like activations measured, as (name, kind, units, rows) in forward order, and their unit maxima
        in one vector (those reduced in groups are put back in that order with one ``index_select``)."""
        entries, pieces = [], []
        for name, (kind, maxima, rows) in seen.activations.items():
            if kind in DEAD_KINDS and maxima is not None:
                entries.append((name, kind, maxima.numel(), rows))
                pieces.append(maxima)
        for reduced, maxima in seen.reduced:
            entries += reduced
            pieces.append(maxima)
        if not entries:
            return [], None
        vector = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        key = tuple((name, units) for name, _, units, _ in entries)
        plan = self._orders.get(key)
        if plan is None:  # built once per layout: where each entry goes, and where each unit's maximum comes from
            position = {name: i for i, name in enumerate(seen.activations)}
            index = sorted(range(len(entries)), key=lambda i: position[entries[i][0]])
            starts = list(itertools.accumulate((size for _, size in key), initial=0))
            in_order = index == list(range(len(index)))
            gather = None if in_order else torch.cat([torch.arange(starts[i], starts[i + 1]) for i in index]).to(vector.device)
            self._orders = self._orders if len(self._orders) < KEPT else {}
            plan = self._orders[key] = (index, gather)
        index, gather = plan
        return (entries, vector) if gather is None else ([entries[i] for i in index], vector.index_select(0, gather))

    @torch.no_grad()
    def _reduce(self, seen: Seen, key: tuple[Any, ...]) -> None:
        """Per-unit maxima of the outputs held under ``key`` (shape, dtype, device, unit dimension): one stacked copy
        into a buffer kept between samples and one ``amax`` (a small kernel per module costs microseconds on CPU).
        An output overwritten since its forward is left out (it is not evidence) and its module is reduced in the
        hook from then on."""
        group = seen.held.pop(key)
        shape, _, _, unit_dim = key
        seen.held_elements -= len(group) * math.prod(shape)
        held = []
        for name, kind, rows, output, version in group:
            if output._version == version:
                held.append((name, kind, rows, output))
            else:
                del seen.activations[name]
                self._direct.add(name)
        if not held:
            return
        stacked = self._buffers.stack([output for _, _, _, output in held])
        maxima = stacked.amax(_other_dims(len(shape) + 1, unit_dim + 1, keep_first=True))
        seen.reduced.append(([(name, kind, shape[unit_dim], rows) for name, kind, rows, _ in held], maxima.reshape(-1)))

    def attach(self) -> None:
        """Install forward hooks on ReLU, Sigmoid and Tanh modules, the first layer, recurrent layers and the
        model itself (idempotent)."""
        if self._handles:
            return
        conv_before: dict[str, bool] = {}
        last_conv = False
        for name, module in named_modules(self.model):
            kind = module_kind(module)
            if next(module.parameters(recurse=False), None) is not None:
                last_conv = kind.startswith("Conv")
            conv_before[name] = last_conv
        held_kinds = False
        for name, module in activation_modules(self.model):
            kind = module_kind(module)
            held_kinds |= kind in DEAD_KINDS
            if kind in DEAD_KINDS or kind in SATURATED_OUTSIDE:
                hook = self._activation_hook(name, kind, 1 if conv_before[name] else -1)
                self._handles.append(module.register_forward_hook(ModelHook(hook)))
        for name, module in named_modules(self.model):
            if isinstance(module, RECURRENT_TYPES):
                self._handles.append(module.register_forward_pre_hook(ModelHook(self._sequence_hook(name, module.batch_first))))
        first = next(iter(parameterised_modules(self.model)), None)
        if first is not None:
            self._handles.append(first[1].register_forward_pre_hook(ModelHook(self._input_hook)))
        if held_kinds:
            self._handles.append(self.model.register_forward_pre_hook(ModelHook(self._forward_begins)))
            self._handles.append(self.model.register_forward_hook(ModelHook(self._forward_done)))
        self._attention_names = attention_names(self.model)
        self._handles.append(self.model.register_forward_pre_hook(ModelHook(self._precursors_begin)))
        self._handles.append(self.model.register_forward_hook(ModelHook(self._precursors_done)))

    def detach(self) -> None:
        """Remove every hook this collector installed."""
        self._leave_attention()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _activation_hook(self, name: str, kind: str, unit_dim: int) -> Any:
        failed = self.guard.failed  # the hook runs for every module of every forward: it is kept lean
        dead = kind in DEAD_KINDS

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if not (self.sampling and module.training) or ACTIVATION_HOOK in failed or not torch.is_grad_enabled():
                return
            if name not in self.seen.activations:
                try:
                    if not (dead and self._hold(name, kind, unit_dim, output)):
                        self._record_activation(name, kind, unit_dim, output)
                except Exception as exc:
                    self.guard.fail(ACTIVATION_HOOK, exc)

        return hook

    def _forward_begins(self, module: torch.nn.Module, args: Any) -> None:
        self._in_forward = True

    def _forward_done(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """At the end of the model's forward pass: reduce the outputs still held (they hold their graph)."""
        self._in_forward = False
        if self.seen.held:
            self.guard.run(ACTIVATION_HOOK, self._reduce_held, self.seen)

    def _precursors_begin(self, module: torch.nn.Module, args: Any) -> None:
        """Before a sampled step's first training forward: watch its attention softmaxes (see ``AttentionProbe``)."""
        if not (self.sampling and module.training) or self.seen.attention is not None or PRECURSOR_HOOK in self.guard.failed:
            return
        if is_compiling() or not torch.is_grad_enabled():
            return
        self._leave_attention()  # a forward that raised left it entered
        self.seen.attention = self._attention.calls = []
        self._reading_forward = True
        if self._looks_for_attention:
            self.guard.run(PRECURSOR_HOOK, self._enter_attention)

    def _enter_attention(self) -> None:
        self._attention.__enter__()
        self._attention.entered = True

    def _leave_attention(self) -> None:
        if self._attention.entered:
            self._attention.entered = False
            self.guard.run(PRECURSOR_HOOK, self._attention.__exit__, None, None, None)

    def _precursors_done(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """After that forward: stop watching attention; the output log-partition. A model that names no attention
        module and showed no attention call in it is not watched again (the mode costs microseconds per torch call:
        half a sampled step's overhead on a 500-layer MLP)."""
        if not self._reading_forward:
            return
        self._reading_forward = False
        if self._attention.entered and not self._attention.calls and not self._attention_names:
            self._looks_for_attention = False
        self._leave_attention()
        if self.seen.log_partition is None:
            self.guard.run(PRECURSOR_HOOK, self._record_log_partition, output)

    def _record_log_partition(self, output: Any) -> None:
        logits = output_logits(output)
        if logits is not None:
            self.seen.log_partition = log_partition(logits)

    def _reduce_held(self, seen: Seen) -> None:
        for key in list(seen.held):
            self._reduce(seen, key)

    def _input_hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self.sampling and self.seen.inputs is None and module.training and torch.is_grad_enabled():
            self.guard.run("input hook", self._record_inputs, args)

    def _record_inputs(self, args: tuple[Any, ...]) -> None:
        """Rows and scale of the model's first layer input: unscaled features are a cause of their own."""
        x = local(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        if x is None or x.dim() == 0:
            return
        self.seen.batch_rows = int(x.shape[0])
        if x.is_floating_point() and x.numel() > 1:
            x = x.detach().float()
            self.seen.inputs = torch.stack([x.abs().mean(), x.std()])

    def _sequence_hook(self, name: str, batch_first: bool) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if self.sampling and name not in self.seen.sequences and module.training and torch.is_grad_enabled():
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
        sequences = self.seen.sequences
        sequences[name] = None  # armed once per sampled step

        def record(grad: torch.Tensor) -> None:
            sequences[name] = grad.detach().float().square().sum(other).sqrt()

        inputs.register_hook(lambda grad: self.guard.run("recurrent hook", record, grad))
        return replaced

    def _hold(self, name: str, kind: str, unit_dim: int, output: Any) -> bool:
        """Hold a small ReLU-like output for ``_reduce`` with like ones; False if it is not one (a DTensor, a large
        or a 1-d output, the hold budget spent, a module whose output was once overwritten, a traced hook).

        Inside the model's own forward the output is held as it is, not detached (a detached view costs
        microseconds per module): ``_reduce`` reads it without recording a gradient when its group fills or when
        that forward ends. A loop that calls only the model's parts holds a detached view, kept until the sample
        is taken: no graph outlives its step."""
        if is_compiling() or type(output) is not torch.Tensor or name in self._direct:  # first: a traced hook makes no guard
            return False
        seen, shape, size = self.seen, output.shape, output.numel()
        if len(shape) < 2 or not 0 < size <= LARGE_PARAM or seen.held_elements + size > HELD_ELEMENTS or not output.is_floating_point():
            return False
        unit_dim %= len(shape)
        if not self._in_forward:
            output = output.detach()
        key = (shape, output.dtype, output.device, unit_dim)  # like outputs are reduced together
        group = seen.held.get(key)
        if group is None:
            group = seen.held[key] = []
        rows = size // shape[unit_dim]
        group.append((name, kind, rows, output, output._version))
        seen.held_elements += size
        seen.activations[name] = (kind, None, rows)  # measured with its group
        if len(group) * size >= CACHE_CHUNK:
            self._reduce(seen, key)
        return True

    def _record_activation(self, name: str, kind: str, unit_dim: int, output: Any) -> None:
        """Unit maxima of a ReLU-like output not held (see ``_hold``) or the saturated share of a sigmoid or tanh;
        the shares are finished for all modules at once in ``take``."""
        if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.numel() == 0:
            return
        output = output.detach()  # the hook runs with gradients on
        if kind in DEAD_KINDS:  # the windows are kept in ``take``: the hook may run inside a compiled graph
            dims = output.dim()
            if dims < 2:
                self.seen.activations[name] = (kind, output.clone(), 1)
                return
            unit_dim %= dims
            self.seen.activations[name] = (kind, output.amax(_other_dims(dims, unit_dim)), output.numel() // output.shape[unit_dim])
        else:
            low, high = SATURATED_OUTSIDE[kind]
            tail = (output < low) | (output > high)
            self.seen.activations[name] = (kind, tail.float().mean(), 0)


@functools.cache
def _other_dims(dims: int, unit_dim: int, *, keep_first: bool = False) -> list[int]:
    """Every dimension of a ``dims``-dimensional output but its units' (and the first, ``keep_first``)."""
    return [d for d in range(1 if keep_first else 0, dims) if d != unit_dim]


class _Window:
    """Per-unit maxima of several activations over windows of rows, kept in one device vector.

    A unit never positive over its window is dead. Each activation's window
    grows by the rows of every sampled batch and starts afresh once it has
    seen ``WINDOW_ROWS`` rows; the whole vector is updated with one kernel.
    """

    def __init__(self, entries: list[_Entry], maxima: torch.Tensor) -> None:
        self.names = [name for name, _, _, _ in entries]
        self.kinds = [kind for _, kind, _, _ in entries]
        self.sizes = [units for _, _, units, _ in entries]
        self.maxima = maxima  # one value per unit, activation after activation
        self.seen = [rows for _, _, _, rows in entries]  # 0: empty (started afresh)
        device = maxima.device
        self.segments = torch.repeat_interleave(torch.arange(len(entries), device=device), torch.tensor(self.sizes, device=device))
        self.units = torch.tensor(self.sizes, dtype=torch.float32, device=device)

    @classmethod
    def extend(cls, window: _Window | None, entries: list[_Entry], current: torch.Tensor) -> _Window:
        """``window`` with a sampled batch's maxima added; a new window if the activations are not the same."""
        if window is None or window.names != [e[0] for e in entries] or window.sizes != [e[2] for e in entries]:
            return cls(entries, current)
        empty = [seen == 0 for seen in window.seen]
        if all(empty):
            window.maxima = current
        elif not any(empty):
            window.maxima = torch.maximum(window.maxima, current)
        else:
            restart = torch.tensor(empty, device=current.device)[window.segments]
            window.maxima = torch.where(restart, current, torch.maximum(window.maxima, current))
        window.seen = [seen + rows for seen, (_, _, _, rows) in zip(window.seen, entries)]
        return window

    def take(self) -> tuple[list[tuple[str, str, int]], torch.Tensor | None]:
        """The windows holding rows (name, kind, rows) and their dead shares; full ones start afresh."""
        held = [i for i, seen in enumerate(self.seen) if seen > 0]
        if not held:
            return [], None
        dead = torch.zeros(len(self.sizes), device=self.maxima.device).index_add_(0, self.segments, (~(self.maxima > 0)).float())
        shares = dead / self.units
        if len(held) < len(self.sizes):
            shares = shares[torch.tensor(held, device=shares.device)]
        report = [(self.names[i], self.kinds[i], self.seen[i]) for i in held]
        self.seen = [0 if seen >= WINDOW_ROWS else seen for seen in self.seen]
        return report, shares

"""Per-layer statistics of a ``torch.nn.Module``, measured on the device.

Nothing here touches the host on unsampled steps: gradients and weights are
reduced with grouped ``torch._foreach_*`` kernels on sampled steps only, and
everything a sample needs leaves the device in a single transfer in ``flush``.

Sharded parameters (FSDP2's DTensors) are measured on each rank's local
shard: a layer's squared norms are summed over ranks, never gathered.
"""

from __future__ import annotations

import math
import operator
import sys
import weakref
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gradwatch.blocks import BLOCK, CACHE_CHUNK, LARGE_PARAM, SPREAD_UNITS, sampled_elements, update_stride
from gradwatch.detectors.dead_relu import WINDOW_ROWS, row_judged
from gradwatch.detectors.stagnation import UNITS_APART
from gradwatch.facts import LayerFacts, ModelFacts
from gradwatch.measures import Layout
from gradwatch.safety import FaultGuard
from gradwatch.stats import ActivationStats, LayerStats, SequenceStats, StepStats

from ._torch import StackBuffers, foreach_norms, norms, torch
from .torch_facts import (
    is_lazy,
    local,
    module_kind,
    parameterised_modules,
    shard_count,
)
from .torch_probes import ForwardProbes

ROW_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d")
SAMPLED_STRIDE = 8  # a gradient whose updates are read on every 8th block or sparser is read so at every step too
STEP_NORMS_KEPT = 200  # per-step gradient norms kept between two samples (the latest; the forecast reads a few dozen)

_VERSION = operator.attrgetter("_version")
Group = tuple[int, ...]  # indices into ``TorchCollector.params`` read together


@dataclass
class _Sample:
    """Device tensors gathered for one sampled step, waiting for ``flush``."""

    grad_layers: list[int] = field(default_factory=list)
    grad_norms: Any = None  # per layer: summed squared norms (see ``TorchCollector.pack``)
    grad_rows: list[tuple[Group, Any]] = field(default_factory=list)  # row norms of the row-judged weights, per group
    grad_key: tuple[list[int], list[int]] | None = None  # identity and version of each gradient read: unchanged ones need no new read
    before: dict[tuple[int, ...] | None, list[Any]] = field(default_factory=dict)  # parameters read (None: all) -> snapshots
    weight_norms: Any = None  # squared, before the optimizer step: the scale a step is judged against
    update_norms: Any = None
    weighed: set[int] = field(default_factory=set)  # parameters whose weight norm was read
    spreads: list[tuple[Group, Any]] = field(default_factory=list)  # (weights, their units' spread) per weight group
    updated: set[int] = field(default_factory=set)  # layers whose update was measured
    raw_grad_sq: Any = None  # squared total gradient norm as backward produced it (before any clipping)
    moments: Any = None  # per layer: summed second-moment estimates of an Adam-type optimizer, before the step
    moment_layers: set[int] = field(default_factory=set)  # the layers they were read for
    adam_eps: float | None = None
    measured: dict[str, Any] = field(default_factory=dict)  # step-level parts measured outside the collector (``add_part``)


class TorchCollector:
    """Reads gradient, weight, update and activation statistics of one model.

    ``trainable`` restricts the layers to parameters an optimizer updates
    (frozen or un-optimised parameters are never evidence). Call
    ``capture_gradients`` after backward and before the optimizer step,
    ``capture_updates`` right after it, and ``flush`` to get a ``StepStats``
    (``pack`` and ``unpack`` are its two halves, around a combine across ranks).
    What the forward pass shows comes from its ``probes`` (``torch_probes``).
    Zero gradient rows are judged over windows of sampled batches growing to
    ``WINDOW_ROWS`` rows: per-row maxima stay on the device until then.
    """

    def __init__(self, model: torch.nn.Module, *, guard: FaultGuard | None = None) -> None:
        self.guard = guard or FaultGuard()
        self.model = model
        self.probes = ForwardProbes(model, self.guard)  # activations, input scale, time profiles
        self._sample = _Sample()
        self._loss_tensor: torch.Tensor | None = None
        self._loss_float = 0.0
        self._loss_count = 0
        self._step_grads: deque[torch.Tensor] = deque(maxlen=STEP_NORMS_KEPT)  # squared, each optimizer step's since the last sample
        self._step_weights: dict[tuple[Any, ...], torch.Tensor | None] = {}  # see note_step_gradients
        self._after_backward: tuple[torch.Tensor, tuple[list[int], list[int]]] | None = None  # see note_backward_gradients
        self._scaler: weakref.ref[Any] | Literal[False] | None = None  # the GradScaler stepping the optimizer (False: none; None: not looked for)
        self._row_window: dict[Group, tuple[Any, int]] = {}  # weight group -> (gradient row norm maxima, rows)
        self.batch_rows = 0  # rows of the latest sampled batch (the first layer's input), 0 until one is seen
        self.set_trainable(None)

    def set_trainable(self, params: Collection[torch.nn.Parameter] | None) -> None:
        """Watch only ``params`` (by identity) among the model's parameters; ``None``: all with requires_grad."""
        ids = {id(p) for p in params} if params is not None else None
        self.layer_names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        owners: list[int] = []
        self.row_params: dict[int, int] = {}  # parameter index -> layer index, for Linear/Conv weights
        self.lazy: list[torch.nn.Parameter] = []  # lazy modules' parameters, left out until their first forward
        seen: set[int] = set()  # a tied parameter (an LM head sharing the embedding) belongs to its first owner
        grouped: set[int] = set()
        for name, module in parameterised_modules(self.model):
            own = [p for p in module.parameters(recurse=False) if p.requires_grad and (ids is None or id(p) in ids)]
            self.lazy += [p for p in own if is_lazy(p)]
            own = [p for p in own if not is_lazy(p) and p.numel() > 0 and p.dtype.is_floating_point and id(p) not in seen]
            seen.update(id(p) for p in own)
            if not own:
                continue
            index = len(self.layer_names)
            self.layer_names.append(name)
            weight = getattr(module, "weight", None)
            if module_kind(module) in ROW_KINDS and weight is not None and weight.dim() >= 2:
                self.row_params.update({len(self.params) + k: index for k, p in enumerate(own) if p is weight})
                if getattr(module, "groups", 1) != 1:  # a grouped conv's units read different inputs: never copies
                    grouped.update(len(self.params) + k for k, p in enumerate(own) if p is weight)
            self.params.extend(own)
            owners.extend([index] * len(own))
        self.shards = [shard_count(p) for p in self.params]  # how many ranks hold distinct pieces of each
        self._sharded = any(k > 1 or local(p) is not p for p, k in zip(self.params, self.shards))
        self._update_stride = [update_stride(t.numel(), t.shape[-1] if t.dim() else 1) for t in self._local(self.params)]
        self._update_scale = [t.numel() / sampled_elements(t.numel(), k) for t, k in zip(self._local(self.params), self._update_stride)]
        self._owner_list = owners
        self.layer_sizes: list[int] = [0] * len(self.layer_names)
        for p, owner in zip(self.params, owners):
            self.layer_sizes[owner] += p.numel()
        self._every_layer = list(range(len(self.layer_names)))
        self._all_weights = dict(enumerate(self.params))  # read as they are (not sharded: see ``_weights``)
        self.row_facts: dict[int, LayerFacts | None] = {}  # what is known of each row-judged weight's layer
        self._judge_rows()
        self._row_window = {}
        self._indices: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._plans: dict[tuple[Any, ...], list[Group]] = {}
        self._row_scale: dict[tuple[Group, ...], torch.Tensor] = {}
        self._buffers = StackBuffers()  # as many as the parameters' groups
        self._spread_layers = {i: layer for i, layer in self.row_params.items() if i not in grouped}  # see ``_unit_spread``
        self._spread_unread = set(self._spread_layers)  # weights whose units' spread is still read

    @torch.no_grad()
    def capture_gradients(self, *, scale: float | None = None, weights: bool = True, only: list[int] | None = None) -> None:
        """Gradient norms per layer and zero-gradient rows; weight norms and a snapshot before the step.

        Gradients already read at the end of backward are read again only if
        something changed them since (clipping, unscaling, a second backward).
        ``scale``: divide gradients by it (a loss scale an AMP scaler left in place).
        ``weights``: also take the weight norms and the snapshot for the update.
        ``only``: read these parameters (indices into ``params``: one optimizer's
        share, when several step in turn); the sample adds up the shares.
        """
        sample = self._sample
        if only is None:
            reuse = sample.grad_key is not None and sample.grad_key == _grad_key([p.grad for p in self.params])
            part = sample.grad_norms if reuse else self._read_gradients()
            sample.grad_norms = None
        else:
            part = self._read_gradients(only)
        if part is not None:
            part = part / scale**2 if scale else part
            sample.grad_norms = part if sample.grad_norms is None else sample.grad_norms + part
        if self.params and weights:
            self._snapshot_weights(only)

    @torch.no_grad()
    def capture_after_backward(self) -> None:
        """At the end of a sampled step's first backward pass: the per-layer gradient norms as backward produced
        them, kept for the optimizer step if nothing changes them (a later pass, clipping)."""
        if self._sample.grad_norms is None:
            self._sample.grad_norms = self._read_gradients()

    @property
    def sharded(self) -> bool:
        """Some parameter is split across ranks (FSDP): each rank holds a piece."""
        return self._sharded

    @property
    def has_gradients(self) -> bool:
        """Whether the pending sample holds gradient norms."""
        return bool(self._sample.grad_layers)

    def _local(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's pieces of the tensors (see ``local``); the tensors themselves when none is sharded."""
        return [local(t) for t in tensors] if self._sharded else list(tensors)

    def _read_gradients(self, only: list[int] | None = None) -> torch.Tensor | None:
        """One read of the dense gradients (``only``: of these parameters): per-layer squared norms and,
        where needed, row norms. A read of all of them replaces an earlier one; shares add up."""
        sample = self._sample
        indices = range(len(self.params)) if only is None else only
        found = [p.grad for p in self.params] if only is None else [self.params[i].grad for i in only]
        if only is None:
            sample.grad_key = _grad_key(found)
            sample.grad_rows, sample.grad_layers = [], []
        strided = torch.strided
        grads = {i: g for i, g in zip(indices, found) if g is not None and g.layout == strided}
        if self._sharded:
            grads = dict(zip(grads, self._local(list(grads.values()))))
        if not grads:
            return None
        rowed = self._rows_wanted(grads)
        squares: list[torch.Tensor] = []
        order: list[int] = []
        for group in self._plan(grads, rowed):
            stacked = self._buffers.stack([grads[i] for i in group])
            if group[0] in rowed:  # one read gives the norm and the all-zero rows (dead units)
                rows = norms(stacked.flatten(2), 2)
                sample.grad_rows.append((group, rows))
                squares.append(rows.square().sum(1))
            else:
                squares.append(norms(stacked.flatten(1), 1).square())
            order += group
        every = len(grads) == len(self.params)  # the usual case: every layer has a gradient
        sample.grad_layers = self._every_layer if every else sorted(set(sample.grad_layers) | {self._owner_list[i] for i in grads})
        return self._per_layer(torch.cat(squares), order)

    @torch.no_grad()
    def capture_moments(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Per layer, the sum of an Adam-type optimizer's bias-corrected second-moment estimates (``exp_avg_sq``)
        before its step, and its epsilon: a precursor of loss spikes (gradients far above or below the scale Adam
        divides by). Layers without that state (another optimizer, the first step) are not measured."""
        index = {id(p): i for i, p in enumerate(self.params)}
        held: list[tuple[int, torch.Tensor, Any]] = []  # (parameter, its estimate, 1 - beta2 ** its step)
        eps = None
        for optimizer in optimizers:
            state = optimizer.state
            for group in optimizer.param_groups:
                betas, group_eps = group.get("betas"), group.get("eps")
                if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not isinstance(group_eps, (int, float)):
                    continue
                for p in group["params"]:
                    found = state.get(p) if id(p) in index else None
                    moment, step = (found.get("exp_avg_sq"), found.get("step")) if found else (None, None)
                    if isinstance(moment, torch.Tensor) and moment.layout == torch.strided and step is not None:
                        held.append((index[id(p)], moment, 1 - float(betas[1]) ** step))
                        eps = float(group_eps) if eps is None else eps
        if not held or self._sharded:
            return
        moments = [moment if moment.dtype == torch.float32 else moment.float() for _, moment, _ in held]
        sums = torch.stack(list(torch._foreach_norm(moments, 1)))  # L1 norms: the sums, as the estimates are >= 0
        corrections = torch.stack([torch.as_tensor(c, dtype=torch.float32).reshape(()) for _, _, c in held]).to(sums.device)
        self._sample.moments = self._per_layer(sums / corrections, [i for i, _, _ in held])
        self._sample.moment_layers = {self._owner_list[i] for i, _, _ in held}
        self._sample.adam_eps = eps

    def use_facts(self, facts: ModelFacts) -> None:
        """Learn the layers' activations, so that rows no detector reads are not measured."""
        known = {layer.name: layer for layer in facts.layers}
        self.row_facts = {i: known.get(self.layer_names[layer]) for i, layer in self.row_params.items()}
        self._judge_rows()

    def _judge_rows(self) -> None:
        """Which weights' rows may judge dead units (see ``row_judged``), each with the activation module whose
        own measurement, when taken, makes the rows unneeded."""
        last = len(self.layer_names) - 1
        self._row_candidates = {
            i: facts.activation_module if facts is not None else None
            for i, layer in self.row_params.items()
            if layer != last and row_judged(facts := self.row_facts.get(i), ())
        }

    def _rows_wanted(self, grads: dict[int, torch.Tensor]) -> set[int]:
        """The weights whose zero gradient rows may judge dead units this sample (not the output layer's)."""
        measures = self.probes.measures  # a candidate's activation module is ReLU-like (see ``row_judged``)
        return {i for i, module in self._row_candidates.items() if i in grads and (module is None or not measures(module))}

    def _snapshot_weights(self, only: list[int] | None = None) -> None:
        """Weight norms before the step, and the copy (a block sample of large ones) the update is measured from.

        Groups of small weights are copied into buffers kept between samples (no allocation after the first).
        """
        weights = self._weights(only)
        squares: list[torch.Tensor] = []
        order: list[int] = []
        before: list[torch.Tensor] = []
        for group in self._plan(weights):
            if len(group) > 1:
                whole = self._buffers.stack([weights[i] for i in group], owner=group)  # read for the norms: the weights as they are
                before.append(whole)
            else:
                whole = self._buffers.stack([weights[group[0]]])
                before.append(_sampled(weights[group[0]], self._update_stride[group[0]]).clone())
            squares.append(norms(whole.flatten(1), 1).square())
            order += group
            if not self._spread_unread.isdisjoint(group) and whole.shape[1] > 1 and not self._sharded:
                self._sample.spreads.append((group, self._unit_spread(whole)))  # unpack keeps the weights with units
        part = self._per_layer(torch.cat(squares), order)
        self._sample.weight_norms = part if self._sample.weight_norms is None else self._sample.weight_norms + part
        self._sample.weighed.update(weights)
        self._sample.before[None if only is None else tuple(only)] = before

    def _unit_spread(self, weights: torch.Tensor) -> torch.Tensor:
        """How far a layer's units are from being copies of each other, per weight of a stack (units along the
        second axis): the spread of the first ``SPREAD_UNITS`` units' weights about their mean over their size
        (about 0.87 for random units, 0 for copies); NaN where those weights are all zero (no evidence).
        Units seen to differ (by ``UNITS_APART``) never become copies again: their weights are not read again."""
        units = weights.flatten(2)[:, :SPREAD_UNITS].float()
        spread = (units - units.mean(1, keepdim=True)).square().sum((1, 2))
        return (spread / units.square().sum((1, 2))).sqrt()

    def _weights(self, only: list[int] | None) -> Mapping[int, torch.Tensor]:
        if only is None and not self._sharded:
            return self._all_weights
        indices = list(range(len(self.params))) if only is None else only
        return dict(zip(indices, self._local([self.params[i] for i in indices])))

    @torch.no_grad()
    def capture_updates(self, only: list[int] | None = None) -> None:
        """The size of the optimizer step ``|ΔW|``, from the snapshot taken with the gradients (of ``only``)."""
        sample = self._sample
        before = sample.before.pop(None if only is None else tuple(only), None)
        if before is None:
            return
        weights = self._weights(only)
        groups = self._plan(weights)
        squares = []
        for group, delta in zip(groups, before):  # each snapshot becomes -ΔW
            if len(group) > 1:  # stacked copies and subtractions: a foreach pass costs microseconds per tensor on CPU
                per = max(1, CACHE_CHUNK // delta[0].numel())  # a chunk's copy is still in cache when subtracted
                for start in range(0, len(group), per):
                    delta[start : start + per].sub_(self._buffers.stack([weights[i] for i in group[start : start + per]]))
            else:
                delta.sub_(_sampled(weights[group[0]], self._update_stride[group[0]]))
            square = norms(delta.reshape(len(group), -1), 1).square()
            squares.append(square * self._update_scale[group[0]] if len(group) == 1 and self._update_scale[group[0]] != 1.0 else square)
        part = self._per_layer(torch.cat(squares), [i for g in groups for i in g])
        sample.update_norms = part if sample.update_norms is None else sample.update_norms + part
        sample.updated.update(self._every_layer if only is None else [self._owner_list[i] for i in weights])

    def _plan(self, tensors: Mapping[int, torch.Tensor], rowed: Collection[int] = ()) -> list[Group]:
        """Groups of tensors read with one kernel each: small ones alike in shape, dtype, device and ``rowed``
        stacked (one copy), others alone."""
        first = next(iter(tensors.values()))
        key = (first.device, first.dtype, tuple(tensors), tuple(sorted(rowed)))
        groups = self._plans.get(key)
        if groups is None:
            buckets: dict[Any, list[int]] = {}
            for i, t in tensors.items():
                shape = (tuple(t.shape), t.dtype, t.device, i in rowed) if t.numel() <= LARGE_PARAM else i
                buckets.setdefault(shape, []).append(i)
            groups = self._plans[key] = [tuple(members) for members in buckets.values()]
        return groups

    def add_loss(self, loss: torch.Tensor | float) -> None:
        """Accumulate the step's loss without a host sync or an allocation (a tensor stays on its device,
        added in place into a sum that starts as a copy of the first loss after each sample)."""
        if isinstance(loss, torch.Tensor):
            value = loss.detach().float()
            value = value.mean() if value.dim() else value  # the usual 0-d loss costs one in-place addition
            if self._loss_tensor is None or self._loss_tensor.device != value.device:
                self._loss_tensor = value.clone() if self._loss_tensor is None else self._loss_tensor.to(value.device) + value
            else:
                self._loss_tensor.add_(value)
        else:
            self._loss_float += float(loss)
        self._loss_count += 1

    @torch.no_grad()
    def note_backward_gradients(self) -> None:
        """At the end of a backward pass: the total gradient norm, squared, as backward left it (before any clipping
        or AMP unscaling), kept on the device for ``note_step_gradients`` (under accumulation, the last pass's)."""
        key = _grad_key([p.grad for p in self.params])
        total = self._total_grad_sq(key)
        self._after_backward = (total, key) if total is not None else None

    @torch.no_grad()
    def note_step_gradients(self, scale: float | None = None) -> None:
        """The total gradient norm of an optimizer step, squared, kept on the device until the next sample (no host
        read). On a sampled step it is the sum of the per-layer norms just read, where the gradients are still
        those; otherwise one foreach pass, and on CPU large gradients are read on the blocks their updates are
        (``gradwatch.blocks``: an unbiased estimate that reads a sixty-fourth of them; an accelerator reads them
        whole in the same fused pass, cheaper than a kernel per tensor). ``scale``: a loss scale left in the
        gradients. Shards count as in ``pack``.

        Where ``note_backward_gradients`` read them at the end of backward, the step's norm is that one, before
        any clipping, divided by the loss scale of the AMP ``GradScaler`` stepping the optimizer, if any; on a
        sampled step it is also the sample's total before clipping (``StepStats.grad_norm_unclipped``)."""
        after_backward, self._after_backward = self._after_backward, None
        if after_backward is not None:
            pre_clip, key = after_backward
            changed = key != _grad_key([p.grad for p in self.params])  # clipped, or unscaled by a GradScaler
            loss_scale = self._stepping_scale() if changed else None
            if loss_scale is not None:
                pre_clip = pre_clip / loss_scale.square()
            self._sample.raw_grad_sq = pre_clip
            self._step_grads.append(pre_clip)
            return
        self._sample.raw_grad_sq = None  # the pending sample's pre-clip total is its own step's, or none
        now = self._total_grad_sq(None)
        if now is not None:
            self._step_grads.append(now / scale**2 if scale else now)

    def _stepping_scale(self) -> torch.Tensor | None:
        """The loss scale (a device tensor) of the AMP ``GradScaler`` whose ``step()`` is calling the optimizer,
        looked for on the call stack at the first step whose gradients changed after backward."""
        if self._scaler is None:
            self._scaler = stepping_scaler()
        scaler = self._scaler() if self._scaler else None
        loss_scale: torch.Tensor | None = getattr(scaler, "_scale", None)
        return loss_scale

    def _total_grad_sq(self, key: tuple[list[int], list[int]] | None) -> torch.Tensor | None:
        """The squared total norm of the gradients as they stand (``key``: their identities and versions, if known)."""
        sample = self._sample
        if sample.grad_norms is not None and sample.grad_key is not None and sample.grad_key == (key or _grad_key([p.grad for p in self.params])):
            read: torch.Tensor = sample.grad_norms.sum()
            return read
        found = [(i, p.grad) for i, p in enumerate(self.params) if p.grad is not None and p.grad.layout == torch.strided]
        if not found:
            return None
        grads = self._local([grad for _, grad in found])
        strides = self._update_stride if grads[0].device.type == "cpu" else None  # an accelerator's one fused pass is cheaper
        whole = [(i, grad) for (i, _), grad in zip(found, grads) if strides is None or strides[i] < SAMPLED_STRIDE]
        blocks = [(i, _sampled(grad, strides[i])) for (i, _), grad in zip(found, grads) if strides is not None and strides[i] >= SAMPLED_STRIDE]
        parts = [torch.stack(foreach_norms([grad for _, grad in whole])).square()] if whole else []
        parts += [torch.stack([view.float().square().sum() for _, view in blocks])] if blocks else []  # a norm of a strided view can be slow
        squares = torch.cat(parts) if len(parts) > 1 else parts[0]
        layout = (squares.device, *(i for i, _ in whole), -1, *(i for i, _ in blocks))
        if layout not in self._step_weights:  # each gradient's share of the total (None: all 1), built once per layout
            factors = [float(self.shards[i]) for i, _ in whole] + [self._update_scale[i] * self.shards[i] for i, _ in blocks]
            self._step_weights[layout] = torch.tensor(factors, device=squares.device) if any(f != 1.0 for f in factors) else None
        weights = self._step_weights[layout]
        return squares.sum() if weights is None else torch.dot(squares, weights)

    def add_part(self, name: str, values: torch.Tensor) -> None:
        """A declared measurement (``gradwatch.measures``) of the pending sample taken outside the collector, as a
        device tensor: packed and transferred with the rest."""
        self._sample.measured[name] = values

    def discard(self) -> None:
        """Drop the pending sample (its optimizer step was skipped); losses are kept."""
        self._sample = _Sample()
        self.probes.discard()

    def flush(self, step: int, lr: float | None = None, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepStats:
        """Bring the pending sample to the host in one transfer and reset it.

        ``reduce`` combines the packed statistics across processes (an
        all-reduce mean, see ``torch_distributed.mean_across_ranks``) before the
        transfer; every rank must call it.
        """
        packed = self.pack()
        return self.unpack(packed, reduce(packed.values) if reduce is not None else packed.values, step, lr)

    @torch.no_grad()
    def pack(self) -> Packed:
        """The pending sample as one device vector whose mean over ranks is the combined sample; resets it.

        Squared norms and row counts of a parameter sharded ``k`` ways are
        multiplied by ``k``, so the mean over ranks sums its pieces. Dead-unit
        windows are reported as they stand, and start afresh once full.
        """
        sample, self._sample = self._sample, _Sample()
        unread = [i for i in range(len(self.params)) if i not in sample.weighed] if len(sample.weighed) < len(self.params) else []
        if unread:  # no snapshot, or one optimizer of several did not step
            unread_norms = foreach_norms(self._local([self.params[i] for i in unread]))
            part = self._per_layer(torch.stack(unread_norms).square(), unread)
            sample.weight_norms = part if sample.weight_norms is None else sample.weight_norms + part
        forward = self.probes.take()
        self.batch_rows = forward.batch_rows or self.batch_rows
        for group, row_norms in sample.grad_rows:
            maxima, seen = self._row_window.get(group, (None, 0))
            self._row_window[group] = (row_norms if maxima is None else torch.maximum(maxima, row_norms), seen + max(forward.batch_rows, 1))
        row_windows = {group: self._row_window[group] for group, _ in sample.grad_rows}
        self._row_window = {group: entry for group, entry in row_windows.items() if entry[1] < WINDOW_ROWS}
        sequences = forward.sequences
        parts: dict[str, Any] = {
            "grad": sample.grad_norms,
            "weight": sample.weight_norms,
            "update": sample.update_norms,
            "dead": forward.dead_shares,
            "saturated": forward.saturated_shares,
            "sequences": torch.cat([profile for _, profile in sequences]) if sequences else None,
            "raw_grad": sample.raw_grad_sq,
            "inputs": forward.inputs,
            "spread": torch.cat([spread for _, spread in sample.spreads]) if sample.spreads else None,
            "moments": sample.moments,
            "log_partition": forward.log_partition,
            "attention_maxima": forward.attention_maxima,
            "attention_entropies": forward.attention_entropies,
            "step_grads": torch.stack(list(self._step_grads)) if self._step_grads else None,
            **sample.measured,
        }
        if row_windows:
            parts["rows"] = self._count_zero_rows(row_windows)
        present = {name: part.float().reshape(-1) for name, part in parts.items() if part is not None}
        device = next(iter(present.values())).device if present else torch.device("cpu")
        loss = self._loss_tensor.reshape(1) + self._loss_float if self._loss_tensor is not None else torch.full((1,), self._loss_float)
        present["loss"] = torch.cat([loss.float().to(device), torch.full((1,), float(self._loss_count), device=device)])
        self._loss_tensor, self._loss_float, self._loss_count = None, 0.0, 0
        self._step_grads.clear()
        layout = Layout({name: part.numel() for name, part in present.items()})
        return Packed(
            torch.cat([part.to(device) for part in layout.arrange(present)]),
            sample,
            layout=layout,
            dead=forward.dead,
            rows=[(self.row_params[i], seen) for group, (_, seen) in row_windows.items() for i in group],
            saturated=forward.saturated,
            sequences=[(name, int(profile.shape[0])) for name, profile in sequences],
            spread=[i for group, _ in sample.spreads for i in group],
            attention=forward.attention,
        )

    def _count_zero_rows(self, windows: dict[Group, tuple[Any, int]]) -> torch.Tensor:
        """Per row-judged weight: its rows never with gradient, then its rows; each times its shard count."""
        zero = torch.cat([(~(maxima > 0)).float().sum(1) for maxima, _ in windows.values()])
        key = tuple(windows)
        scale = self._row_scale.get(key)
        if scale is None:
            shards = [float(self.shards[i]) for group in windows for i in group]
            rows = [float(maxima.shape[1]) for maxima, _ in windows.values() for _ in range(maxima.shape[0])]
            scale = self._row_scale[key] = torch.tensor([shards, [r * k for r, k in zip(rows, shards)]], device=zero.device)
        return torch.cat([zero * scale[0], scale[1]])

    def unpack(self, packed: Packed, values: torch.Tensor, step: int, lr: float | None = None) -> StepStats:
        """The ``StepStats`` of a packed sample from its (combined) values, brought to the host here."""
        n = len(self.layer_names)
        parts = packed.layout.split(values.tolist())  # the one transfer to the host; norms come back rooted
        unmeasured: Sequence[float | None] = [None] * n
        grad, weight, update = (parts.get(key) or unmeasured for key in ("grad", "weight", "update"))
        grad = _only(grad, packed.sample.grad_layers)
        update = _only(update, packed.sample.updated)
        zero_rows, zero_window = list(unmeasured), list(unmeasured)
        counts, k = parts.get("rows", []), len(packed.rows)
        for j, (layer, seen) in enumerate(packed.rows):  # a layer's weight is its one row-judged parameter
            if counts[k + j] > 0:
                zero_rows[layer], zero_window[layer] = counts[j] / counts[k + j], seen
        loss_sum, loss_count = parts["loss"]
        raw = parts.get("raw_grad")
        inputs = parts.get("inputs", [None, None])
        spread = list(unmeasured)
        for i, value in zip(packed.spread, parts.get("spread", [])):
            owner = self._spread_layers.get(i)  # None: a weight read along in its group, without units to compare
            if owner is not None and not math.isnan(value):  # NaN: the units read were all zero
                spread[owner] = value
                if value > UNITS_APART:
                    self._spread_unread.discard(i)
        moments = parts.get("moments")
        moment_rms: list[float | None] = list(unmeasured)
        if moments is not None:
            for owner in packed.sample.moment_layers:
                size = self.layer_sizes[owner]
                if size and moments[owner] >= 0:
                    moment_rms[owner] = math.sqrt(moments[owner] / size)
        fields = (self.layer_names, grad, weight, update, zero_rows, zero_window, spread, self.layer_sizes, moment_rms)
        layers = tuple(map(LayerStats, *fields))  # in the order of LayerStats' fields
        dead = parts.get("dead", [])
        activations = tuple(
            [ActivationStats(name, kind, share, window=seen) for (name, kind, seen), share in zip(packed.dead, dead)]
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
            grad_norm_unclipped=raw[0] if raw and math.isfinite(raw[0]) else None,
            input_mean_abs=inputs[0],
            input_std=inputs[1],
            adam_eps=packed.sample.adam_eps if moments is not None else None,
            batch_rows=self.batch_rows or None,
            output_log_partition=parts["log_partition"][0] if "log_partition" in parts else None,
            stale_grad=parts["stale"][0] if "stale" in parts else None,
            step_grad_norms=tuple(parts.get("step_grads", ())),
            **_attention_stats(packed.attention, parts.get("attention_maxima", []), parts.get("attention_entropies", [])),
        )

    def _per_layer(self, squares: torch.Tensor, params: list[int]) -> torch.Tensor:
        """Per-layer sums of squared per-parameter norms (``params``: whose each one is), on the device.

        A parameter sharded ``k`` ways counts ``k`` times (see ``pack``).
        """
        key = tuple(params)
        cached = self._indices.get(key)
        if cached is None:  # built once per distinct order: no host-to-device copy on later sampled steps
            index = torch.tensor([self._owner_list[i] for i in params], dtype=torch.long, device=squares.device)
            shards = [float(self.shards[i]) for i in params]
            factor = torch.tensor(shards, device=squares.device) if any(k != 1.0 for k in shards) else None
            cached = self._indices[key] = (index, factor)
        index, factor = cached
        if factor is not None:
            squares = squares * factor
        return torch.zeros(len(self.layer_names), device=squares.device).index_add_(0, index, squares)


@dataclass
class Packed:
    """A sample packed by ``TorchCollector.pack``: the values to combine and how to read them back.

    ``layout`` says where each named part of ``values`` lies; the other
    lists say what the dead-unit, zero-row, saturation, time-profile and units' spread parts hold.
    """

    values: torch.Tensor
    sample: _Sample
    layout: Layout
    dead: list[tuple[str, str, int]]
    rows: list[tuple[int, int]]
    saturated: list[tuple[str, str]]
    sequences: list[tuple[str, int]]
    spread: list[int]  # the weights (indices into ``params``) of the units' spreads, in order
    attention: list[tuple[str, int]] = field(default_factory=list)  # (attention, heads) of each attention call measured


def stepping_scaler() -> weakref.ref[Any] | Literal[False]:
    """The ``torch.amp.GradScaler`` whose ``step()`` is on the call stack (it calls ``optimizer.step`` itself), if any."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.amp.GradScaler):
            return weakref.ref(owner)
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _grad_key(grads: list[torch.Tensor | None]) -> tuple[list[int], list[int]]:
    """Identity and version of each gradient: a gradient replaced or changed in place reads differently."""
    present = [g for g in grads if g is not None]
    return list(map(id, present)), list(map(_VERSION, present))


def _sampled(tensor: torch.Tensor, stride: int) -> torch.Tensor:
    """A view of the elements an update is measured on: all of them as one row, or every
    ``stride``-th block of ``BLOCK`` (a tail shorter than a block is left out)."""
    flat = tensor.reshape(-1)
    if stride == 1:
        return flat.unsqueeze(0)
    return flat[: flat.numel() // BLOCK * BLOCK].view(-1, BLOCK)[::stride]


def _only(values: Sequence[float | None], measured: Collection[int]) -> Sequence[float | None]:
    """``values`` with None for the layers not in ``measured`` (the same list when every layer is)."""
    if len(measured) == len(values):
        return values
    return [value if i in measured else None for i, value in enumerate(values)]


def _attention_stats(calls: list[tuple[str, int]], maxima: list[float], entropies: list[float]) -> dict[str, Any]:
    """The largest attention logit (its attention and head) and the lowest per-head mean entropy of a sample."""
    if not calls or not maxima:
        return {}
    heads = [(name, head if count > 1 else None) for name, count in calls for head in range(count)]
    finite_at = [i for i, value in enumerate(maxima) if math.isfinite(value)]
    top = max(finite_at, key=maxima.__getitem__, default=None)
    if top is None:
        return {}
    lowest = min((value for value in entropies if math.isfinite(value)), default=None)
    return {
        "attention_logit_max": maxima[top],
        "attention_layer": heads[top][0],
        "attention_head": heads[top][1],
        "attention_entropy_min": lowest,
    }


def _take(cursor: Any, count: int) -> list[float]:
    return [next(cursor) for _ in range(count)]

"""The measurement cycle of one PyTorch model, shared by ``watch()``, the Lightning and the Trainer callbacks.

Adapters translate their framework's events into four calls per optimizer
step: ``begin_step`` (before forward), ``before_step`` (gradients final),
``add_loss`` and ``end_step`` (after the optimizer step); the cycle drives the
``TorchCollector`` and hands its samples to the core ``Session``, which decides
what to measure and what it means. Loops that update
the weights by hand have no optimizer step to hook: ``arm_backward`` has the
backward pass itself deliver the gradients, and ``after_manual_update`` marks
the update.

Under torch.distributed (DDP, FSDP) every rank measures, the samples are
combined across ranks, and only global rank 0 warns, prints and writes. Whether
a sample counts and whether to stop are decided by all ranks together, so a
rank whose collector failed never leaves the others waiting in a collective.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from gradwatch.console import print_report
from gradwatch.detectors.mistakes import LrCycles
from gradwatch.report import MIN_SAMPLES_TO_CLEAR, Report
from gradwatch.session import Session
from gradwatch.stats import LayerStats, StepStats

from . import torch_distributed
from ._torch import norms, torch
from .torch_facts import is_lazy, loss_facts, model_facts, named_modules, parameterised_modules
from .torch_stats import TorchCollector

COLLECTOR = "pytorch collector"
BACKWARD = "end-of-backward hook"  # without it, gradients are read at the optimizer step (after any clipping)
MOMENTS = "optimizer state"  # Adam's second moments, a precursor of loss spikes
LOOP = "training-loop checks"  # stale gradients, eval mode, parameters no optimizer steps


class TorchCycle:
    """A ``TorchCollector`` for one model, driven by optimizer steps, reporting to a core ``Session``.

    Starts a run of ``session`` (``main`` and ``every_n_steps`` as in ``Session.start``).
    """

    def __init__(self, model: torch.nn.Module, session: Session, *, main: bool = True, every_n_steps: int | None = None) -> None:
        self.model = model = unwrap(model)
        self.session = session
        self.guard = session.guard
        session.start(model_facts(model), main=main and torch_distributed.is_main(), every_n_steps=every_n_steps)
        self._disabled_everywhere = False
        self.collector = TorchCollector(model, guard=self.guard)
        self.collector.use_facts(self.session.facts)
        self.optimizers: list[torch.optim.Optimizer] = []
        self._step_hooks: list[Any] = []  # on the bound optimizers
        self._sampled = False  # this optimizer step is being measured
        self._stepped = False  # ... and its optimizer.step() really ran (an AMP scaler may skip it)
        self._step_lr: float | None = None  # the learning rate this step steps with (a scheduler may move on before end_step)
        self._backward_hooks: list[Any] = []
        self._loss_facts: dict[str, Any] | None = None  # what the loss's autograd graph showed, once read
        self.mistakes = LoopEvidence(self.model)
        self._shares: dict[int, list[int]] = {}  # optimizer -> the parameters it steps, when there are several
        self._batch_step: int | None = None  # the step a batch began at (several optimizers: one sample per batch)
        self._read_shares: set[int] = set()  # optimizers whose parameters this sampled batch has read (once each)
        self.collector.probes.attach()

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Watch the parameters these optimizers train (none given: every trainable one) and learn their
        settings, replacing any bound before."""
        for handle in self._step_hooks:
            handle.remove()
        self.optimizers = list(optimizers)
        params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
        self.collector.set_trainable(params if self.optimizers else None)
        first = self.optimizers[0] if self.optimizers else None
        self.session.set_facts(replace(model_facts(self.model, set(self.collector.layer_names), first), **(self._loss_facts or {})))
        self.mistakes.bind(self.optimizers)
        self.collector.use_facts(self.session.facts)
        self._step_hooks = [optimizer.register_step_post_hook(self._after_step) for optimizer in self.optimizers]
        index = {id(p): i for i, p in enumerate(self.collector.params)}
        shares = {id(o): [index[id(p)] for g in o.param_groups for p in g["params"] if id(p) in index] for o in self.optimizers}
        self._shares = shares if len(shares) > 1 else {}  # several optimizers step in turn: each reads its own

    @property
    def pending(self) -> bool:
        """A sampled step's gradients were read and ``end_step`` has not run yet."""
        return self._sampled

    def begin_step(self, step: int) -> None:
        """Before the forward pass of optimizer step ``step``: arm the activation hooks if it is sampled."""
        self._batch_step = step
        self.collector.probes.sampling = sampled = self.session.should_sample(step)
        if sampled and step > 0 and step != self.mistakes.armed_at and self.guard.enabled(LOOP):  # once per step, not per micro-batch
            self.guard.run(LOOP, self.mistakes.arm, step, self.collector.params)

    def before_step(self, step: int, *, scale: float | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """After backward, before ``optimizer.step()``: read gradients if ``step`` is sampled.

        Where several optimizers step in turn (Lightning's manual optimization),
        each one's parameters are read before its own step, and the batch is
        sampled as the step it began at.
        """
        if self.collector.lazy and not any(is_lazy(p) for p in self.collector.lazy):
            self.bind(self.optimizers)  # lazy modules got their parameters in a first forward: watch them too
        first = self.optimizers[0] if self.optimizers else optimizer
        each_step = first is not None and optimizer in (None, first)  # once per step: its rate and its gradient norm
        if each_step and first is not None:  # the rate it steps with, no device read
            self._step_lr = _lr(first, tensors=False)
            if self._step_lr is not None:
                self.mistakes.lr_cycles.see(self._step_lr)
        share = self._shares.get(id(optimizer)) if optimizer is not None else None
        if share is not None and optimizer is not None:
            if each_step:
                self.guard.run(COLLECTOR, self.collector.note_step_gradients, scale)
            if not self._sampled:
                self._sampled, self._stepped = self.session.should_sample(self._batch_step if self._batch_step is not None else step), False
            if self._sampled and id(optimizer) not in self._read_shares:
                self._read_shares.add(id(optimizer))
                self.guard.run(COLLECTOR, self.collector.capture_gradients, scale=scale, only=share)
                self.guard.run(MOMENTS, self.collector.capture_moments, [optimizer])
            return
        if self._sampled:  # several optimizers in one step: the first one's gradients are the sample
            return
        self._sampled = self.session.should_sample(step)
        self._stepped = False
        if self._sampled:
            self.guard.run(COLLECTOR, self.collector.capture_gradients, scale=scale)
            self.guard.run(MOMENTS, self.collector.capture_moments, self.optimizers)
        if each_step:  # after a sampled step's read, whose per-layer norms it reuses
            self.guard.run(COLLECTOR, self.collector.note_step_gradients, scale)

    def arm_backward(self, step: int, *, full: bool) -> None:
        """Have every backward pass of optimizer step ``step`` report its gradients as soon as it has accumulated them.

        ``full``: take the whole sample then, if ``step`` is sampled (no
        optimizer step will be seen: the loop updates the weights by hand, and
        may zero the gradients before ``watcher.step``). Otherwise read the
        step's total gradient norm there, before any clipping or AMP unscaling
        the training code applies (the last pass's, under accumulation); a
        sampled step also reads its per-layer norms there, and again at the
        optimizer step only if they changed. The first and last trainable
        parameters carry a hook that queues the read for the end of the
        backward pass (when every gradient is accumulated); the hooks hold no
        gradient (a held one would make autograd copy it). Under DDP the read
        waits one round more: the reducer averages the gradients in a callback
        it queues during backward. Sharded parameters (FSDP) get their gradients
        without accumulating them: their step reads them at the optimizer.
        """
        self.disarm()
        params = self.collector.params
        sampled = self.session.should_sample(step)
        if not params or self.collector.sharded or (full and not sampled) or not self.guard.enabled(COLLECTOR) or not self.guard.enabled(BACKWARD):
            return
        queued = [False]
        queue = torch.autograd.Variable._execution_engine.queue_callback
        rounds = 1 if torch_distributed.active() else 0

        def backward_done(rounds: int) -> None:
            if rounds:  # after the callbacks queued before this one (DDP's, which averages the gradients)
                queue(lambda: self.guard.run(COLLECTOR, backward_done, rounds - 1))
                return
            queued[0] = False
            if full:
                self.before_step(step)
                return
            if sampled:
                self.collector.capture_after_backward()
            self.collector.note_backward_gradients()

        def accumulated(param: torch.Tensor) -> None:
            if not queued[0]:
                queued[0] = True
                queue(lambda: self.guard.run(COLLECTOR, backward_done, rounds))

        ends = {id(p): p for p in (params[0], params[-1])}.values()  # a failure here costs the end-of-backward read only
        self._backward_hooks = [p.register_post_accumulate_grad_hook(lambda p: self.guard.run(BACKWARD, accumulated, p)) for p in ends]

    def disarm(self) -> None:
        """Remove the backward hooks of ``arm_backward``, if any."""
        for handle in self._backward_hooks:
            handle.remove()
        self._backward_hooks = []

    def after_manual_update(self) -> None:
        """The training code changed the weights itself: measure the update as if an optimizer had stepped."""
        self._after_step(None, (), {})

    def _after_step(self, optimizer: torch.optim.Optimizer | None, args: Any, kwargs: Any) -> None:
        if self._sampled and id(optimizer) in self._read_shares:  # a second step of it measures nothing more
            self._stepped = True
            self.guard.run(COLLECTOR, self.collector.capture_updates, self._shares[id(optimizer)])
            return
        if self._sampled and not self._stepped:
            self._stepped = True
            self.guard.run(COLLECTOR, self.collector.capture_updates)
            if not self.collector.has_gradients:  # a closure optimizer (LBFGS) made them inside step()
                self.guard.run(COLLECTOR, self.collector.capture_gradients, weights=False)

    def add_loss(self, loss: torch.Tensor | float) -> None:
        self.read_loss_graph(loss)
        self.guard.run("loss", self.collector.add_loss, loss)

    def read_loss_graph(self, loss: torch.Tensor | float) -> None:
        """Once, from the first loss that still holds its autograd graph: what feeds the loss (a softmax before a
        loss that applies its own, shapes broadcast against each other). Adapters whose loss arrives detached hand
        it over before backward."""
        if self._loss_facts is None and isinstance(loss, torch.Tensor) and loss.grad_fn is not None:
            self._loss_facts = self.guard.run("loss", loss_facts, loss) or {}
            if self._loss_facts:
                self.session.update_facts(**self._loss_facts)

    def end_step(
        self,
        step: int,
        *,
        lr: float | None = None,
        grad_scale: float | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> StepStats | None:
        """After the optimizer step: bring a sampled step to the host and diagnose it.

        ``lr``: the learning rate the step used, where the adapter knows it
        better than the optimizer's current one (a scheduler may have moved on).
        ``grad_scale``: multiply the measured gradient norms by it (undoes a
        clipping whose coefficient became known only after the gradients were read).
        ``reduce``: a mean over processes that torch.distributed does not connect
        (Lightning on XLA); under torch.distributed the cycle combines samples itself.
        Whether to stop (``session.stop_requested``) is decided by every rank together.
        """
        if not self._sampled:
            return None
        self._sampled = False
        self._read_shares.clear()
        step_lr, self._step_lr = self._step_lr, None
        if lr is None:
            lr = step_lr if step_lr is not None else _lr(self.optimizers[0]) if self.optimizers else None
        if self.guard.enabled(LOOP):
            self.guard.run(LOOP, self.mistakes.measure, self.collector)
        if torch_distributed.active():
            stats = self._combine(step, lr)
        elif not self._stepped:  # the optimizer step was skipped: not evidence of anything
            self.session.skip_step()
            self.collector.discard()
            return None
        else:
            stats = self.guard.run(COLLECTOR, self.collector.flush, step, lr, reduce)
        if stats is not None and grad_scale is not None:
            stats = replace(stats, layers=tuple(_scaled_grad(layer, grad_scale) for layer in stats.layers))
        if stats is not None and self.guard.enabled(LOOP):
            stats = self.guard.run(LOOP, self.mistakes.add_to, stats) or stats
            self._learn_batch_rows()
        if not self._disabled_everywhere:
            self.session.record(stats, agree=_agree)
        return stats

    def _learn_batch_rows(self) -> None:
        """A loss summed over the batch is judged by the batch's rows, known once a sampled forward saw them."""
        rows = self.collector.batch_rows
        if self._loss_facts and self._loss_facts.get("loss_reduction") == "sum" and rows and self.session.facts.loss_rows != rows:
            self._loss_facts["loss_rows"] = rows
            self.session.update_facts(loss_rows=rows)

    def _combine(self, step: int, lr: float | None) -> StepStats | None:
        """The sample combined over all ranks; every rank calls this at the same sampled steps.

        First the ranks agree (one small all-reduce) that each packed a sample of
        the same layout and that no optimizer step was skipped; then the samples
        are averaged (one all-reduce). A rank that failed makes every rank drop
        the collector, instead of leaving them waiting in the second collective.
        """
        if self._disabled_everywhere:
            self.collector.discard()
            return None
        if self.session.main and not torch_distributed.is_main():  # watch() ran before init_process_group
            self.session.set_main(False)
        packed = self.guard.run(COLLECTOR, self.collector.pack) if self._stepped else None
        if not self._stepped:
            self.collector.discard()
        size = float(packed.values.numel()) if packed is not None else -1.0
        failed_rank = torch_distributed.rank() + 1.0 if self._stepped and packed is None else 0.0
        failed, skipped, largest, smallest = torch_distributed.agree([failed_rank, 0.0 if self._stepped else 1.0, size, -size])
        if skipped:
            self.session.skip_step()
            return None
        if failed or largest != -smallest or packed is None:
            self._disabled_everywhere = True
            cause = f"a failure on rank {int(failed) - 1}" if failed else "samples of different layouts on the ranks"
            self.session.disable(COLLECTOR, f"disabled on every rank after {cause}")
            return None
        values = torch_distributed.mean_across_ranks(packed.values)
        return self.guard.run(COLLECTOR, self.collector.unpack, packed, values, step, lr)

    def final_sample(self, steps: int) -> None:
        """One last look when the run's last step was not sampled: weights, loss, gradients left in ``.grad``.

        It is kept when it shows NaN/Inf (a run that stopped itself on a NaN loss)
        or when the run is too short to judge without it; otherwise the last
        regular sample, with its activations, stays the latest evidence. Single
        process only: the ranks of a distributed run may not close together.
        """
        last = steps - 1
        observed = self.session.last_observed
        if last < 0 or torch_distributed.active() or (observed is not None and observed >= last):
            return
        self._sampled = False
        self.guard.run(COLLECTOR, self.collector.capture_gradients)
        lr = _lr(self.optimizers[0]) if self.optimizers else None
        stats = self.guard.run(COLLECTOR, self.collector.flush, last, lr)
        if stats is not None and (not stats.finite or self.session.sampled_steps < MIN_SAMPLES_TO_CLEAR):
            self.session.record(stats)

    def close(self, steps: int, *, unseen: str = "no training step was seen") -> Report:
        """Remove every hook; the session writes the summary and prints the console report."""
        for handle in self._step_hooks:
            handle.remove()
        self._step_hooks.clear()
        self.disarm()
        self.collector.probes.detach()
        return self.session.close(steps, unseen=unseen, render=print_report)


class LoopEvidence:
    """Direct evidence of mistakes in the training loop, read on sampled steps only.

    ``arm`` (before a sampled step's forward) puts a one-shot hook on the last
    trainable parameter: when the step's first backward reaches it, whatever
    ``.grad`` already holds was left by earlier steps (zero once cleared); it
    counts only if that same ``.grad`` reaches the end of the step (a GAN loop
    whose generator's backward passes through the discriminator before the
    discriminator's ``zero_grad()`` leaves nothing behind). At the
    same time it notes BatchNorm and Dropout modules in eval mode. ``bind``
    lists trainable parameters no bound optimizer steps. ``measure`` hands the
    left-over share to the collector, to leave the device with the sample;
    ``add_to`` puts the rest of the evidence into the sample.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._moded = [
            (name, m)
            for name, m in named_modules(model)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd))
        ]
        self._orphans: list[tuple[str, torch.nn.Parameter, int]] = []  # (layer, parameter, its version when bound)
        self._hook: Any = None
        self._stale: torch.Tensor | None = None  # norm of the left-over gradient / the fresh one's (NaN: unknown)
        self._left: tuple[torch.Tensor, weakref.ref[torch.Tensor]] | None = None  # the parameter and the .grad found holding them
        self._eval: tuple[str, ...] = ()
        self.lr_cycles = LrCycles()  # fed the learning rate of every optimizer step
        self.armed_at: int | None = None  # the step armed last (Lightning begins each micro-batch of a step)

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        stepped = {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]}
        self._orphans = [
            (name, p, p._version)
            for name, module in parameterised_modules(self.model)
            for p in module.parameters(recurse=False)
            if optimizers and p.requires_grad and id(p) not in stepped
        ]

    def arm(self, step: int, params: Sequence[torch.nn.Parameter]) -> None:
        self.disarm()
        self.armed_at = step
        if params:
            param = params[-1]
            self._hook = param.register_hook(lambda grad: self._first_backward(param, grad))
        training = self.model.training
        self._eval = tuple(name for name, m in self._moded if not m.training and (not training or _trains(m)))

    def _first_backward(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None
        left = param.grad
        if left is not None and left.shape == grad.shape:
            left_norm, fresh = (norms(g.detach().reshape(1, -1), 1) for g in (left, grad))
            self._stale = torch.where(fresh > 0, left_norm / fresh, torch.where(left_norm == 0, 0.0, torch.nan))
            self._left = (param, weakref.ref(left))

    def disarm(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._hook, self._stale, self._left = None, None, None

    def measure(self, collector: TorchCollector) -> None:
        """Hand the left-over gradient's share, if backward reached the armed parameter, to ``collector``."""
        if self._stale is not None and self._left is not None:
            cleared = self._left[1]() is not self._left[0].grad  # set to None before the step ended: nothing carried
            collector.add_part("stale", torch.zeros_like(self._stale) if cleared else self._stale)

    def add_to(self, stats: StepStats) -> StepStats:
        """``stats`` with the loop's evidence for this step (the left-over share came with the sample)."""
        orphans = tuple(dict.fromkeys(name for name, p, version in self._orphans if p.grad is not None and p._version == version))
        evidence = replace(stats, eval_modules=self._eval, orphan_layers=orphans, lr_cycles=self.lr_cycles.count)
        self.disarm()
        self._eval = ()
        return evidence


def _trains(module: torch.nn.Module) -> bool:
    """A BatchNorm with trainable parameters (a frozen one is kept in eval mode on purpose); Dropout never alone."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in module.parameters())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's own module inside DDP/DataParallel or ``torch.compile``, so layer names are theirs."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
            if not isinstance(inner, torch.nn.Module):
                return model
            model = inner


def _agree(serious: bool) -> bool:
    """Any rank that wants to stop makes every rank stop (one small all-reduce; a no-op in one process)."""
    return torch_distributed.agree([1.0 if serious else 0.0])[0] > 0


def _scaled_grad(layer: LayerStats, factor: float) -> LayerStats:
    return replace(layer, grad_norm=layer.grad_norm * factor) if layer.grad_norm is not None else layer


def _lr(optimizer: torch.optim.Optimizer, *, tensors: bool = True) -> float | None:
    """The first param group's learning rate; ``tensors=False``: None for a tensor rate (capturable optimizers),
    whose read would cost a device sync on every step."""
    try:
        value = optimizer.param_groups[0]["lr"]
        return float(value) if tensors or isinstance(value, (int, float)) else None
    except (IndexError, KeyError, TypeError, ValueError):
        return None

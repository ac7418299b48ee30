"""Per-layer statistics of a Keras 3 model, measured inside the compiled train step.

- Gradients: the optimizer's ``apply`` is wrapped for the duration of ``fit``.
  On sampled steps only, it computes each variable's squared gradient norm and
  the share of all-zero kernel columns (dead units): the exact gradients the
  optimizer applies (under ``tf.distribute``, summed over the replicas).
- Time: a recurrent layer's input passes through an identity whose custom
  gradient records the gradient norm reaching each time step.
- Activations: layers applying a ReLU, sigmoid or tanh measure their output
  on sampled steps (dead units, saturation) on the training batch itself.
- Weights and update sizes are reduced on the device around sampled steps.
- Every step's total gradient norm (squared, before any clipping the
  optimizer applies) goes into a ring of ``every_n_steps`` slots on the
  device; a sample reads the steps since the previous one with its other
  numbers. Not on JAX (its step cannot write a variable of gradwatch's), nor
  across ``tf.distribute`` replicas.

How a sampled step is told apart inside the step and how the numbers leave it
depends on the backend: see ``keras_backends`` (on JAX only the gradients,
weights and updates are measured; dead units come from the gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gradwatch.blocks import BLOCK, SPREAD_UNITS, sampled_elements, update_stride
from gradwatch.detectors.dead_relu import WINDOW_ROWS
from gradwatch.facts import DEAD_KINDS, SATURATED_OUTSIDE
from gradwatch.measures import Layout
from gradwatch.safety import FaultGuard
from gradwatch.stats import ActivationStats, LayerStats, SequenceStats, StepStats

from ._keras import keras, ops
from .keras_backends import for_current, state_variable
from .keras_facts import activation_of, trainable_layers

RECORDER = "keras gradient recorder"
STEP_NORMS = "keras per-step gradient norm"
ACTIVATIONS = "keras activation probe"
INPUTS = "keras input probe"
UNIT_KINDS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense")
RECURRENT_KINDS = ("SimpleRNN", "LSTM", "GRU")
PROBED_ACTIVATIONS = (*DEAD_KINDS, *SATURATED_OUTSIDE)


class KerasCollector:
    """Reads gradient, weight and update statistics of one Keras model."""

    def __init__(self, model: Any, *, guard: FaultGuard, every_n_steps: int) -> None:
        self.guard = guard
        layers = trainable_layers(model)
        self.layer_names = [layer.name for layer in layers]
        self.variables: list[Any] = []
        owners: list[int] = []
        self.unit_kernels: list[tuple[int, int, int]] = []  # (variable index, layer index, units) of Dense/Conv kernels
        seen: set[int] = set()
        for index, layer in enumerate(layers):
            kernel: Any = getattr(layer, "kernel", None) if type(layer).__name__ in UNIT_KINDS else None
            for variable in layer.trainable_weights:
                if id(variable) in seen:
                    continue  # shared weights count for the first layer that owns them
                seen.add(id(variable))
                if kernel is not None and variable is kernel:
                    self.unit_kernels.append((len(self.variables), index, int(kernel.shape[-1])))
                self.variables.append(variable)
                owners.append(index)
        self.owners = np.asarray(owners, dtype=np.int64)
        self._owner_ids = ops.convert_to_tensor(np.asarray(owners, dtype="int32"))  # per-layer sums on the device
        self.backend = backend = for_current(len(self.variables), sum(units for _, _, units in self.unit_kernels))
        self._model = model
        # keyed by the Keras variable and by its backend variable (what Keras's all-reduce passes)
        self._position = {id(x): i for i, v in enumerate(self.variables) for x in (v, v.value)}
        self._with_grad: set[int] = set()
        self._column_window: dict[int, tuple[np.ndarray, float]] = {}  # layer -> (column maxima of squared norms, rows) until WINDOW_ROWS
        self._patches = _Patches()  # the wrappers set on the optimizer and layers, and what they replaced
        self._probes: dict[str, tuple[Any, Any]] = {}  # recurrent layer name -> (layer, per-time-step gradient norms)
        for layer in layers:
            steps = _time_steps(layer)
            if type(layer).__name__ in RECURRENT_KINDS and steps and backend.forward_probes:
                self._probes[layer.name] = (layer, state_variable(steps, "gradwatch_time"))
        # the first trainable layer's input: mean |x| and std (unscaled features are a cause of their own)
        self._inputs = (layers[0], state_variable(2, "gradwatch_inputs", fill=np.nan)) if layers and backend.forward_probes else None
        # (layer, activation kind, measured value): the saturated share, or ReLU unit maxima and rows over the window
        self._activations: list[tuple[Any, str, Any]] = []
        for layer in model.layers if backend.forward_probes else ():
            kind = activation_of(layer)
            if kind not in PROBED_ACTIVATIONS or type(layer).__name__ in RECURRENT_KINDS:
                continue
            if kind not in DEAD_KINDS:
                self._activations.append((layer, kind, state_variable((), "gradwatch_activation")))
            elif (units := _units(layer)) is not None:
                window = (state_variable(units, "gradwatch_unit_max", fill=-np.inf), state_variable((), "gradwatch_rows"))
                self._activations.append((layer, kind, window))
        self._before: list[Any] | None = None
        self._weight_sq: Any = None
        sizes = [(int(np.prod(v.shape)), int(v.shape[-1]) if len(v.shape) else 1) for v in self.variables]
        self._strides = [update_stride(numel, row) for numel, row in sizes]
        self._update_scale = ops.convert_to_tensor(
            np.asarray([numel / sampled_elements(numel, k) for (numel, _), k in zip(sizes, self._strides)] or [1.0], dtype="float32")
        )
        self._step_sq = state_variable(every_n_steps, "gradwatch_step_grad_sq") if backend.step_norms else None  # slot: step % n
        self._steps_from: int | None = None  # the first step whose norm no read has taken (kept from one fit to the next)
        self._compiled_snapshot = backend.compile(self._snapshot)  # one device call instead of an op per variable
        self._compiled_readout = backend.compile(self._readout)
        self._units = max(sum(units for _, _, units in self.unit_kernels), 1)
        # kernels whose units' spread is read: two units or more, all reading the same inputs (no grouped conv)
        self._spread = [(i, layer, units) for i, layer, units in self.unit_kernels if units > 1 and getattr(layers[layer], "groups", 1) == 1]
        self.full_batch = False  # one batch is the whole training set: a dead-unit window is one batch
        self._loss_before: tuple[float, float] | None = None
        self.loss_totals: tuple[float, float] | None = None  # the tracker's (total, count) at the latest read this epoch
        n, dead = len(self.layer_names), sum(kind in DEAD_KINDS for _, kind, _ in self._activations)
        kept = {"grad": n, "unit_grads": self._units} if self.backend.kept() else {}
        lengths = {"weight": n, "spread": len(self._spread), **kept, "dead": 2 * dead, "saturated": len(self._activations) - dead}
        lengths |= {"inputs": 2 if self._inputs else 0, "sequences": sum(int(profile.shape[0]) for _, profile in self._probes.values())}
        lengths |= {"step_grads": every_n_steps if self._step_sq is not None else 0}
        self._layouts = {updates: Layout(lengths | {"update": n if updates else 0}) for updates in (False, True)}  # static: known now

    # -- gradients, inside the train step -----------------------------------------------------
    def install(self, optimizer: Any, *, first_step: int, every_n_steps: int) -> None:
        """Wrap ``optimizer.apply`` so each sampled step's gradient norms are recorded.

        Under ``tf.distribute`` with several replicas the sum over replicas is
        what the optimizer applies, but a sync point cannot sit inside the
        graph ``cond`` that limits the work to sampled steps: the sums Keras
        makes itself (``_all_reduce_sum_gradients``) are recorded instead.
        ``first_step`` is the callback's step number of the coming batch.
        """
        self.loss_totals = None  # a new fit restarts the loss tracker
        self._steps_from = first_step if self._steps_from is None else self._steps_from
        if self._patches.installed:
            return
        layers = [layer for layer, _ in self._probes.values()] + [layer for layer, _, _ in self._activations]
        self._patches.take_over([(optimizer, "apply"), (optimizer, "_all_reduce_sum_gradients"), *((layer, "call") for layer in layers)])
        if self._inputs is not None:
            self._patches.take_over([(self._inputs[0], "call")])
        offset = int(ops.convert_to_numpy(optimizer.iterations)) - first_step
        self.backend.schedule(optimizer, offset=offset, every_n_steps=every_n_steps)
        original_apply = optimizer.apply

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            if _replicas() == 1:
                variables = trainable_variables if trainable_variables is not None else optimizer._trainable_variables
                scale = getattr(optimizer, "loss_scale_factor", None)
                self._record_when_sampled(list(grads), list(variables), scale)
                if self._step_sq is not None:
                    step = ops.cast(optimizer.iterations, "int32") - offset  # before this step's increment
                    self.guard.run(STEP_NORMS, self._note_step_norm, list(grads), list(variables), scale, step)
            return original_apply(grads, trainable_variables)

        self._patches.set(optimizer, "apply", apply)
        if hasattr(optimizer, "_all_reduce_sum_gradients"):  # TensorFlow
            original_reduce = optimizer._all_reduce_sum_gradients

            def all_reduce_sum_gradients(grads_and_vars: Any) -> Any:
                summed = original_reduce(grads_and_vars)
                if _replicas() > 1:
                    self._record_when_sampled([g for g, _ in summed], [v for _, v in summed], None)
                return summed

            self._patches.set(optimizer, "_all_reduce_sum_gradients", all_reduce_sum_gradients)
        for layer, profile in self._probes.values():
            self._patches.set(layer, "call", _probed_call(layer, profile))
        for layer, kind, share in self._activations:
            self._patches.set(layer, "call", self._measured_call(layer, kind, share))
        if self._inputs is not None:
            self._patches.set(self._inputs[0], "call", self._input_call(*self._inputs))

    def uninstall(self) -> bool:
        """Remove the wrappers, leaving the optimizer and layers exactly as ``install`` found them; True if installed."""
        installed = self._patches.installed
        self._patches.restore()
        return installed

    def arm(self, on: bool) -> None:
        """Measure on the coming step or not (on JAX the graph decides from the optimizer's counter)."""
        self.backend.arm(on)

    def _record_when_sampled(self, grads: list[Any], variables: list[Any], scale: float | None) -> None:
        self._on_sampled_steps(RECORDER, lambda: self.backend.keep(*self._measure(grads, variables, scale)))

    def _note_step_norm(self, grads: list[Any], variables: list[Any], scale: Any, step: Any) -> None:
        """Every step: the total squared gradient norm into slot ``step % n`` of the ring. Each gradient is read
        whole, in one pass (a strided read of a few blocks, as updates are measured, costs TensorFlow on CPU
        more than that pass: 83.7 against 64.8 ms a step on the overhead benchmark's MLP)."""
        ring, square_sum = self._step_sq, self.backend.square_sum
        measured = [square_sum(ops.cast(g, "float32")) for g, v in zip(grads, variables) if g is not None and id(v) in self._position]
        if ring is None or not measured:
            return
        total = ops.sum(ops.stack(measured))
        if scale:
            total = total / ops.square(ops.cast(scale, "float32"))
        ring.assign(ops.scatter_update(ring, ops.reshape(step % ring.shape[0], (1, 1)), ops.reshape(total, (1,))))

    def _on_sampled_steps(self, part: str, work: Callable[[], Any]) -> None:
        """Run ``work`` on sampled steps only, the backend's way; a failure disables ``part``."""
        if self.guard.enabled(part):
            self.backend.when_sampled(lambda: self.guard.run(part, work))

    def _measure(self, grads: list[Any], variables: list[Any], scale: float | None) -> tuple[Any, Any]:
        """Squared gradient norm of every variable, and per unit of every Dense/Conv kernel the squared norm
        of its gradient column (zero: the unit got no gradient on this batch)."""
        by_position = {}
        for grad, variable in zip(grads, variables):
            position = self._position.get(id(variable))
            if grad is not None and position is not None:
                grad = ops.cast(grad, "float32")
                by_position[position] = grad / scale if scale else grad
        self._with_grad.update(by_position)
        zero = ops.zeros((), "float32")
        columns = {
            i: self.backend.column_square_sums(ops.reshape(by_position[i], (-1, units))) for i, _, units in self.unit_kernels if i in by_position
        }
        square_sum = self.backend.square_sum  # a kernel's total comes from its column sums: one pass over it
        squares = [
            (ops.sum(columns[i]) if i in columns else square_sum(by_position[i])) if i in by_position else zero for i in range(len(self.variables))
        ]
        per_unit = [columns.get(i, ops.zeros((units,), "float32")) for i, _, units in self.unit_kernels]
        return ops.stack(squares or [zero]), ops.concatenate(per_unit) if per_unit else ops.zeros((1,), "float32")

    def _measured_call(self, layer: Any, kind: str, share: Any) -> Any:
        """``layer.call`` that also measures its output on sampled steps."""
        call = layer.call
        unit_axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1

        def record(output: Any) -> None:
            if kind not in DEAD_KINDS:
                share.assign(_saturated_share(output, kind))
                return
            maxima, rows = share
            units = _units_last(output, unit_axis)
            maxima.assign(ops.maximum(maxima, ops.max(units, axis=0)))
            rows.assign(rows + ops.cast(ops.shape(units)[0], "float32"))

        def measured(*args: Any, **kwargs: Any) -> Any:
            output = call(*args, **kwargs)
            self._on_sampled_steps(ACTIVATIONS, lambda: record(output))
            return output

        return measured

    def _input_call(self, layer: Any, scale: Any) -> Any:
        """``layer.call`` that also measures its input's scale on sampled steps (float inputs only)."""
        call = layer.call

        def measured(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if keras.backend.is_float_dtype(keras.backend.standardize_dtype(getattr(inputs, "dtype", "int32"))):
                x = ops.cast(inputs, "float32")
                self._on_sampled_steps(INPUTS, lambda: scale.assign(ops.stack([ops.mean(ops.abs(x)), ops.std(x)])))
            return call(inputs, *args, **kwargs)

        return measured

    # -- weights and updates, around the step on the host -------------------------------------
    def sync(self) -> None:
        """Bring weights and metrics into the model's variables (JAX ``fit`` keeps them apart between syncs)."""
        self.backend.sync(self._model)

    def begin_sample(self, loss_totals: tuple[float, float] | None = None, *, updates: bool = True) -> None:
        """Before a sampled step: the model's variables brought up to date, then ``snapshot``; the loss
        tracker's totals as the step finds them (``loss_totals``: just read by ``read``, in sync).
        ``updates``: measure the step's update (not where one call runs several steps)."""
        if loss_totals is None:
            self.sync()
        self.snapshot()
        if not updates:
            self._before = None
        self._loss_before = loss_totals or _loss_totals(self._model)

    def snapshot(self) -> None:
        """Before a sampled step, on the device: the weights' squared norms, and a copy of the
        elements the step's update is measured on (a sample of the large ones, see ``gradwatch.blocks``)."""
        self._weight_sq, self._before = self._compiled_snapshot([v.value for v in self.variables])

    def _snapshot(self, values: list[Any]) -> tuple[Any, list[Any]]:
        square_sum = self.backend.square_sum
        return ops.stack([square_sum(v) for v in values]), [ops.copy(_sampled(v, k)) for v, k in zip(values, self._strides)]

    def _update_squares(self, values: list[Any], before: list[Any]) -> Any:
        square_sum = self.backend.square_sum
        return ops.stack([square_sum(_sampled(v, k) - b) for v, k, b in zip(values, self._strides, before)]) * self._update_scale

    def read(self, step: int, *, lr: float | None) -> StepStats:
        """Statistics of the step that just ended: everything reduced on the device in one compiled call,
        then one host read; the loss and the batch's rows from the loss tracker's totals around the step
        (``loss_totals``: as this read left them)."""
        self.sync()
        before, after, since = self._loss_before, _loss_totals(self._model), self.loss_totals
        self._loss_before, self.loss_totals = None, after
        rows = after[1] - before[1] if after and before and after[1] > before[1] else None
        loss = _mean_loss(since, after)
        n, count = len(self.layer_names), len(self.variables)
        limit = ops.convert_to_tensor(0.0 if self.full_batch else float(WINDOW_ROWS))
        values = self._compiled_readout([v.value for v in self.variables], self._before, self._weight_sq, limit)
        parts = self._layouts[self._before is not None].split(ops.convert_to_numpy(values).tolist())  # the one host read
        weight, update = parts.get("weight", []), parts.get("update")
        spread = {layer: value for (_, layer, _), value in zip(self._spread, parts.get("spread", [])) if not math.isnan(value)}
        self._before = self._weight_sq = None
        taken = self.backend.take()  # where the gradient numbers leave the step by themselves (JAX), per variable
        measured: tuple[list[float], Any] | None = (parts["grad"], parts["unit_grads"]) if "grad" in parts else None
        if taken is not None:
            measured = (np.sqrt(np.bincount(self.owners, np.asarray(taken[0], dtype=np.float64)[:count], n)).tolist(), taken[1])
        if not self.guard.enabled(RECORDER):  # its variables still hold the last good sample: not this step's
            measured = None
        grad: list[float] | None = None
        with_grad_layers: set[int] = set()
        if measured is not None and self._with_grad:
            grad = measured[0]
            with_grad_layers = {int(self.owners[i]) for i in self._with_grad}
        zero_units: dict[int, tuple[float, int | None]] = {}
        if measured is not None and self.unit_kernels and self._with_grad:
            zero_units = self._zero_columns(np.asarray(measured[1], dtype=np.float64), rows or 1.0)
        layers = tuple(
            LayerStats(
                name,
                grad_norm=grad[i] if grad is not None and i in with_grad_layers else None,
                weight_norm=weight[i],
                update_norm=update[i] if update is not None else None,
                zero_grad_rows=zero_units[i][0] if i in zero_units else None,
                zero_grad_window=zero_units[i][1] if i in zero_units else None,
                unit_spread=spread.get(i),
            )
            for i, name in enumerate(self.layer_names)
        )
        activations = self._activation_stats(parts.get("dead", []), parts.get("saturated", []))
        scale = parts.get("inputs")
        mean_abs, std = (scale[0], scale[1]) if scale is not None and self.guard.enabled(INPUTS) and all(map(math.isfinite, scale)) else (None, None)
        steps = iter(parts.get("sequences", []))
        profiles = [(name, [next(steps) for _ in range(int(profile.shape[0]))]) for name, (_, profile) in self._probes.items()]
        return StepStats(
            step=step,
            layers=layers,
            loss=None if loss is None else float(loss),
            lr=lr,
            sequences=tuple(SequenceStats(name, tuple(profile)) for name, profile in profiles if self._with_grad),
            activations=activations if self.guard.enabled(ACTIVATIONS) else (),
            input_mean_abs=mean_abs,
            input_std=std,
            batch_rows=int(rows) if rows is not None else None,
            step_grad_norms=self._steps_up_to(step, parts.get("step_grads")),
        )

    def _steps_up_to(self, step: int, ring: list[float] | None) -> tuple[float, ...]:
        """The norms of the steps from the first not yet taken to ``step``, in order (the ring holds the last n)."""
        first, self._steps_from = max(self._steps_from or 0, step + 1 - len(ring or ())), step + 1
        if not ring or not self.guard.enabled(STEP_NORMS):
            return ()
        return tuple(ring[at % len(ring)] for at in range(first, step + 1))

    def _readout(self, values: list[Any], before: list[Any] | None, weight_sq: Any, limit: Any) -> Any:
        """One vector of all a sampled step's statistics, laid out by ``self._layouts``: per layer, the squared
        weight norms before the step (from the snapshot, else now) and update; the units' spread of each kernel
        (see ``_unit_spread``), the gradient numbers kept in variables, the activations (their windows restart
        at ``limit`` rows), the input scale, the time profiles."""
        parts = {"weight": self._per_layer(weight_sq if weight_sq is not None else self._snapshot(values)[0])}
        if before is not None:
            parts["update"] = self._per_layer(self._update_squares(values, before))
        if self._spread:
            parts["spread"] = ops.concatenate([_unit_spread(ops.reshape(values[i], (-1, units))) for i, _, units in self._spread])
        if kept := self.backend.kept():
            parts |= {"grad": self._per_layer(kept[0]), "unit_grads": kept[1]}
        parts["dead"], parts["saturated"] = self._activation_readout(limit)
        if self._inputs is not None:
            parts["inputs"] = self._inputs[1]
        if self._probes:
            parts["sequences"] = ops.concatenate([ops.reshape(profile, (-1,)) for _, profile in self._probes.values()])
        if self._step_sq is not None:
            parts["step_grads"] = self._step_sq
        layout = self._layouts[before is not None]
        return ops.concatenate([ops.reshape(ops.cast(part, "float32"), (-1,)) for part in layout.arrange(parts)])

    def _per_layer(self, squares: Any) -> Any:
        """Per-variable squared norms summed over each layer's variables."""
        return ops.segment_sum(squares[: len(self.variables)], self._owner_ids, num_segments=len(self.layer_names))

    def _activation_stats(self, dead: list[float], saturated: list[float]) -> tuple[ActivationStats, ...]:
        """The saturated share of the sampled batch, or the dead share over each ReLU window so far
        (``None`` window: the whole training set, full-batch)."""
        stats = []
        windows, shares = iter(zip(dead[::2], dead[1::2])), iter(saturated)
        for layer, kind, _ in self._activations:
            if kind not in DEAD_KINDS:
                stats.append(ActivationStats(layer.name, kind, saturated_share=next(shares)))
            elif (window := next(windows))[1] > 0:
                stats.append(ActivationStats(layer.name, kind, dead_share=window[0], window=None if self.full_batch else int(window[1])))
        return tuple(stats)

    def _activation_readout(self, limit: Any) -> tuple[Any, Any]:
        """Per ReLU-like activation its dead share and rows, per other one its saturated share (None: no such
        activation); a window with at least ``limit`` rows starts afresh."""
        dead, saturated, full = [], [], []
        for _, kind, value in self._activations:
            if kind not in DEAD_KINDS:
                saturated.append(ops.cast(value, "float32"))
                continue
            maxima, rows = value
            dead += [ops.mean(ops.cast(maxima <= 0, "float32")), ops.cast(rows, "float32")]
            full.append((maxima, rows, rows >= limit))
        readout = (ops.stack(dead) if dead else None, ops.stack(saturated) if saturated else None)  # new tensors: read before the windows restart
        for maxima, rows, done in full:
            maxima.assign(ops.where(done, ops.full_like(maxima, -np.inf), maxima))
            rows.assign(ops.where(done, ops.zeros_like(rows), rows))
        return readout

    def _zero_columns(self, column_sq: np.ndarray, rows: float) -> dict[int, tuple[float, int | None]]:
        """Share of units whose kernel column got no gradient over a window of ``WINDOW_ROWS`` rows, per layer.

        Column maxima are kept on the host across sampled steps until the window is full.
        """
        shares, start = {}, 0
        for position, layer, units in self.unit_kernels:
            column = column_sq[start : start + units]
            start += units
            if position not in self._with_grad:
                continue
            kept, seen = self._column_window.get(layer, (np.zeros(units), 0.0))
            kept, seen = np.maximum(kept, column), seen + rows
            shares[layer] = (float(np.mean(kept <= 0)), None if self.full_batch else int(seen))
            if seen >= WINDOW_ROWS or self.full_batch:
                self._column_window.pop(layer, None)
            else:
                self._column_window[layer] = (kept, seen)
        return shares


def loss_tracker(model: Any) -> Any:
    """The mean metric that tracks the training loss: Keras' own ``loss``, or where a custom
    ``train_step`` keeps its own, the first one named ``...loss`` (``total_loss``, ``reconstruction_loss``)."""
    means = [m for m in model.metrics if hasattr(m, "total") and hasattr(m, "count")]
    return next((m for m in means if m.name == "loss"), None) or next((m for m in means if m.name.endswith("loss")), None)


def _loss_totals(model: Any) -> tuple[float, float] | None:
    """The running total and count of the loss tracker (a host read: sampled steps only)."""
    tracker = loss_tracker(model)
    if tracker is None:
        return None
    return float(ops.convert_to_numpy(tracker.total)), float(ops.convert_to_numpy(tracker.count))


def _mean_loss(since: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """The mean loss of the steps since the previous read (``since``: the tracker's totals then), as
    ``StepStats.loss`` means on every adapter, from the tracker's totals now (``after``).

    Keras shows a running mean from the epoch start, which hides a loss that
    freezes or climbs; the difference of the running totals is the mean of the
    steps in between. With no read yet this epoch (the tracker restarts with
    each), the mean from the epoch start is that mean.
    """
    if after is None:
        return None
    total, count = after
    if since is not None and count > since[1]:
        return (total - since[0]) / (count - since[1])
    return total / count if count else None


def _units(layer: Any) -> int | None:
    """Number of output units of a layer that applies an activation, where it can be told before fit."""
    for attribute in ("units", "filters"):
        value = getattr(layer, attribute, None)
        if isinstance(value, int):
            return value
    try:
        axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
        return int(layer.output.shape[axis])
    except (AttributeError, ValueError, TypeError, IndexError):
        return None


def _replicas() -> int:
    """How many ``tf.distribute`` replicas run this step in sync (1 outside TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def _sum_over_replicas(tensors: list[Any]) -> list[Any]:
    """The tensors summed over ``tf.distribute`` replicas (inside a replica context), else as they are."""
    if _replicas() == 1:
        return tensors
    import tensorflow as tf

    summed: list[Any] = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tensors)
    return summed


def _time_steps(layer: Any) -> int | None:
    """Sequence length of a recurrent layer with a fixed-length input, else None."""
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        return None
    return int(shape[1]) if len(shape) == 3 and shape[1] else None


def _probed_call(layer: Any, profile: Any) -> Any:
    """``layer.call`` with its input passed through an identity whose gradient records per-time-step norms.

    The identity also takes one of the layer's weights (and gives it a zero
    gradient): a raw data input needs no gradient, and without a trainable
    input the framework would never run the probe's backward.
    """
    call = layer.call
    anchor = layer.trainable_weights[0]

    @ops.custom_gradient  # type: ignore[untyped-decorator]
    def probe(sequence: Any, weight: Any) -> Any:
        def grad(*args: Any, upstream: Any = None) -> Any:
            upstream = args[0] if upstream is None else upstream
            squares = ops.sum(ops.square(ops.cast(upstream, "float32")), axis=(0, 2))
            profile.assign(ops.sqrt(_sum_over_replicas([squares])[0]))  # each replica holds part of the batch
            return upstream, ops.zeros_like(weight)

        return ops.add(sequence, ops.zeros_like(sequence)), grad

    def probed(sequences: Any, *args: Any, **kwargs: Any) -> Any:
        return call(probe(sequences, ops.convert_to_tensor(anchor)), *args, **kwargs)

    return probed


def _units_last(output: Any, unit_axis: int) -> Any:
    """The output as rows × units (units on ``unit_axis``)."""
    output = ops.cast(output, "float32")
    return ops.reshape(ops.moveaxis(output, unit_axis, -1), (-1, output.shape[unit_axis]))


def _saturated_share(output: Any, kind: str) -> Any:
    """Share of sigmoid/tanh outputs in the flat tails, where the local slope is below about 0.01."""
    output = ops.cast(output, "float32")
    low, high = SATURATED_OUTSIDE[kind]
    tail = ops.logical_or(output < low, output > high)
    return ops.mean(ops.cast(tail, "float32"))


def _unit_spread(kernel: Any) -> Any:
    """How far a kernel's units (its columns) are from being copies of each other: the spread of the first
    ``SPREAD_UNITS`` units' weights about their mean over their size; NaN where those weights are all zero."""
    units = ops.cast(kernel[:, :SPREAD_UNITS], "float32")
    spread = ops.sum(ops.square(units - ops.mean(units, axis=1, keepdims=True)))
    return ops.reshape(ops.sqrt(spread / ops.sum(ops.square(units))), (1,))


def _sampled(x: Any, stride: int) -> Any:
    """The elements of ``x`` its update is measured on: all, or every ``stride``-th block (``gradwatch.blocks``)."""
    if stride == 1:
        return x
    flat = ops.reshape(x, (-1,))
    whole = int(flat.shape[0]) // BLOCK * BLOCK
    if whole < int(flat.shape[0]):  # a slice copies the whole tensor: only where a tail must go
        flat = flat[:whole]
    return ops.reshape(flat, (-1, BLOCK))[::stride]


class _Patches:
    """Instance attributes set over objects, and what each one replaced (restored exactly, newest first)."""

    _ABSENT = object()

    def __init__(self) -> None:
        self._replaced: dict[tuple[int, str], tuple[Any, str, Any]] = {}

    @property
    def installed(self) -> bool:
        return bool(self._replaced)

    def take_over(self, targets: list[tuple[Any, str]]) -> None:
        """Remove the wrappers another collector left on these attributes (its ``fit`` never reached ``on_train_end``)."""
        for owner, name in targets:
            earlier = getattr(vars(owner).get(name), "gradwatch_patches", None)
            if isinstance(earlier, _Patches) and earlier is not self:
                earlier.restore()

    def set(self, owner: Any, name: str, value: Callable[..., Any]) -> None:
        """``owner.name = value``; the first time, remember what ``owner``'s own ``name`` was (if any)."""
        self._replaced.setdefault((id(owner), name), (owner, name, vars(owner).get(name, self._ABSENT)))
        value.gradwatch_patches = self  # type: ignore[attr-defined]
        setattr(owner, name, value)

    def restore(self) -> None:
        """Put back every replaced attribute (where there was none, the class's method shows again)."""
        for owner, name, before in reversed(self._replaced.values()):
            if before is self._ABSENT:
                vars(owner).pop(name, None)
            else:
                vars(owner)[name] = before
        self._replaced.clear()

"""Per-layer statistics of a Keras 3 model.

Gradients: the optimizer's ``apply`` is wrapped for the duration of ``fit``;
the wrapper adds graph ops that write each trainable variable's squared
gradient norm (and the share of all-zero kernel columns, i.e. dead units)
into two gradwatch variables, which the callback reads on sampled steps only.
These are the exact gradients of the step; under ``tf.distribute`` they are
summed over the replicas first (the gradients the optimizer applies).
Recurrent layers' ``call`` passes its input through an identity whose custom
gradient records the gradient norm reaching each time step. Weights and update sizes are read on the host
around sampled steps. On the JAX backend the optimizer runs
stateless, so gradients are not read there (weights, updates and loss are).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradwatch.safety import FaultGuard
from gradwatch.stats import LayerStats, SequenceStats, StepStats

from ._keras import keras, ops
from .keras_facts import trainable_layers

UNIT_KINDS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense")
RECURRENT_KINDS = ("SimpleRNN", "LSTM", "GRU")


class KerasCollector:
    """Reads gradient, weight and update statistics of one Keras model."""

    def __init__(self, model: Any, *, guard: FaultGuard) -> None:
        self.guard = guard
        layers = trainable_layers(model)
        self.layer_names = [layer.name for layer in layers]
        self.variables: list[Any] = []
        owners: list[int] = []
        self.unit_kernels: list[tuple[int, int]] = []  # (variable index, layer index) of Dense/Conv kernels
        seen: set[int] = set()
        for index, layer in enumerate(layers):
            for variable in layer.trainable_weights:
                if id(variable) in seen:
                    continue  # shared weights count for the first layer that owns them
                seen.add(id(variable))
                if type(layer).__name__ in UNIT_KINDS and variable is getattr(layer, "kernel", None):
                    self.unit_kernels.append((len(self.variables), index))
                self.variables.append(variable)
                owners.append(index)
        self.owners = np.asarray(owners, dtype=np.int64)
        self.reads_gradients = keras.backend.backend() != "jax"
        # keyed by the Keras variable and by its backend variable (what Keras's all-reduce passes)
        self._position = {id(x): i for i, v in enumerate(self.variables) for x in (v, v.value)}
        self._with_grad: set[int] = set()
        self._grad_sq = _variable(max(len(self.variables), 1), "gradwatch_grad_sq")
        self._flag = _variable((), "gradwatch_sampled")
        self._zero_units = _variable(max(len(self.unit_kernels), 1), "gradwatch_zero_units")
        self._optimizer: Any = None
        self._probes: dict[str, tuple[Any, Any]] = {}  # recurrent layer name -> (layer, per-time-step gradient norms)
        for layer in layers:
            steps = _time_steps(layer)
            if type(layer).__name__ in RECURRENT_KINDS and steps:
                self._probes[layer.name] = (layer, _variable(steps, "gradwatch_time"))
        self._before: list[np.ndarray] | None = None
        self.armed = False  # set through arm(): gradients are measured on sampled steps only

    # -- gradients, inside the train step -----------------------------------------------------
    def install(self, optimizer: Any) -> None:
        """Wrap ``optimizer.apply`` so each step's gradient norms land in gradwatch's variables.

        Under ``tf.distribute`` with several replicas the sum over replicas is
        what the optimizer applies, but a sync point cannot sit inside the
        graph ``cond`` that limits the work to sampled steps: the sums Keras
        makes itself (``_all_reduce_sum_gradients``) are recorded instead.
        """
        if not self.reads_gradients or self._optimizer is not None:
            return
        original_apply = optimizer.apply

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            if _replicas() == 1:
                variables = trainable_variables if trainable_variables is not None else optimizer._trainable_variables
                self._record_when_sampled(list(grads), list(variables), getattr(optimizer, "loss_scale_factor", None))
            return original_apply(grads, trainable_variables)

        optimizer.apply = apply
        if hasattr(optimizer, "_all_reduce_sum_gradients"):  # TensorFlow
            original_reduce = optimizer._all_reduce_sum_gradients

            def all_reduce_sum_gradients(grads_and_vars: Any) -> Any:
                summed = original_reduce(grads_and_vars)
                if _replicas() > 1:
                    self._record_when_sampled([g for g, _ in summed], [v for _, v in summed], None)
                return summed

            optimizer._all_reduce_sum_gradients = all_reduce_sum_gradients
        self._optimizer = optimizer
        for layer, profile in self._probes.values():
            layer.call = _probed_call(layer, profile)

    def uninstall(self) -> None:
        """Remove the wrappers: the instance attributes shadowed the class methods."""
        if self._optimizer is not None:
            for name in ("apply", "_all_reduce_sum_gradients"):
                self._optimizer.__dict__.pop(name, None)
            self._optimizer = None
            for layer, _ in self._probes.values():
                del layer.call

    def _record_when_sampled(self, grads: list[Any], variables: list[Any], scale: float | None) -> None:
        def record() -> Any:
            done = self.guard.run("keras gradient recorder", self._record, grads, variables, scale)
            return ops.zeros((), "float32") if done is None else done

        if keras.backend.backend() == "torch":  # eager: a Python decision per step
            if self.armed:
                record()
        elif self.guard.enabled("keras gradient recorder"):  # a graph decision: norms on sampled steps only
            ops.cond(self._flag > 0, record, lambda: ops.zeros((), "float32"))

    def arm(self, on: bool) -> None:
        """Measure gradients on the coming step(s) or not (a Python flag eagerly, a variable in graphs)."""
        self.armed = on
        if self.reads_gradients and keras.backend.backend() != "torch":
            self._flag.assign(1.0 if on else 0.0)

    def _record(self, grads: list[Any], variables: list[Any], scale: float | None) -> Any:
        by_position = {}
        for grad, variable in zip(grads, variables):
            position = self._position.get(id(variable))
            if grad is not None and position is not None:
                grad = ops.cast(grad, "float32")
                by_position[position] = grad / scale if scale else grad
        self._with_grad.update(by_position)
        zero = ops.zeros((), "float32")
        squares = [ops.sum(ops.square(by_position[i])) if i in by_position else zero for i in range(len(self.variables))]
        self._grad_sq.assign(ops.stack(squares))
        if self.unit_kernels:
            dead = [_zero_column_share(by_position[i]) if i in by_position else zero for i, _ in self.unit_kernels]
            self._zero_units.assign(ops.stack(dead))
        return zero

    # -- weights and updates, around the step on the host -------------------------------------
    def snapshot(self) -> None:
        """Copy the weights on the device before a sampled step (to measure the step's update)."""
        self._before = [ops.copy(v.value) for v in self.variables]

    def read(self, step: int, *, loss: float | None, lr: float | None) -> StepStats:
        """Statistics of the step that just ended: norms reduced on the device, one host read."""
        n = len(self.layer_names)
        weight_sq = [ops.sum(ops.square(ops.cast(v.value, "float32"))) for v in self.variables]
        packed = [ops.stack(weight_sq)]
        if self._before is not None:
            packed.append(ops.stack([ops.sum(ops.square(ops.cast(v.value - b, "float32"))) for v, b in zip(self.variables, self._before)]))
        values = np.asarray(ops.convert_to_numpy(ops.concatenate(packed)), dtype=np.float64)
        weight = np.sqrt(np.bincount(self.owners, values[: len(self.variables)], n))
        update = np.sqrt(np.bincount(self.owners, values[len(self.variables) :], n)) if self._before is not None else None
        self._before = None
        grad: np.ndarray | None = None
        with_grad_layers: set[int] = set()
        if self.reads_gradients and self._with_grad:
            squares = np.asarray(ops.convert_to_numpy(self._grad_sq), dtype=np.float64)[: len(self.variables)]
            grad = np.sqrt(np.bincount(self.owners, squares, n))
            with_grad_layers = {int(self.owners[i]) for i in self._with_grad}
        zero_units: dict[int, float] = {}
        if self.reads_gradients and self.unit_kernels and self._with_grad:
            shares = np.asarray(ops.convert_to_numpy(self._zero_units), dtype=np.float64)
            zero_units = {layer: float(shares[k]) for k, (position, layer) in enumerate(self.unit_kernels) if position in self._with_grad}
        layers = tuple(
            LayerStats(
                name,
                grad_norm=float(grad[i]) if grad is not None and i in with_grad_layers else None,
                weight_norm=float(weight[i]),
                update_norm=float(update[i]) if update is not None else None,
                zero_grad_rows=zero_units.get(i),
            )
            for i, name in enumerate(self.layer_names)
        )
        sequences = tuple(
            SequenceStats(name, tuple(float(v) for v in ops.convert_to_numpy(profile)))
            for name, (_, profile) in self._probes.items()
            if self._with_grad
        )
        return StepStats(step=step, layers=layers, loss=None if loss is None else float(loss), lr=lr, sequences=sequences)


def _variable(shape: int | tuple[()], name: str) -> Any:
    """A float32 gradwatch variable.

    Created outside any ``tf.distribute`` scope on purpose: a mirrored variable
    cannot be assigned inside the graph ``cond`` of a replica (that needs a sync
    point). Every replica writes the same all-reduced values into this one.
    """
    return keras.Variable(np.zeros(shape, "float32"), trainable=False, name=name)


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

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tensors)


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

    @ops.custom_gradient
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


def _zero_column_share(grad: Any) -> Any:
    """Share of output units (last axis of a kernel) whose incoming gradient is all zero."""
    columns = ops.reshape(grad, (-1, grad.shape[-1]))
    return ops.mean(ops.cast(ops.all(ops.equal(columns, 0.0), axis=0), "float32"))

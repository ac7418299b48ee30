"""How the Keras collector works inside the train step: one small strategy per Keras backend.

Three things differ by backend, and only here:

- how a sampled step is told apart inside the step: a Python flag on torch
  (the step runs eagerly), a flag variable and a graph ``cond`` on TensorFlow,
  the optimizer's iteration counter on JAX (whose step is a pure function);
- how the measured gradient numbers leave the step: gradwatch variables, or
  ``jax.debug.callback`` on JAX;
- how the device-side reductions around the step are compiled, and the
  squared-norm kernel they use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._keras import keras, ops


class KerasBackend:
    """The eager backend (torch): a Python flag decides, gradwatch variables keep the numbers."""

    forward_probes = True  # the forward pass can see whether the step is sampled (activations, inputs, time)
    step_norms = True  # the step can write every step's gradient norm into a gradwatch variable

    def __init__(self, variables: int, units: int) -> None:
        self.armed = False
        self._grad_sq = state_variable(max(variables, 1), "gradwatch_grad_sq")
        self._column_sq = state_variable(max(units, 1), "gradwatch_column_sq")  # per unit: squared norm of its gradient column

    def schedule(self, optimizer: Any, *, offset: int, every_n_steps: int) -> None:
        """The sampling schedule, for backends that decide inside the graph (``offset``: iterations at step 0)."""

    def arm(self, on: bool) -> None:
        """Measure on the coming step or not."""
        self.armed = on

    def when_sampled(self, work: Callable[[], Any]) -> None:
        """Run ``work`` (which builds ops) on sampled steps only."""
        if self.armed:
            work()

    def keep(self, squares: Any, columns: Any) -> None:
        """Hand the sampled step's squared gradient norms and per-unit column norms out of the step."""
        self._grad_sq.assign(squares)
        self._column_sq.assign(columns)

    def kept(self) -> list[Any]:
        """The variables ``keep`` writes (read with the step's other statistics); none where they leave otherwise."""
        return [self._grad_sq, self._column_sq]

    def take(self) -> tuple[np.ndarray, np.ndarray] | None:
        """What ``keep`` handed out on the last sampled step (None: nothing), where ``kept`` has no variables."""
        return None

    def sync(self, model: Any) -> None:
        """Bring the weights and metrics into the model's variables before they are read."""

    def square_sum(self, x: Any) -> Any:
        """``sum(x²)`` in float32."""
        return ops.sum(ops.square(ops.cast(x, "float32")))

    def column_square_sums(self, x: Any) -> Any:
        """``sum(x², axis=0)`` of a 2-D float32 ``x``, as a product with a row of ones: a summation down
        the columns of a row-major matrix is a strided reduction, the product reads it in order."""
        return ops.matmul(ops.ones((1, x.shape[0]), "float32"), ops.square(x))[0]

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as one device call where eager ops cost tens of µs each."""
        return fn


class TensorFlowBackend(KerasBackend):
    """TensorFlow: the step is a graph; a flag variable drives a ``cond``, one compiled call per reduction."""

    def __init__(self, variables: int, units: int) -> None:
        super().__init__(variables, units)
        self._flag = state_variable((), "gradwatch_sampled")

    def arm(self, on: bool) -> None:
        if on != self.armed:  # an assignment is an eager op: only when the answer changes
            self._flag.assign(1.0 if on else 0.0)
            self.armed = on

    def when_sampled(self, work: Callable[[], Any]) -> None:
        _cond(self._flag > 0, work)

    def square_sum(self, x: Any) -> Any:
        """TensorFlow's one-pass kernel (``l2_loss`` is half of ``sum(x²)``), as ``tf.linalg.global_norm``
        uses; square-then-sum writes a copy of ``x`` first."""
        import tensorflow as tf

        return 2.0 * tf.nn.l2_loss(tf.cast(x, tf.float32))

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        import tensorflow as tf

        compiled: Callable[..., Any] = tf.function(fn, reduce_retracing=True)
        return compiled


class JaxBackend(KerasBackend):
    """JAX: the step is a pure function, so the graph tests the optimizer's iteration counter against the
    schedule and the sampled branch sends the numbers to the host. The forward pass cannot see that
    counter: activations, input scale and time profiles are not measured."""

    forward_probes = False
    step_norms = False

    def __init__(self, variables: int, units: int) -> None:
        self.armed = False
        self._schedule: tuple[Any, int, int] = (None, 0, 1)  # (optimizer, iterations at step 0, every_n_steps)
        self._received: tuple[np.ndarray, np.ndarray] | None = None

    def schedule(self, optimizer: Any, *, offset: int, every_n_steps: int) -> None:
        self._schedule = (optimizer, offset, every_n_steps)

    def when_sampled(self, work: Callable[[], Any]) -> None:
        """``Session.should_sample`` of this step, computed from the traced iteration counter."""
        optimizer, offset, n = self._schedule
        step = ops.cast(optimizer.iterations, "int32") - offset
        _cond(ops.logical_or(step % n == 0, ops.logical_and(step < n, ops.bitwise_and(step, step - 1) == 0)), work)

    def keep(self, squares: Any, columns: Any) -> None:
        import jax

        def receive(squares: Any, columns: Any) -> None:
            self._received = (np.asarray(squares), np.asarray(columns))

        jax.debug.callback(receive, squares, columns)

    def kept(self) -> list[Any]:
        return []

    def take(self) -> tuple[np.ndarray, np.ndarray] | None:
        received, self._received = self._received, None
        return received

    def sync(self, model: Any) -> None:
        """JAX ``fit`` keeps weights and metrics outside the model's variables between syncs."""
        model.jax_state_sync()

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        return jax.jit(fn)


def for_current(variables: int, units: int) -> KerasBackend:
    """The strategy of the backend Keras runs on."""
    kinds = {"tensorflow": TensorFlowBackend, "jax": JaxBackend}
    return kinds.get(keras.backend.backend(), KerasBackend)(variables, units)


def state_variable(shape: int | tuple[()], name: str, fill: float = 0.0) -> Any:
    """A float32 gradwatch variable.

    Created outside any ``tf.distribute`` scope on purpose: a mirrored variable
    cannot be assigned inside the graph ``cond`` of a replica (that needs a sync
    point). Every replica writes the same all-reduced values into this one.
    """
    return keras.Variable(np.full(shape, fill, "float32"), trainable=False, name=name)


def _cond(sampled: Any, work: Callable[[], Any]) -> None:
    def branch() -> Any:
        work()
        return ops.zeros((), "float32")

    ops.cond(sampled, branch, lambda: ops.zeros((), "float32"))

"""Plain PyTorch: ``watch()`` and the ``Watcher`` it makes, which follows a training loop's steps.

Users import both from ``gradwatch.integrations.pytorch``, whose docstring shows the loop.
"""

from __future__ import annotations

import atexit
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gradwatch.options import Framework, OptionArgs, takes_options
from gradwatch.report import Report
from gradwatch.safety import warn
from gradwatch.session import Session

from ._torch import ModelHook, is_compiling, torch
from .torch_cycle import TorchCycle
from .torch_optimizers import OptimizerBinding, hookable, trains

if TYPE_CHECKING:
    from typing_extensions import Unpack

_WATCHERS: weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref[Watcher]] = weakref.WeakKeyDictionary()  # model -> its watcher


@atexit.register
def _close_forgotten_watchers() -> None:
    """At interpreter exit, close every watcher the script never closed: its report and summary are not lost."""
    for ref in list(_WATCHERS.values()):
        watcher = ref()
        if watcher is not None and watcher.session.final is None:
            warn("gradwatch: a watcher was never closed; it is closed at exit (use `with watch(...)`, or call watcher.close())")
            watcher.session.note("closed at interpreter exit: the script never closed the watcher")
            watcher.guard.run("close at exit", watcher.close)


class Watcher:
    """Watches one model (and the optimizer that trains it) until ``close()``; made by ``watch()``,
    whose docstring lists the options."""

    def __init__(self, model: torch.nn.Module, optimizer: Any = None, **options: Unpack[OptionArgs]) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
        if next(model.parameters(), None) is None:
            raise ValueError(f"watch() got a {type(model).__name__} with no parameters: there is nothing to train; pass the model you train")
        optimizer, handwritten = hookable(optimizer)
        if optimizer is not None and not trains(optimizer, model):
            raise ValueError("the optimizer trains none of the model's parameters: pass the one that steps this model, or None")
        self.session = Session(Framework.PYTORCH, **options)
        if handwritten:
            self.session.note(f"{handwritten} is not a torch.optim.Optimizer: each step ends at watcher.step(), as for an update by hand")
        self.guard = self.session.guard
        self.model = model
        self.cycle = TorchCycle(model, self.session)
        earlier = _WATCHERS[self.cycle.model]() if self.cycle.model in _WATCHERS else None
        if earlier is not None and earlier.session.final is None:  # a notebook cell run again, say
            warn("gradwatch: this model was already watched; the earlier watcher is closed (one watcher per model)")
            earlier.session.quiet()
            earlier.close()
        _WATCHERS[self.cycle.model] = weakref.ref(self)
        self.global_step = 0
        self._pending = False  # an optimizer step ran and step() has not been called since
        self._ends_at_optimizer = False  # the loop does not call step() after the optimizer's: each step ends with it
        self._called_early = False  # step() came before this step's optimizer step
        self._forward_since_call = False  # the model ran since that call (gradient accumulation); if not, step() sits early
        self._handwritten = handwritten is not None
        self._ended_any = False  # a step of this watcher has ended
        self._undecided = False  # a first step() before any optimizer step, the weights untouched: see ``step``
        self._calls = 0  # calls of step(): many with no optimizer step means optimizer.step() is missing
        self._versions = [p._version for p in self.cycle.collector.params]  # the weights' versions before the first step
        self.on_stop = "stop requested: the loop ends where it checks watcher.should_stop"  # what stop_on does here
        self._forward_hook = self.cycle.model.register_forward_pre_hook(ModelHook(self._forward))
        self.binding = OptimizerBinding(self.cycle.model, self.guard, self._pre_hook, self._post_hook, self._bound)
        if optimizer is not None:
            self.binding.bind(optimizer)
        self._start_step()

    @property
    def should_stop(self) -> bool:
        """True once a finding reached ``stop_on``: end the training loop (``if watcher.should_stop: break``)."""
        return self.session.stop_requested

    @property
    def latest(self) -> dict[str, float]:
        """The latest sample's scalars for an experiment logger (per layer too with ``log_layers=True``)."""
        return self.session.latest

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer measured: the one given, else the latest that trains the model."""
        return self.binding.optimizer

    def _bound(self, optimizer: torch.optim.Optimizer, moved: bool) -> None:
        if self._undecided:  # step() came before the first optimizer step: it sits early
            self._undecided, self._called_early, self._forward_since_call = False, True, False
        if moved:  # a second training stage: its first step is not measured
            if self._pending:
                self._finish()
            step = self.global_step
            self.global_step += 1
            self.session.note(
                f"from step {step} the model was trained by another optimizer ({type(optimizer).__name__}); "
                f"step {step} was not measured, the steps after it were"
            )
            self.cycle.collector.discard()
        self.cycle.bind([optimizer])
        if moved:
            self._start_step()

    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._pending:  # step() was not called after the last optimizer step: end steps at the optimizer's
            self._finish()
            self._ends_at_optimizer = True
        elif self._called_early and not self._forward_since_call:  # step(loss) between backward and the optimizer
            self._ends_at_optimizer = True
        self._called_early = False
        self.cycle.before_step(self.global_step)

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.global_step += 1
        self._pending = True
        if self._ends_at_optimizer:  # before the next forward, so that it and its backward are measured as the next step
            self._finish()

    def _forward(self, module: torch.nn.Module, args: Any) -> None:
        self._forward_since_call = True
        if not is_compiling() and self._undecided:  # (a traced hook neither reads the flag nor ends a step)
            self._end_update_by_hand()

    def _finish(self) -> None:
        self._pending, self._ended_any = False, True
        asked = self.session.stop_requested
        self.cycle.end_step(self.global_step - 1)
        if self.session.stop_requested and not asked:
            self.session.stop(self.on_stop)  # says why; the loop ends on ``should_stop``
        self._start_step()

    def _start_step(self) -> None:
        self.cycle.begin_step(self.global_step)
        self.cycle.arm_backward(self.global_step, full=self.optimizer is None)

    def step(self, loss: torch.Tensor | float | None = None) -> None:
        """Hand over the step's loss (a tensor is never synced here); after the optimizer step, end the step.

        The call may also come before ``backward()`` or ``optimizer.step()``, or once
        per micro-batch: steps then end at the optimizer's. Without an optimizer,
        the loop is taken to update the weights by hand and this call ends the step;
        only a first call that finds the weights untouched, with no optimizer seen yet,
        waits: an optimizer stepping next makes it an early call, the next forward,
        ``step()`` or ``close()`` an update by hand (``p.data -= ...`` leaves no trace).
        """
        self._calls += 1
        if self._undecided:
            self._end_update_by_hand()
        if loss is not None:
            self.cycle.add_loss(loss)
        if self._pending:
            self._finish()
        elif self.optimizer is not None:
            self._called_early, self._forward_since_call = True, False
        elif self._handwritten or self._ended_any or self._updated():
            self._end_update_by_hand()
        else:
            self._undecided = True

    def _updated(self) -> bool:
        """Whether the weights changed in place since watching began (an update by hand, ``p -= lr * p.grad``)."""
        return [p._version for p in self.cycle.collector.params] != self._versions

    def _end_update_by_hand(self) -> None:
        """End a step whose weights the loop updated itself."""
        self._undecided = False
        self.cycle.after_manual_update()
        self.global_step += 1
        self._finish()

    def report(self) -> Report:
        """The diagnosis so far (after ``close()``: the final report)."""
        return self.session.report(self.global_step + self._undecided)

    def close(self) -> Report:
        """Remove every hook, print the console report, write the JSON summary; returns the report."""
        if self.session.final is None:
            if self._undecided:
                self._end_update_by_hand()
            if self._pending:
                self._finish()
            self.binding.remove()
            self._forward_hook.remove()
            self.cycle.final_sample(self.global_step)
            unseen = "no training step was seen: call watcher.step(loss) once per step (or step an optimizer)"
            if self._calls and self.optimizer is not None:
                unseen = (
                    f"the loop ran {self._calls} steps but the optimizer never stepped, so the weights never changed: "
                    "optimizer.step() is missing from the loop"
                )
            self.cycle.close(self.global_step, unseen=unseen)
        return self.session.report()

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step + self._undecided, "monitor": self.session.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step, self._undecided = int(state["global_step"]), False
        self.session.load_state_dict(state["monitor"])
        self.cycle.begin_step(self.global_step)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@takes_options
def watch(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, **options: Unpack[OptionArgs]) -> Watcher:
    """Start diagnosing ``model``'s training.

    Args:
        model: the module being trained (DDP, DataParallel and ``torch.compile``
            wrappers are seen through).
        optimizer: the optimizer that steps it; None binds to the first one that
            does (it may be created later). Loops that update the weights by hand,
            or with an optimizer class of their own (not a ``torch.optim.Optimizer``),
            call ``watcher.step(loss)`` after each update.
        **options: ``gradwatch.Options``' keywords, the same for every adapter:
            ``summary_path``, ``every_n_steps`` (default 20), ``stop_on`` (then end
            your loop once ``watcher.should_stop``), ``warn_on``, ``print_report``,
            ``log_layers`` (per-layer values in ``watcher.latest``), ``detectors``,
            ``history_size``, ``autosave_every_n_steps``, ``strict``.

    Returns:
        A ``Watcher``; use it as a context manager, or call ``close()`` at the end.

    Raises:
        TypeError: ``model`` is not a module, or ``optimizer`` has no ``step()``.
        ValueError: ``model`` has no parameters, or ``optimizer`` trains none of them.
        gradwatch.options.OptionError: an option is out of range (one line naming it).

    Example:
        >>> with watch(model, optimizer, summary_path="gradwatch.json") as watcher:
        ...     for x, y in loader:
        ...         loss = loss_fn(model(x), y)
        ...         optimizer.zero_grad(); loss.backward(); optimizer.step()
        ...         watcher.step(loss)
    """
    return Watcher(model, optimizer, **options)


__all__ = ["Watcher", "watch"]

"""What ``gradwatch run`` does inside the script's process: find what it trains and watch it as the drop-in would.

Each framework is patched only once the script imports it (an import hook on
``sys.meta_path`` waits for the module that defines the class to patch):

- PyTorch (``torch``): global registration hooks note which modules hold
  which (the top modules: those no other module holds); when the first
  ``torch.optim`` optimizer is made, the top module holding the most of its
  weights is watched at once, as the drop-in would be (``watch(model,
  optimizer)`` before the first forward, so step 0 is measured whole), but
  silently: a candidate. Global forward hooks note the root modules (those
  called while no other module's forward runs); a wrapped ``Tensor.backward``
  sees the first backward of a scalar loss and, before it runs, confirms the
  candidate if it holds as many of the weights the loss reaches as any root
  module; otherwise the candidate is dropped without a trace and the root
  module holding the most of them is watched (``watch(model)``, bound to the
  optimizer at its first step). The forward and registration hooks are then
  removed; each later scalar backward hands its loss to the watcher
  (``watcher.step(loss)``, which may come before ``optimizer.step()``).
  A script that watches a model itself (the candidate is dropped before its
  ``watch()`` runs), and backward passes and optimizers inside a Lightning,
  Hugging Face or Keras fit, are left alone.
- Lightning (``Trainer.__init__``), Hugging Face (``Trainer.__init__``) and
  Keras (``Model.fit``): their ``GradWatchCallback`` is added unless the
  script already gave one.

One watch per process: ``install()`` called again (``python -m gradwatch.run``
in a process the environment switch already watches) returns the one running.
Under the environment switch (``at_exit=True``) the watch is finished at
interpreter exit, before ``watch()``'s own handler for forgotten watchers.

Every patch calls the framework's own code first and unchanged; gradwatch's
part runs in a guard that warns once and switches that part off.
"""

from __future__ import annotations

import atexit
import functools
import importlib.machinery
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast


def warn(message: str) -> None:
    """gradwatch's warning (imported only when one is raised: ``gradwatch run`` starts without the core)."""
    from gradwatch.safety import warn as gradwatch_warn

    gradwatch_warn(message)


# The module that defines each class patched, and what to do once it is imported.
TORCH, LIGHTNING, PL, HF, KERAS, DROP_IN = (
    "torch",
    "lightning.pytorch.trainer.trainer",
    "pytorch_lightning.trainer.trainer",
    "transformers.trainer",
    "keras.src.models.model",
    "gradwatch.integrations.torch_watch",
)


FINDING = "finding the model"
EARLY = "watching the model at its optimizer"
MISSES = 3  # backward passes that find no model before gradwatch run stops looking (the graph walk is not free)


class AutoWatch:
    """The watch of one ``gradwatch run``: the patches, the watchers made, and their summary paths."""

    def __init__(self, *, summary_path: str | None = None, every_n_steps: int | None = None, at_exit: bool = False, **others: Any) -> None:
        self.summary_path = summary_path  # None: gradwatch-<script name>.json in the cwd, named when the first model is watched
        self.every_n_steps = every_n_steps
        self.others = others  # the other watch() options given (stop_on, warn_on, ...): every watcher gets them
        self.at_exit = at_exit
        self.finished = False
        self.failed: set[str] = set()
        self.watchers: list[Any] = []  # PyTorch watchers made here, closed at finish()
        self._paths_given = 0
        self._inside_fit = 0  # a Lightning, Hugging Face or Keras fit runs: its callback watches, not the torch hooks
        self._undo: list[Callable[[], None]] = []
        self._torch: _TorchHooks | None = None
        self._finder = _ImportHook(
            {
                TORCH: self._patch_torch,
                LIGHTNING: self._patch_lightning,
                PL: self._patch_lightning,
                HF: self._patch_transformers,
                KERAS: self._patch_keras,
                DROP_IN: self._patch_drop_in,
            }
        )

    # -- bookkeeping ---------------------------------------------------------------------------
    def guarded(self, part: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, or None after a warning (once per part) where gradwatch's own code fails."""
        if part in self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.failed.add(part)
            warn(f"gradwatch run: {part} failed and is switched off ({type(exc).__name__}: {exc}); the script goes on unchanged")
            return None

    def next_summary_path(self) -> str:
        """The summary path for the next model watched: the one given, then ``-2``, ``-3`` ... beside it."""
        self._paths_given += 1
        if self.summary_path is None:
            self.summary_path = default_summary_path()
        if self._paths_given == 1:
            return self.summary_path
        path = Path(self.summary_path)
        return str(path.with_name(f"{path.stem}-{self._paths_given}{path.suffix}"))

    def options(self, *, default_every: int | None) -> dict[str, Any]:
        every = self.every_n_steps if self.every_n_steps is not None else default_every
        options: dict[str, Any] = {**self.others, "summary_path": self.next_summary_path()}
        if every is not None:
            options["every_n_steps"] = every
        return options

    def adopt(self, watcher: Any) -> None:
        """A PyTorch watcher made here: closed at ``finish()``."""
        self.watchers.append(watcher)
        watcher.on_stop = "gradwatch run cannot end a plain PyTorch loop from outside, so it goes on"
        if self.at_exit:  # atexit runs handlers last in, first out: ours again before watch()'s forgotten-watcher warning
            atexit.unregister(self.finish)
            atexit.register(self.finish)

    def start(self) -> None:
        self._finder.start(self)
        if self.at_exit:
            atexit.register(self.finish)

    def finish(self) -> None:
        """Close the watchers made here (report printed, summary written), then undo every patch; once."""
        global _ACTIVE
        if self.finished:
            return
        self.finished = True
        if _ACTIVE is self:
            _ACTIVE = None
        self._finder.stop()
        if self._torch is not None:
            self.guarded("dropping the candidate", self._torch.drop_candidate)
        for watcher in self.watchers:
            if watcher.session.final is None:
                self.guarded("closing a watcher", watcher.close)
        for undo in reversed(self._undo):
            self.guarded("undoing a patch", undo)
        self._undo.clear()

    def _patch(self, owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        own = name in owner.__dict__  # else inherited: undone by deleting the replacement
        original = owner.__dict__[name] if own else getattr(owner, name)
        replacement = functools.update_wrapper(make(original), original)  # same name, docs and signature (__wrapped__)
        setattr(owner, name, replacement)
        self._undo.append(lambda: setattr(owner, name, original) if own else delattr(owner, name))

    def _fit(self, original: Callable[..., Any], before: Callable[..., dict[str, Any] | None] | None = None) -> Callable[..., Any]:
        """``original`` run with the callback-driven flag set (so torch hooks stay out of the way)."""
        auto = self

        def fit(this: Any, *args: Any, **kwargs: Any) -> Any:
            if before is not None:
                kwargs = auto.guarded("adding the callback", before, this, args, kwargs) or kwargs
            if auto._torch is not None and not auto._inside_fit:  # an optimizer made before the fit: its callback watches
                auto.guarded("dropping the candidate", auto._torch.drop_candidate)
            auto._inside_fit += 1
            try:
                return original(this, *args, **kwargs)
            finally:
                auto._inside_fit -= 1

        return fit

    # -- PyTorch -------------------------------------------------------------------------------
    def _patch_torch(self, module: ModuleType) -> None:
        if self._torch is None:
            self._torch = _TorchHooks(self)
            self._undo.append(self._torch.remove)

    def _patch_drop_in(self, module: ModuleType) -> None:
        """The script's own ``watch()``: the candidate of the same model steps aside first, without a trace."""
        auto = self

        def init(original: Callable[..., Any]) -> Callable[..., Any]:
            def __init__(this: Any, *args: Any, **kwargs: Any) -> None:
                hooks = auto._torch
                if hooks is not None and not hooks.making:
                    auto.guarded("dropping the candidate", hooks.drop_candidate, stop=True)
                original(this, *args, **kwargs)

            return __init__

        self._patch(module.Watcher, "__init__", init)

    # -- Lightning -----------------------------------------------------------------------------
    def _patch_lightning(self, module: ModuleType) -> None:
        trainer = module.Trainer
        auto = self

        def init(original: Callable[..., Any]) -> Callable[..., Any]:
            def __init__(this: Any, *args: Any, **kwargs: Any) -> None:
                kwargs = auto.guarded("adding the Lightning callback", auto._lightning_callbacks, kwargs) or kwargs
                original(this, *args, **kwargs)

            return __init__

        self._patch(trainer, "__init__", init)
        for name in ("fit", "_run"):  # _run: also where a spawned rank (strategy="ddp_spawn") starts, without fit
            if hasattr(trainer, name):
                self._patch(trainer, name, lambda original: self._fit(original))

    def _lightning_callbacks(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from .lightning import GradWatchCallback

        given = kwargs.get("callbacks")
        callbacks = [] if given is None else list(given) if isinstance(given, Sequence) else [given]
        if any(isinstance(c, GradWatchCallback) for c in callbacks):
            return kwargs
        callbacks.append(GradWatchCallback(**self.options(default_every=None)))
        return {**kwargs, "callbacks": callbacks}

    # -- Hugging Face --------------------------------------------------------------------------
    def _patch_transformers(self, module: ModuleType) -> None:
        trainer = module.Trainer
        auto = self

        def init(original: Callable[..., Any]) -> Callable[..., Any]:
            def __init__(this: Any, *args: Any, **kwargs: Any) -> None:
                original(this, *args, **kwargs)
                auto.guarded("adding the Transformers callback", auto._transformers_callback, this)

            return __init__

        self._patch(trainer, "__init__", init)
        self._patch(trainer, "train", lambda original: self._fit(original))

    def _transformers_callback(self, trainer: Any) -> None:
        from .transformers import GradWatchCallback

        if any(isinstance(c, GradWatchCallback) for c in trainer.callback_handler.callbacks):
            return
        trainer.add_callback(GradWatchCallback(**self.options(default_every=None)))

    # -- Keras ---------------------------------------------------------------------------------
    def _patch_keras(self, module: ModuleType) -> None:
        model = module.Model
        self._keras_callbacks: dict[int, Any] = {}  # id(model) -> its callback, kept across fit calls
        self._patch(model, "fit", lambda original: self._fit(original, self._keras_fit_arguments))

    def _keras_fit_arguments(self, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        from .keras import GradWatchCallback

        if len(args) > 5:  # callbacks given by position (x, y, batch_size, epochs, verbose, callbacks): left as they are
            return None
        given = kwargs.get("callbacks")
        if _has(given, GradWatchCallback):
            return None
        callback = self._keras_callbacks.get(id(model))
        if callback is None:
            callback = self._keras_callbacks[id(model)] = GradWatchCallback(**self.options(default_every=20))
        callbacks = [] if given is None else list(given)
        callbacks.append(callback)
        return {**kwargs, "callbacks": callbacks}


def _has(callbacks: Any, kind: type) -> bool:
    if callbacks is None:
        return False
    items = list(callbacks) if isinstance(callbacks, (list, tuple)) else list(getattr(callbacks, "callbacks", []))
    return any(isinstance(c, kind) for c in items)


class _TorchHooks:
    """PyTorch's global hooks: root modules by forward calls; at the first backward of a scalar loss, the model it trains."""

    def __init__(self, auto: AutoWatch) -> None:
        import torch
        from torch.nn.modules import module as modules

        self.auto = auto
        self.torch = torch
        self.roots: weakref.WeakValueDictionary[int, torch.nn.Module] = weakref.WeakValueDictionary()  # id -> root module called
        self.tops: weakref.WeakValueDictionary[int, torch.nn.Module] = weakref.WeakValueDictionary()  # id -> module none holds
        self.held: weakref.WeakValueDictionary[int, torch.nn.Module] = weakref.WeakValueDictionary()  # id -> module some holds
        self.candidate: Any = None  # the watcher made at the first optimizer, until the first backward confirms it
        self.making = False  # gradwatch run itself is calling watch()
        self._depth = threading.local()
        self.searching = True  # no model chosen yet (and the script watches none itself)
        self._misses = 0  # backward passes whose loss reached no root module's weights
        self._forward_handles = [
            modules.register_module_forward_pre_hook(self._forward_pre),
            modules.register_module_forward_hook(self._forward_post, always_call=True),
        ]
        registration = getattr(modules, "register_module_module_registration_hook", None)
        parameters = getattr(modules, "register_module_parameter_registration_hook", None)
        if registration is not None and parameters is not None:
            self._forward_handles += [registration(self._module_registered), parameters(self._parameter_registered)]
            self._optimizer_init: Callable[..., None] = torch.optim.Optimizer.__init__

            def __init__(this: Any, *args: Any, **kwargs: Any) -> None:
                hooks._optimizer_init(this, *args, **kwargs)
                if hooks.searching and hooks.candidate is None and not hooks.auto._inside_fit and EARLY not in hooks.auto.failed:
                    try:
                        hooks._watch_early(this)
                    except Exception:  # no warning: the first backward looks for the model again, and warns if it fails too
                        hooks.auto.failed.add(EARLY)

            hooks = self
            functools.update_wrapper(__init__, self._optimizer_init)
            setattr(torch.optim.Optimizer, "__init__", __init__)  # noqa: B010 (a method assigned: setattr keeps the type checker out)
        self._backward: Callable[..., Any] = torch.Tensor.backward
        hooks = self

        def backward(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            if hooks.searching and not hooks.auto._inside_fit:
                hooks.auto.guarded(FINDING, hooks._search, tensor)
                if FINDING in hooks.auto.failed:
                    hooks.auto.guarded("dropping the candidate", hooks.drop_candidate, stop=True)
            result = hooks._backward(tensor, *args, **kwargs)
            if hooks.auto.watchers and not hooks.auto._inside_fit:
                hooks.auto.guarded("reading the loss", hooks._loss, tensor)
            return result

        setattr(backward, "__wrapped__", self._backward)  # noqa: B010
        backward.__doc__ = self._backward.__doc__
        setattr(torch.Tensor, "backward", backward)  # noqa: B010
        self._scaled: tuple[Any, Any] | None = None  # (a weak reference to the loss GradScaler scaled last, the loss before scaling)
        scaler = getattr(getattr(torch, "amp", None), "GradScaler", None)
        self._scale: Callable[..., Any] | None = scaler.scale if scaler is not None else None
        if scaler is not None:
            original_scale: Callable[..., Any] = scaler.scale

            def scale(this: Any, outputs: Any) -> Any:
                result = original_scale(this, outputs)
                if hooks.auto.watchers and isinstance(outputs, torch.Tensor) and isinstance(result, torch.Tensor) and outputs.dim() == 0:
                    hooks._scaled = (weakref.ref(result), outputs)  # the watcher gets the loss, not the loss times the AMP scale
                return result

            setattr(scale, "__wrapped__", self._scale)  # noqa: B010
            setattr(scaler, "scale", scale)  # noqa: B010

    def remove(self) -> None:
        self._stop_tracking()
        if hasattr(self, "_optimizer_init"):
            setattr(self.torch.optim.Optimizer, "__init__", self._optimizer_init)  # noqa: B010
        setattr(self.torch.Tensor, "backward", self._backward)  # noqa: B010
        if self._scale is not None:
            setattr(self.torch.amp.GradScaler, "scale", self._scale)  # noqa: B010

    def _stop_tracking(self) -> None:
        self.searching = False
        for handle in self._forward_handles:
            handle.remove()
        self._forward_handles = []
        self.tops.clear()
        self.held.clear()

    # -- the model, at its optimizer --------------------------------------------------------------
    def _module_registered(self, parent: Any, name: str, child: Any) -> None:
        self._parameter_registered(parent, name, None)
        if child is not None:
            self.held[id(child)] = child
            self.tops.pop(id(child), None)

    def _parameter_registered(self, module: Any, name: str, param: Any) -> None:
        if id(module) not in self.held and id(module) not in self.tops:
            self.tops[id(module)] = module

    def _watch_early(self, optimizer: Any) -> None:
        """Watch the top module holding the most of the first optimizer's weights, silently until confirmed."""
        from .torch_watch import _WATCHERS, watch

        if any((ref() is not None and ref().session.final is None) for ref in list(_WATCHERS.values())):  # type: ignore[union-attr]
            return  # the script watches a model itself
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"] if p.requires_grad}
        best, best_count = None, 0
        for module in list(self.tops.values()):
            count = sum(1 for p in module.parameters() if id(p) in stepped)
            if count > best_count:
                best, best_count = module, count
        if best is None:
            return
        self.making = True
        try:
            watcher = watch(best, optimizer, **self.auto.options(default_every=None))
        except Exception:
            self.auto._paths_given -= 1  # the summary path stays for the model watched instead
            raise
        finally:
            self.making = False
        watcher.session.set_main(False)  # no warning, report or summary until confirmed
        self.candidate = watcher

    def drop_candidate(self, *, stop: bool = False) -> None:
        """Close the candidate without a trace (the script watches, a fit's callback watches, or another model trains)."""
        watcher, self.candidate = self.candidate, None
        if watcher is not None:
            self.auto._paths_given -= 1  # its summary path goes to the model watched instead
            watcher.close()
        if stop:
            self._stop_tracking()

    def _confirm(self, trained: set[int], best_count: int) -> bool:
        """Keep the candidate where it holds as many of the weights the loss reaches as any root module."""
        watcher = self.candidate
        count = sum(1 for p in watcher.model.parameters() if id(p) in trained)
        if count == 0 or count < best_count:
            return False
        from . import torch_distributed

        self.candidate = None
        watcher.session.set_main(torch_distributed.is_main())
        self.auto.adopt(watcher)
        return True

    # -- roots ------------------------------------------------------------------------------------
    def _forward_pre(self, module: Any, args: Any) -> None:
        depth = getattr(self._depth, "n", 0)
        if depth == 0 and not self.auto._inside_fit:
            self.roots[id(module)] = module
        self._depth.n = depth + 1

    def _forward_post(self, module: Any, args: Any, output: Any) -> None:
        self._depth.n = max(0, getattr(self._depth, "n", 1) - 1)

    # -- the model, at the first backward of a scalar loss ----------------------------------------
    def _search(self, loss: Any) -> None:
        if not isinstance(loss, self.torch.Tensor) or loss.dim() != 0 or loss.grad_fn is None:
            return
        from .torch_watch import _WATCHERS, watch

        candidate = self.candidate
        if any((ref() is not None and ref() is not candidate and ref().session.final is None) for ref in list(_WATCHERS.values())):  # type: ignore[union-attr]
            self.drop_candidate(stop=True)  # the script watches its model itself: gradwatch run stays out of the way
            return
        trained = _leaves(loss)
        model, best_count = self._model_of(trained) if trained else (None, 0)
        if candidate is not None:
            if self._confirm(trained, best_count):
                self._stop_tracking()
                return
            self.drop_candidate()
        if model is None:
            self._misses += 1
            if self._misses == MISSES:
                self._stop_tracking()
                warn(f"gradwatch run: the first {MISSES} losses backpropagated reach no module called as model(x); nothing is watched")
            return
        self._stop_tracking()
        self.auto.adopt(watch(model, None, **self.auto.options(default_every=None)))  # binds to the optimizer at its first step

    def _model_of(self, trained: set[int]) -> tuple[Any, int]:
        """The root module holding the most of the weights the loss reaches (the first called on a tie), and how many."""
        best, best_count = None, 0
        for module in list(self.roots.values()):
            count = sum(1 for p in module.parameters() if id(p) in trained)
            if count > best_count:
                best, best_count = module, count
        inner = getattr(best, "_forward_module", None)  # Lightning Fabric's wrapper: the user's own module inside, as they name its layers
        return (inner if isinstance(inner, self.torch.nn.Module) else best), best_count

    # -- the loss ---------------------------------------------------------------------------------
    def _loss(self, tensor: Any) -> None:
        if len(self.auto.watchers) != 1 or not isinstance(tensor, self.torch.Tensor) or tensor.dim() != 0 or tensor.grad_fn is None:
            return
        watcher = self.auto.watchers[0]
        if watcher.session.final is None:
            scaled = self._scaled
            unscaled = scaled[1] if scaled is not None and scaled[0]() is tensor else None
            watcher.step(unscaled if unscaled is not None else tensor)  # as the drop-in hands it: its graph names the loss function


def _leaves(loss: Any) -> set[int]:
    """The ids of the weights a loss's graph reaches (its ``AccumulateGrad`` nodes)."""
    found: set[int] = set()
    seen: set[int] = set()
    todo = [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.add(id(variable))
        todo.extend(next_node for next_node, _ in node.next_functions)
    return found


class _ImportHook:  # a meta path finder (importlib.abc is not imported: it costs startup time)
    """Runs ``patches[name](module)`` once module ``name`` has been imported (at once where it already is)."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self.patches = dict(patches)
        self.auto: AutoWatch | None = None

    def start(self, auto: AutoWatch) -> None:
        self.auto = auto
        for name in list(self.patches):
            if name in sys.modules:
                self._apply(name, sys.modules[name])
        if self.patches:
            sys.meta_path.insert(0, self)

    def stop(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def _apply(self, name: str, module: ModuleType) -> None:
        patch = self.patches.pop(name, None)
        if patch is not None and self.auto is not None:
            self.auto.guarded(f"watching {name.split('.')[0]}", patch, module)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.patches:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader: Any = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        hook = self

        class Loader:
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
                created: ModuleType | None = loader.create_module(spec)
                return created

            def exec_module(self, module: ModuleType) -> None:
                module.__loader__ = loader  # the module looks as if imported without gradwatch (getsource, resources)
                if module.__spec__ is not None:
                    module.__spec__.loader = loader
                loader.exec_module(module)
                hook._apply(fullname, module)

            def __getattr__(self, name: str) -> Any:
                return getattr(loader, name)

        spec.loader = cast(Any, Loader())  # a loader by its methods (importlib.abc is not imported)
        return spec


_ACTIVE: AutoWatch | None = None  # the watch of this process


def install(*, summary_path: str | None = None, every_n_steps: int | None = None, at_exit: bool = False, **others: Any) -> AutoWatch:
    """Start watching this process's training; ``finish()`` the result at the end (``at_exit``: done at interpreter exit).
    ``others``: more ``watch()`` options, for every model watched.

    Where this process is watched already, that watch is returned, with the
    options given here (a model already watched keeps its own).
    """
    global _ACTIVE
    if _ACTIVE is not None and not _ACTIVE.finished:
        if summary_path is not None:
            _ACTIVE.summary_path = summary_path
        if every_n_steps is not None:
            _ACTIVE.every_n_steps = every_n_steps
        _ACTIVE.others.update(others)
        return _ACTIVE
    auto = AutoWatch(summary_path=summary_path, every_n_steps=every_n_steps, at_exit=at_exit, **others)
    _ACTIVE = auto
    auto.start()
    return auto


def default_summary_path() -> str:
    """``gradwatch-<script name>.json`` in the current folder (the name read when the first model is watched:
    at startup ``python -m`` has not yet put the module's file in ``sys.argv[0]``)."""
    script = sys.argv[0] if sys.argv else ""
    stem = Path(script).stem if script and not script.startswith("-") else ""
    return os.path.abspath(f"gradwatch-{stem}.json" if stem else "gradwatch.json")


__all__ = ["AutoWatch", "default_summary_path", "install"]

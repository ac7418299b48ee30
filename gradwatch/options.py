"""The options every adapter takes, declared once, and the frameworks gradwatch adapts to.

``watch(model, **options)`` and each framework's ``GradWatchCallback(**options)``
take the same keywords (``OptionArgs``) and build one frozen ``Options`` from
them, checked at once: a bad value fails with one ``OptionError`` line before
any training time is spent.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast

from .checks import (
    OptionError,
    check_count,
    check_flag,
    check_optional_count,
    check_severity,
    check_stop_on,
    check_summary_path,
    show,
)
from .report import Severity, StopSeverity

if TYPE_CHECKING:
    from .detectors.base import Detector

DEFAULT_EVERY_N_STEPS = 20  # the sampling interval where neither the user nor the framework chose one


class Framework(str, Enum):
    """The framework of a run; a summary's ``framework`` is one of these, Keras' with its backend (``keras/jax``)."""

    PYTORCH = "pytorch"
    LIGHTNING = "lightning"
    KERAS = "keras"
    TRANSFORMERS = "transformers"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, framework: str) -> Framework | None:
        """The framework named by a summary's ``framework`` field; None for one gradwatch has no adapter for."""
        return next((f for f in cls if f.value == framework.split("/")[0]), None)


@dataclass(frozen=True, kw_only=True)
class Options:
    """What to measure, when to speak and where to write; every adapter's keywords.

    Attributes:
        summary_path: where the JSON summary is written at the end and every
            ``autosave_every_n_steps`` steps; None: nowhere.
        every_n_steps: measure every n-th optimizer step, and steps 1, 2, 4, …
            below n; None: the framework's logging interval (Lightning's
            ``log_every_n_steps``, the Trainer's ``logging_steps``), else 20.
        stop_on: ``"critical"`` or ``"warning"``: end training once such a finding
            appears (Lightning, the Trainer and Keras stop the fit; a PyTorch loop
            reads ``watcher.should_stop``); None: never.
        warn_on: the lowest severity raised as a live ``GradWatchWarning``; None: none.
        print_report: print the console report at the end.
        log_layers: also hand per-layer series to the framework's loggers, not just a few scalars.
        detectors: the detectors to run, at most one per symptom (default: all, with their defaults).
        history_size: per-layer points kept for the summary and the pictures.
        autosave_every_n_steps: how often the summary is rewritten during the run; None: only at the end.
        strict: re-raise gradwatch's own errors instead of disabling the failing part.
    """

    summary_path: str | os.PathLike[str] | None = None
    every_n_steps: int | None = None
    stop_on: StopSeverity | None = None
    warn_on: Severity | None = "warning"
    print_report: bool = True
    log_layers: bool = False
    detectors: Sequence[Detector] | None = None
    history_size: int = 128
    autosave_every_n_steps: int | None = 500
    strict: bool = False

    def __post_init__(self) -> None:
        checked = {
            "summary_path": check_summary_path(self.summary_path),
            "every_n_steps": check_optional_count("every_n_steps", self.every_n_steps),
            "stop_on": check_stop_on(self.stop_on),
            "warn_on": check_severity("warn_on", self.warn_on),
            "print_report": check_flag("print_report", self.print_report),
            "log_layers": check_flag("log_layers", self.log_layers),
            "detectors": check_detectors(self.detectors),
            "history_size": check_count("history_size", self.history_size, minimum=2),
            "autosave_every_n_steps": check_optional_count("autosave_every_n_steps", self.autosave_every_n_steps),
            "strict": check_flag("strict", self.strict),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)


class OptionArgs(TypedDict, total=False):
    """``Options``' fields as keyword arguments (``**options: Unpack[OptionArgs]``); a test keeps the two alike."""

    summary_path: str | os.PathLike[str] | None
    every_n_steps: int | None
    stop_on: StopSeverity | None
    warn_on: Severity | None
    print_report: bool
    log_layers: bool
    detectors: Sequence[Detector] | None
    history_size: int
    autosave_every_n_steps: int | None
    strict: bool


def check_detectors(value: Any) -> tuple[Detector, ...] | None:
    """A sequence of detector instances, at most one per symptom, or None (the defaults)."""
    if value is None:
        return None
    from .detectors.base import Detector  # here: a process that takes the defaults never imports the detectors for it

    hint = "a list of gradwatch detectors such as [VanishingGradients(max_ratio=1e-4)], or None for the defaults"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise OptionError(f"detectors must be {hint}, got {show(value)}")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, Detector):
            what = "a class; create it: " + item.__name__ + "()" if isinstance(item, type) else show(item)
            raise OptionError(f"detectors must be {hint}, got {what} among them")
        if item.symptom in seen:
            raise OptionError(f"detectors holds two detectors of {item.symptom!r}; give at most one per symptom")
        seen.add(item.symptom)
    return tuple(value)


F = TypeVar("F", bound=Callable[..., Any])


def takes(declared: type) -> Callable[[F], F]:
    """A decorator giving a function that takes ``**options`` the fields of the dataclass ``declared`` as keywords,
    with their defaults, in its signature.

    ``help()`` and ``inspect.signature`` then list every option, declared once
    in that dataclass, and a misspelt keyword is named against the function,
    with the nearest option.
    """

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type) for f in fields(declared)]
        accepted = [p.name for p in own + shared]
        called = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            unknown = next((name for name in kwargs if name not in accepted), None)
            if unknown is not None:
                near = difflib.get_close_matches(unknown, accepted, n=1)
                raise TypeError(f"{called}() got an unexpected keyword argument {unknown!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
            return function(*args, **kwargs)

        checked.__signature__ = signature.replace(parameters=own + shared)  # type: ignore[attr-defined]
        return cast(F, checked)

    return decorate


takes_options = takes(Options)
"""Give an adapter's ``**options`` the keywords of ``Options`` (see ``takes``)."""


__all__ = ["DEFAULT_EVERY_N_STEPS", "Framework", "OptionArgs", "OptionError", "Options", "check_detectors", "takes", "takes_options"]

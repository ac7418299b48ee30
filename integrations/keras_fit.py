"""The Keras callback's bookkeeping of one ``fit``: which hook calls it acts on, and the steps each batch call holds.

Keras calls each hook of every listed callback in turn, and gives all of them
one ``params`` dict per ``fit``: that dict tells one ``fit`` from the next.

- The same callback listed twice gets every call twice: only the first of
  each is acted on.
- A second callback on a model that another one measures in this ``fit``
  stays off: both would wrap the same optimizer and layers.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

from gradwatch.safety import warn

_MEASURING: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()  # id(model) -> the callback measuring it


class FitCalls:
    """Which of one callback's hook calls in the current ``fit`` it acts on."""

    def __init__(self) -> None:
        self.params: dict[str, Any] | None = None  # the params of the fit underway
        self.copies = 1  # how often the callback is listed in this fit
        self.off = False  # another callback measures the model in this fit
        self._counts: Counter[str] = Counter()

    def begin(self, callback: Any) -> bool:
        """At ``on_train_begin``: True where the callback starts measuring ``callback.model`` in this ``fit``."""
        params, model = callback.params, callback.model
        if params is not None and params is self.params:  # the same callback listed again
            self.copies += 1
            if self.copies == 2 and not self.off:
                warn("gradwatch: this GradWatchCallback is listed twice in fit's callbacks; its repeated calls are ignored")
            return False
        self.params, self.copies, self.off, self._counts = params, 1, False, Counter()
        owner = _MEASURING.get(id(model))
        if owner is not None and owner is not callback and owner.model is model and params is not None and owner.params is params:
            self.off = True
            warn("gradwatch: a second GradWatchCallback on this model is ignored (one callback per model measures a fit)")
            return False
        _MEASURING[id(model)] = callback
        return True

    def act(self, hook: str) -> bool:
        """Whether to act on this call of ``hook``: the first of its copies, and the callback is not off."""
        count = self._counts[hook]
        self._counts[hook] += 1
        return not self.off and count % self.copies == 0

    def end(self, callback: Any) -> None:
        """The ``fit`` ended: the model is free for another callback."""
        measuring: Any = _MEASURING.get(id(callback.model))
        if measuring is callback:
            del _MEASURING[id(callback.model)]


def steps_per_execution(model: Any, session: Any) -> int:
    """Optimizer steps per batch callback: ``steps_per_execution`` runs several in one call.

    A sample of several is labelled with the last of them, whose gradients it holds; the update of
    one step cannot be told apart in it, so it is not measured.
    """
    per_call = getattr(model, "steps_per_execution", 1)
    if not isinstance(per_call, int) or per_call <= 1:
        return 1
    session.note(
        f"steps_per_execution={per_call}: the callback sees one call per {per_call} steps; each sample holds the "
        "last step's gradients, and update sizes are not measured"
    )
    return per_call


def steps_in_call(per_call: int, params: dict[str, Any] | None, batch: int) -> int:
    """Optimizer steps until the next batch callback (the epoch's last call may hold fewer)."""
    if per_call == 1:
        return 1
    epoch_steps = (params or {}).get("steps")
    return max(min(per_call, epoch_steps - batch), 1) if isinstance(epoch_steps, int) else per_call

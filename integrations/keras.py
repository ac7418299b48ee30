"""Keras 3: ``model.fit(..., callbacks=[GradWatchCallback(summary_path="gw.json")])``.

Works under ``fit`` compiled with ``tf.function`` (and ``jit_compile``) on
TensorFlow and eagerly on torch; see ``keras_stats`` for how gradients are
read. ``trial()`` tries the remedies a report ranks.
"""

from __future__ import annotations

from .keras_callback import GradWatchCallback
from .keras_trial import trial

__all__ = ["GradWatchCallback", "trial"]

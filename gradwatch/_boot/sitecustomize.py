"""The environment switch of ``gradwatch run``: with this folder on ``PYTHONPATH``, ``GRADWATCH=1`` watches the process.

Python imports ``sitecustomize`` at startup from the first folder on
``sys.path`` that holds one. With ``GRADWATCH`` set to 1 (true, yes, on) this
one starts gradwatch's watch (``gradwatch.run.start_from_environment``:
frameworks patched once the script imports them, report and summary at exit).
Otherwise it imports nothing of gradwatch and does nothing. Either way it then
runs the ``sitecustomize`` it hides (the next one on ``sys.path``), if any, as
Python would have.
"""

from __future__ import annotations

import os
import sys


def _start() -> None:
    if os.environ.get("GRADWATCH", "").strip().lower() not in ("1", "true", "yes", "on"):
        return
    try:
        from gradwatch.run import start_from_environment
    except ImportError as exc:  # a Python without gradwatch (another interpreter started by the launcher)
        sys.stderr.write(f"gradwatch: GRADWATCH=1 ignored in {sys.executable}: gradwatch cannot be imported ({exc})\n")
        return
    start_from_environment()


def _run_hidden() -> None:
    """Run the ``sitecustomize`` further on ``sys.path`` that this one hides, under the same module name."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    places = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    later = [entry for i, entry in enumerate(sys.path) if here in places[:i] and places[i] != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", later)
    if spec is None or spec.loader is None:
        return
    mine = sys.modules.get("sitecustomize")
    hidden = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = hidden
    try:
        spec.loader.exec_module(hidden)
    except BaseException:
        if mine is not None:
            sys.modules["sitecustomize"] = mine
        raise


_start()
_run_hidden()

"""``gradwatch run | demo | report | check | plot | html | compare``: the entry point of the command.

``gradwatch run`` starts the user's script with as little of gradwatch
imported as can be (its startup cost is on top of the script's); the other
verbs live in ``gradwatch.commands``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradwatch`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # the script's arguments are its own: never parsed as gradwatch's
        from .run import main as run_main

        return run_main(argv[1:], prog="gradwatch run")
    from .commands import main as commands_main

    return commands_main(argv)


if __name__ == "__main__":
    sys.exit(main())

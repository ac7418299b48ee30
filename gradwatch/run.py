"""``gradwatch run train.py [args...]``: diagnose an unmodified training script.

The script runs as ``__main__`` with its own ``sys.argv`` and its folder as
``sys.path[0]``, as ``python train.py`` would run it. Before it starts,
``gradwatch.integrations.autowatch`` arranges for each installed framework to
be patched once the script imports it (PyTorch optimizer loops, Lightning,
Keras ``fit``, the Hugging Face ``Trainer``); at exit the reports are printed
and the summaries written. The script's output and exit code are its own:
gradwatch's faults are warnings, never the reason the run fails.

Also a module, for launchers gradwatch does not wrap::

    python -m gradwatch.run train.py --lr 0.1
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

RUN_HELP = "run a training script unmodified and diagnose what it trains (PyTorch loops, Lightning, Keras fit, Hugging Face Trainer)"
RUN_EXITS = "  the script's own exit code (1 after an uncaught exception, whose traceback is printed)\n  2  the script or module cannot be found"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gradwatch run`` (also those of ``python -m gradwatch.run``)."""
    parser.add_argument(
        "--summary", metavar="PATH", default=None, help="JSON summary of the first model watched (default: gradwatch-<script name>.json in the cwd)"
    )
    parser.add_argument(
        "--every-n-steps",
        type=positive,
        default=None,
        metavar="N",
        help="measure every N-th step (default: 20; Lightning and Transformers: their logging interval)",
    )
    parser.add_argument("-m", dest="module", metavar="MODULE", default=None, help="run a module as a script, as `python -m MODULE`")
    parser.add_argument(
        "target", nargs=argparse.REMAINDER, metavar="SCRIPT [ARGS...]", help="the script (or, after -m MODULE, the module's arguments)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the script described by parsed ``args`` under gradwatch; returns its exit code."""
    module: str | None = args.module
    target: list[str] = list(args.target)
    if target[:1] == ["--"]:
        target = target[1:]
    if module is None:
        if not target:
            print("gradwatch run: error: name a script to run (gradwatch run train.py [args...]) or a module (-m package.module)", file=sys.stderr)
            return 2
        script = Path(target[0])
        if not script.is_file():
            print(f"gradwatch run: error: cannot open script {target[0]}: no such file", file=sys.stderr)
            return 2
        stem = script.stem
    else:
        stem = module.rpartition(".")[2] or module
    summary = args.summary if args.summary is not None else f"gradwatch-{stem}.json"
    options: dict[str, Any] = {"summary_path": str(Path(summary).absolute())}
    if args.every_n_steps is not None:
        options["every_n_steps"] = args.every_n_steps
    session = _install(options)
    try:
        code = _run_script(module, target)
    finally:
        _finish(session)
    return code


def _install(options: dict[str, Any]) -> Any:
    """Arrange the framework patches; None (with a warning) where that fails: the script then runs unwatched."""
    try:
        from gradwatch.integrations import autowatch

        return autowatch.install(**options)
    except Exception as exc:  # gradwatch must never stop the script
        _warn(f"gradwatch run: cannot watch this run ({type(exc).__name__}: {exc}); the script runs unwatched")
        return None


def _finish(session: Any) -> None:
    if session is None:
        return
    try:
        session.finish()
    except Exception as exc:
        _warn(f"gradwatch run: closing the watch failed ({type(exc).__name__}: {exc})")


def _warn(message: str) -> None:
    from gradwatch.safety import warn

    warn(message)


def _run_script(module: str | None, target: list[str]) -> int:
    """Run the script or module as ``__main__``, as ``python`` would; its exit code."""
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    try:
        if module is not None:
            sys.argv = [module, *target]  # runpy puts the module's file in argv[0]
            if sys.path:
                sys.path[0] = os.getcwd()
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            folder = str(Path(target[0]).resolve().parent)
            sys.argv = list(target)
            if sys.path:
                sys.path[0] = folder
            else:
                sys.path.insert(0, folder)
            runpy.run_path(str(Path(target[0]).resolve()), run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc.code)
    except BaseException as exc:
        _print_uncaught(exc)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        sys.stdout.flush()
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0


def _exit_code(code: object) -> int:
    """The process exit code ``sys.exit(code)`` gives, as Python computes it (a message is printed, then 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    print(code, file=sys.stderr)
    return 1


def _print_uncaught(exc: BaseException) -> None:
    """The traceback Python prints, starting at the script's own frames (gradwatch's and runpy's left out)."""
    tb: TracebackType | None = exc.__traceback__
    ours = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}
    while tb is not None and tb.tb_next is not None and _filename(tb) in ours:
        tb = tb.tb_next
    first = tb if tb is not None else exc.__traceback__
    exc.__traceback__ = first  # the hook prints the exception's own traceback
    sys.stdout.flush()
    try:
        sys.excepthook(type(exc), exc, first)
    except Exception:
        traceback.print_exception(type(exc), exc, first)


def _filename(tb: TracebackType) -> str:
    name = tb.tb_frame.f_code.co_filename
    return name if name.startswith("<") else os.path.abspath(name)


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """gradwatch's own options, and the rest: ``-m MODULE`` or the script, with the arguments that follow, all the script's."""
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], argv[i + 1 :]
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            end = i + 2 if arg == "-m" else i + 1
            return argv[:end], argv[end:]
        if not arg.startswith("-") or arg == "-":
            return argv[:i], argv[i:]
        i += 2 if arg in VALUED else 1
    return argv, []


VALUED = ("--summary", "--every-n-steps")  # options followed by a value


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m gradwatch.run") -> int:
    """``python -m gradwatch.run [options] train.py [args...]`` (and ``gradwatch run``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=RUN_HELP, epilog=f"exit codes:\n{RUN_EXITS}", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    own, rest = split(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(own)
    args.target = rest
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``gradwatch run train.py [args...]``: diagnose an unmodified training script.

The script runs as ``__main__`` with its own ``sys.argv`` and its folder as
``sys.path[0]``, as ``python train.py`` would run it. Before it starts,
``gradwatch.integrations.autowatch`` arranges for each installed framework to
be patched once the script imports it (PyTorch optimizer loops, Lightning,
Keras ``fit``, the Hugging Face ``Trainer``); at exit the reports are printed
and the summaries written. The script's output and exit code are its own:
gradwatch's faults are warnings, never the reason the run fails.

Also a module, for launchers that take a Python module::

    python -m gradwatch.run train.py --lr 0.1

A launcher (``gradwatch run torchrun --nproc-per-node 2 train.py``: a first
argument that is a command, not a Python file) is run with the environment
switch set, so every Python process it starts is watched, rank 0 alone
reporting. The switch, for any launcher::

    PYTHONPATH=$(gradwatch run --boot-path):$PYTHONPATH GRADWATCH=1 python train.py

Python then imports ``gradwatch/_boot/sitecustomize.py`` at startup, which
calls ``start_from_environment()``. The script's own child processes (a
Lightning ``strategy="ddp"`` run re-running the script for its other ranks)
inherit the switch from ``gradwatch run train.py`` too.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import runpy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

RUN_HELP = "run a training script unmodified and diagnose what it trains (PyTorch loops, Lightning, Keras fit, Hugging Face Trainer)"
RUN_EXITS = (
    "  the script's (or launcher's) own exit code (1 after an uncaught exception, whose traceback is printed)\n"
    "  2  the script, module or command cannot be found"
)
BOOT = Path(__file__).resolve().parent / "_boot"  # holds the sitecustomize.py of the environment switch
SWITCH = "GRADWATCH"  # the environment switch; each option has its variable too (``variable``)
NOT_FLAGS = ("detectors",)  # options that are objects, not a value on a command line
FLAG_NAMES = {"summary_path": "--summary"}  # flags not named after their option
HELP = {
    "summary_path": "JSON summary of the first model watched (default: gradwatch-<script name>.json in the cwd)",
    "every_n_steps": "measure every N-th step (default: 20; Lightning and Transformers: their logging interval)",
}


def flag(option: str) -> str:
    """The command-line flag of a ``watch()`` option: ``stop_on`` is ``--stop-on``."""
    return FLAG_NAMES.get(option, "--" + option.replace("_", "-"))


def variable(option: str) -> str:
    """The environment variable of a ``watch()`` option: ``stop_on`` is ``GRADWATCH_STOP_ON``."""
    return f"{SWITCH}_{option.removesuffix('_path').upper()}"


def flagged() -> list[Any]:
    """The ``watch()`` options (``gradwatch.Options``' fields) that ``gradwatch run`` takes as flags and variables."""
    from dataclasses import fields

    from .options import Options

    return [f for f in fields(Options) if f.name not in NOT_FLAGS]


def option_value(option: Any, text: str) -> Any:
    """An option's value from its text on a command line or in a variable (``none`` for None where allowed);
    checked by ``Options`` after. Raises ``ValueError`` with a one-line reason."""
    words = text.strip().lower()
    if option.type == "bool":
        if words in ("1", "true", "yes", "on"):
            return True
        if words in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{option.name} must be true or false, got {text!r}")
    if "None" in option.type and words == "none":
        return None
    if option.type.startswith("int"):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{option.name} must be a whole number, got {text!r}") from None
    return text


def described() -> dict[str, str]:
    """Each option's sentence, from the ``Attributes:`` section of ``Options``' docstring (written once, there)."""
    from .options import Options

    notes: dict[str, str] = {}
    name = None
    for line in (inspect.getdoc(Options) or "").partition("Attributes:")[2].splitlines():
        entry = re.match(r" {4}(\w+): (.*)", line)
        if entry:
            name = entry[1]
            notes[name] = entry[2]
        elif name is not None and line.startswith(" " * 8):
            notes[name] += " " + line.strip()
    return notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gradwatch run`` (also those of ``python -m gradwatch.run``): each ``watch()`` option as a flag,
    with the sentence ``Options`` gives it."""
    notes = described()
    for option in flagged():
        default = "none" if option.default is None else str(option.default).lower()
        note = notes.get(option.name, "").replace("``", "").replace("None:", "none:")  # as a command line spells it
        text = HELP.get(option.name) or f"{note} (default: {default})"
        if option.type == "bool":
            parser.add_argument(flag(option.name), dest=option.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        metavar = "PATH" if "PathLike" in option.type else "SEVERITY" if "Severity" in option.type else "N"
        parser.add_argument(flag(option.name), dest=option.name, default=None, metavar=metavar, help=text.replace("%", "%%"))
    parser.add_argument("-m", dest="module", metavar="MODULE", default=None, help="run a module as a script, as `python -m MODULE`")
    parser.add_argument(
        "--boot-path", action="store_true", help="print the folder to put on PYTHONPATH for the GRADWATCH=1 environment switch, and exit"
    )
    parser.add_argument(
        "target", nargs=argparse.REMAINDER, metavar="SCRIPT [ARGS...]", help="the script (or, after -m MODULE, the module's arguments)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the script described by parsed ``args`` under gradwatch; returns its exit code."""
    module: str | None = args.module
    target: list[str] = list(args.target)
    if getattr(args, "boot_path", False):
        print(BOOT)
        return 0
    if target[:1] == ["--"]:
        target = target[1:]
    try:
        given = chosen_options(args)
    except ValueError as exc:
        print(f"gradwatch run: error: {exc}", file=sys.stderr)
        return 2
    if module is None:
        if not target:
            print("gradwatch run: error: name a script to run (gradwatch run train.py [args...]) or a module (-m package.module)", file=sys.stderr)
            return 2
        if is_launcher(target[0]):
            return _launch(target, switch_environment(os.environ, given))
        script = Path(target[0])
        if not script.is_file() and not (script / "__main__.py").is_file():  # a file, or a folder as `python folder` runs it
            print(f"gradwatch run: error: cannot open script {target[0]}: no such file or command", file=sys.stderr)
            return 2
        stem = script.stem
    else:
        stem = module.rpartition(".")[2] or module
    summary = str(Path(f"gradwatch-{stem}.json").absolute())
    session = _install({"summary_path": summary, **given})
    # the script's own Python children (Lightning's other ranks) are watched too; one that trains another script
    # names its summary after that script, unless --summary was given
    children = switch_environment(os.environ, given)
    names = [name for name in children if name.startswith(SWITCH) or name == "PYTHONPATH"]
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: children[name] for name in names})
    try:
        code = _run_script(module, target)
    finally:
        _finish(session)
        for name, value in saved.items():  # as before, for a caller in this process
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code


def is_launcher(first: str) -> bool:
    """Whether ``gradwatch run FIRST ...`` names a command to run with the switch set (``torchrun``, ``python``,
    ``accelerate``), rather than a Python script to run in this process (a ``.py`` file, or a file not executable)."""
    if first.endswith((".py", ".pyw")):
        return False
    path = Path(first)
    if path.is_file():
        return os.access(path, os.X_OK)
    import shutil

    return shutil.which(first) is not None


def chosen_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``watch()`` options given as flags, checked (a ``ValueError`` names the first bad one); the summary's
    path made absolute, so that a launcher's processes write where the command was given."""
    given: dict[str, Any] = {}
    for option in flagged():
        value = getattr(args, option.name, None)
        if value is not None:
            given[option.name] = value if isinstance(value, bool) else option_value(option, value)
    if given.get("summary_path") is not None:
        given["summary_path"] = str(Path(given["summary_path"]).absolute())
    from .options import Options

    Options(**given)  # an OptionError (a ValueError) names a bad value before the script starts
    return given


def switch_environment(environ: Mapping[str, str], options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``environ`` with the environment switch on: ``GRADWATCH=1``, the boot folder first on ``PYTHONPATH``, and
    each option given in its variable (``none`` for None)."""
    env = dict(environ)
    env[SWITCH] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != BOOT]
    env["PYTHONPATH"] = os.pathsep.join([str(BOOT), *paths])
    for name, value in (options or {}).items():
        env[variable(name)] = "none" if value is None else str(value)
    return env


def _launch(command: list[str], env: dict[str, str]) -> int:
    """Run the launcher in this process's place (its exit code and signals are then its own)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "posix":
            os.execvpe(command[0], command, env)
        import subprocess

        return subprocess.call(command, env=env)
    except OSError as exc:
        print(f"gradwatch run: error: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def switched_on(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for the watch (``GRADWATCH`` set to 1, true, yes or on)."""
    return environ.get(SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def start_from_environment(environ: Mapping[str, str] | None = None) -> Any:
    """The environment switch's start (from ``_boot/sitecustomize.py``): watch this process, finished at exit.

    Each ``watch()`` option from its variable (``GRADWATCH_SUMMARY``,
    ``GRADWATCH_EVERY_N_STEPS``, ``GRADWATCH_STOP_ON`` ...; ``variable``); a value
    that cannot be read is warned about and left at its default. Returns the
    watch, or None where the switch is off.
    """
    environ = os.environ if environ is None else environ
    if not switched_on(environ):
        return None
    options: dict[str, Any] = {}
    for option in flagged():
        text = environ.get(variable(option.name))
        if not text:
            continue
        try:
            value = option_value(option, text)
            from .options import Options

            Options(**{option.name: value})
        except ValueError as exc:
            _warn(f"gradwatch: {variable(option.name)}={text!r} ignored: {exc}")
            continue
        options[option.name] = os.path.abspath(value) if option.name == "summary_path" and value else value
    return _install({**options, "at_exit": True})


def _install(options: dict[str, Any]) -> Any:
    """Arrange the framework patches; None (with a warning) where that fails: the script then runs unwatched."""
    try:
        from gradwatch.integrations import autowatch

        return autowatch.install(**options)
    except Exception as exc:  # gradwatch must never stop the script
        _warn(f"gradwatch: cannot watch this run ({type(exc).__name__}: {exc}); the script runs unwatched")
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
        import traceback

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
    valued = {flag(option.name) for option in flagged() if option.type != "bool"}  # flags followed by a value
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
        i += 2 if arg in valued and "=" not in arg else 1
    return argv, []


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

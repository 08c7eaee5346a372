"""The ``platoscope`` command line: ``platoscope <command> [options]`` (also ``python -m core``).

Subcommands are plugins: every module of :mod:`core.commands` whose name does not start with ``_`` and that
defines ``NAME`` is one. A plugin defines

* ``NAME`` (the subcommand) and ``HELP`` (one line);
* ``add_arguments(parser)`` - its own arguments (``--json`` and ``--progress`` are added here);
* ``run(args, progress) -> dict`` - the JSON-ready result; raises :class:`~core.errors.DataError` on bad input;
* ``render(result) -> str`` - the human-readable text.

``progress(iterable, total=None, desc="")`` wraps long loops in a tqdm bar on stderr; it is silent with
``--json`` or when stderr is not a terminal, unless ``--progress`` is given.

Exit codes: 0 success; 2 bad input (DataError, missing / unreadable file, usage error) with one line on stderr
(and, with ``--json``, ``{"error": ..., "file": ..., ...}`` on stdout); 1 an unexpected internal error
(one line; set ``PLATOSCOPE_DEBUG=1`` for the traceback); 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import traceback
from types import ModuleType
from typing import Callable, Iterable, Sequence

from .errors import DataError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

_REQUIRED = ("add_arguments", "run", "render")


def discover_commands(package: str = "core.commands", warn: Callable[[str], None] | None = None
                      ) -> dict[str, ModuleType]:
    """Import every plugin module of ``package``; returns {NAME: module}, sorted by name.

    Modules whose name starts with ``_`` and modules without ``NAME`` are skipped. A plugin that fails to
    import or lacks ``add_arguments`` / ``run`` / ``render`` is skipped with a warning (so one broken plugin
    does not take the others down).
    """
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    pkg = importlib.import_module(package)
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        modname = f"{package}.{info.name}"
        try:
            module = importlib.import_module(modname)
        except Exception as err:  # a broken plugin must not break the CLI
            warn(f"command module {modname} could not be imported ({type(err).__name__}: {err})")
            continue
        name = getattr(module, "NAME", None)
        if not name:
            continue
        missing = [attr for attr in _REQUIRED if not callable(getattr(module, attr, None))]
        if missing:
            warn(f"command module {modname} lacks {', '.join(missing)}; skipped")
            continue
        if name in found:
            warn(f"command '{name}' is defined by both {found[name].__name__} and {modname}; keeping the first")
            continue
        found[name] = module
    return dict(sorted(found.items()))


def make_progress(enabled: bool) -> Callable:
    """A tqdm-like wrapper ``progress(iterable, total=None, desc="")`` writing to stderr (no-op if disabled)."""
    def progress(iterable: Iterable, total: int | None = None, desc: str = ""):
        if not enabled:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc or None, file=sys.stderr, leave=False,
                    dynamic_ncols=True)

    return progress


def build_parser(commands: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    """The argparse parser with one subparser per plugin command."""
    from . import __version__

    commands = discover_commands() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="platoscope",
        description="Measure and align the latent spaces of pretrained encoders.",
        epilog="Run 'platoscope <command> --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"platoscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands.items():
        help_text = getattr(module, "HELP", "")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.add_argument("--json", action="store_true",
                       help="print the result as JSON on stdout (a stable, documented interface)")
        p.add_argument("--progress", action="store_true",
                       help="show progress bars on stderr even with --json or when not in a terminal")
        p.set_defaults(_command=module)
    return parser


def _jsonable(obj):
    from .commands._common import to_jsonable

    return to_jsonable(obj)


def _error_line(err: BaseException) -> str:
    if isinstance(err, DataError):
        return f"error: {err}"
    if isinstance(err, FileNotFoundError):
        return f"error: {err.filename or err}: file not found"
    if isinstance(err, IsADirectoryError):
        return f"error: {err.filename or err}: is a folder, not a file"
    if isinstance(err, PermissionError):
        return f"error: {err.filename or err}: permission denied"
    return f"error: {err}"


def main(argv: Sequence[str] | None = None, *, package: str = "core.commands") -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    ``package`` is where the subcommand plugins are looked up (tests point it elsewhere).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = discover_commands(package)
    parser = build_parser(commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors (2), --help / --version (0)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_BAD_INPUT)
    module = getattr(args, "_command", None)
    if module is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    as_json = bool(getattr(args, "json", False))
    show = bool(getattr(args, "progress", False)) or (not as_json and sys.stderr.isatty())
    progress = make_progress(show)
    try:
        result = module.run(args, progress)
        if as_json:
            text = json.dumps(_jsonable(result), indent=2, allow_nan=False)
        else:
            text = module.render(result)
    except (DataError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(_error_line(err), file=sys.stderr)
        if as_json:
            payload = err.to_dict() if isinstance(err, DataError) else {
                "error": _error_line(err)[len("error: "):], "file": getattr(err, "filename", None)}
            print(json.dumps(_jsonable(payload), indent=2))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: out of memory; use fewer or smaller inputs (or memory-mappable formats: .npy, "
              ".safetensors)", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as err:  # a bug: one line, the traceback only on request
        if os.environ.get("PLATOSCOPE_DEBUG"):
            traceback.print_exc()
        print(f"internal error in '{module.NAME}': {type(err).__name__}: {err} "
              f"(set PLATOSCOPE_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL
    if text:
        try:
            print(text)
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. `platoscope info x.npz | head`: the reader left; not an error
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except OSError:
                pass
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

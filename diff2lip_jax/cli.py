"""Shared plumbing for the console scripts: config flags and one-line errors."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

import configs

CONFIG_DIR = os.path.dirname(os.path.abspath(configs.__file__))


def default_config(name: str, variant: str) -> str:
    """`<installed configs dir>/<name>.py:<variant>`, usable as a config_flags default."""
    return f"{os.path.join(CONFIG_DIR, name)}.py:{variant}"


# Errors a user can fix; they print as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    PermissionError,
    ImportError,
)


def one_line_errors(prog: str) -> Callable:
    """Decorates an absl `main`: user errors exit 2 with `prog: error: <message>`."""

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapped(argv):
            quiet_libraries()
            try:
                return main(argv)
            except USER_ERRORS as e:
                message = " ".join(str(e).split()) or type(e).__name__
                print(f"{prog}: error: {message}", file=sys.stderr)
                sys.exit(2)

        return wrapped

    return wrap


def quiet_libraries() -> None:
    """Keeps orbax/jax INFO chatter off the console unless the user asked (-v / --verbosity)."""
    if "verbosity" in flags.FLAGS and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def run_app(prog: str, main: Callable, argv: list[str] | None = None, doc: str | None = None) -> None:
    """Runs an absl `main` as console script `prog`.

    GNU-style flags (they may follow a sub-command); a bad flag or a user error
    prints one line `prog: error: ...` and exits 2; `doc` is what --help shows
    (a console-script wrapper module has no docstring of its own).
    """
    flags.FLAGS.set_gnu_getopt(True)

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
            sys.exit(2)

    main_module = sys.modules.get("__main__")
    if doc and main_module is not None and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = doc
    app.run(one_line_errors(prog)(main), argv=argv, flags_parser=parse)

"""Shared plumbing for the console scripts: config flags and one-line errors."""

from __future__ import annotations

import functools
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable

from absl import app, flags, logging

# The --config default of diff2lip-generate / diff2lip-convert: the library's official
# model and diffusion flags, `diff2lip_jax/default_config.py` (a config file loaded by
# path, so `--config.model.X=V` works alone). Not imported here: it imports jax.
LIBRARY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.py")


def define_config_flag(
    help_string: str,
    default: str | None = LIBRARY_CONFIG,
    *,
    required: bool = False,
    name: str = "config",
    **kwargs,
) -> flags.FlagHolder:
    """`--config=FILE.py[:ARG]` (ml_collections `config_flags.DEFINE_config_file`), plus `--config.a.b=V`.

    Config files are loaded by path, e.g. `--config=configs/diff2lip.py:tiny,losses=sync`
    (ARG grammar: `diff2lip_jax.config_args`). `default`: the library default
    (`LIBRARY_CONFIG`: official model + diffusion flags), another FILE.py[:ARG], or None
    with `required=True` for commands that need a full recipe (the trainers):

        cli.define_config_flag("training config, e.g. configs/diff2lip.py:tiny", None, required=True)

    kwargs go to DEFINE_config_file (lock_config, accept_new_attributes, ...).
    """
    from ml_collections import config_flags

    if required and default is not None:
        raise ValueError("define_config_flag: a required --config has no default")
    holder = config_flags.DEFINE_config_file(name, default, help_string, **kwargs)
    if required:
        flags.mark_flag_as_required(name, flag_values=kwargs.get("flag_values", flags.FLAGS))
    return holder


# Errors a user can fix; they print as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
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
            except KeyboardInterrupt:
                interrupted(prog)
            except (app.UsageError, *USER_ERRORS) as e:  # UsageError: one line too, not the whole docstring
                message = " ".join(str(e).split()) or type(e).__name__
                print(f"{prog}: error: {message}", file=sys.stderr)
                sys.exit(2)

        return wrapped

    return wrap


def interrupted(prog: str) -> None:
    """Ctrl-C: one line and exit 130 (128 + SIGINT), as a shell reports it; no traceback."""
    print(f"{prog}: interrupted", file=sys.stderr, flush=True)
    sys.exit(130)


def _help_lists_command_flags() -> None:
    """Makes `--help` list every flag the command defined (not only those of `__main__`).

    absl's `--help` shows the key flags of the module named by argv[0]; for a
    console script that is the setuptools wrapper, which defines none. The flags
    of every non-absl module become its key flags (`--helpfull` still adds absl's).
    """
    fv = flags.FLAGS
    for module, module_flags in fv.flags_by_module_dict().items():
        if module.startswith("absl."):
            continue
        for flag in module_flags:
            fv.register_key_flag_for_module(sys.argv[0], flag)


def quiet_libraries() -> None:
    """Keeps orbax/jax INFO chatter off the console unless the user asked (-v / --verbosity)."""
    if "verbosity" in flags.FLAGS and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        # Warnings read as the console's other lines ("warning: ..."), not as absl's log records.
        logging.get_absl_handler().setFormatter(std_logging.Formatter("%(levelname)s: %(message)s"))


def _flag_error(text: str) -> str:
    """One line for a flag error; a config file's own error is kept, its traceback dropped."""
    text = " ".join(text.split())
    if "Error whilst parsing config file: Traceback" in text:
        head = text.split(":", 1)[0]  # "flag --config=FILE:ARG"
        cause = re.split(r"\^+ ", text)[-1].split(" File ")[-1]
        cause = re.sub(r'^"[^"]*", line \d+, in \w+ ', "", cause)
        last = re.search(r"(\w+(?:Error|Exception)): (.*)$", cause)
        text = f"{head}: {last.group(2) if last else cause}"
    return text


def _config_override_error(args: list[str], error: BaseException) -> str:
    """`--config...` flags that name no config field, or a config file that cannot be loaded."""
    configs = [a for a in args[1:] if a.startswith("--config")]
    if isinstance(error, (AttributeError, KeyError)):
        key = str(error).strip("'\"").split("'")[-2] if "'" in str(error).strip("'\"") else str(error).strip("'\"")
        bad = [a for a in configs if a.split("=")[0].rsplit(".", 1)[-1] == key] or configs
        return f"{bad[0].split('=')[0] if bad else '--config'}: the config has no field {key!r}; see the config file"
    files = [a for a in configs if a.startswith("--config=")]
    name = files[0] if files else "--config"
    return f"{name}: cannot load the config ({' '.join(str(error).split())[:200]}); give an existing configs/NAME.py:VARIANT"


def run_app(prog: str, main: Callable, argv: list[str] | None = None, doc: str | None = None) -> None:
    """Runs an absl `main` as console script `prog`.

    GNU-style flags (they may follow a sub-command); a bad flag or a user error
    prints one line `prog: error: ...` and exits 2; `doc` is what --help shows
    (a console-script wrapper module has no docstring of its own). On a CPU
    run the project's XLA CPU flags are added first, and JAX's persistent compilation
    cache is on (`diff2lip_jax.xla_flags`).
    """
    from diff2lip_jax import xla_flags

    xla_flags.apply_cpu_flags()  # before anything starts the JAX backend
    xla_flags.enable_compilation_cache()
    flags.FLAGS.set_gnu_getopt(True)

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            print(f"{prog}: error: {_flag_error(str(e))}", file=sys.stderr)
            sys.exit(2)
        except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
            # config_flags raises these for `--config.a.b` that names no field, or a config file it cannot read.
            print(f"{prog}: error: {_config_override_error(args, e)}", file=sys.stderr)
            sys.exit(2)
        except SystemExit as e:  # absl's --help/--helpfull exit 1; a help that was asked for is a success
            helps = {"--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}
            if e.code == 1 and helps & {a.split("=")[0] for a in args[1:]}:
                sys.exit(0)
            raise

    main_module = sys.modules.get("__main__")
    if doc and main_module is not None and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = doc
    _help_lists_command_flags()
    try:
        app.run(one_line_errors(prog)(main), argv=argv, flags_parser=parse)
    except KeyboardInterrupt:  # before or after `main` (flag parsing, exit handlers)
        interrupted(prog)

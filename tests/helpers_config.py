"""Loads the repo's `configs/*.py` by path, as `--config=configs/NAME.py:ARG` does.

`configs/` is not a package of the library (nor installed): tests reach it by path.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import ml_collections

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


def config_path(name: str) -> str:
    """`<repo>/configs/<name>.py`."""
    return str(CONFIG_DIR / f"{name}.py")


def config_module(name: str) -> types.ModuleType:
    """The module of `configs/<name>.py` (its get_config, LOSS_SETS, ...); loaded once per process."""
    key = f"_test_configs_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, config_path(name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[key] = module
    return sys.modules[key]


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py`'s `get_config(arg)`, e.g. `load_config('diff2lip', 'tiny,losses=sync')`."""
    return config_module(name).get_config(arg)

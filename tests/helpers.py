"""Helpers shared by the tests: per-test seeds, relative errors, running the CLIs, one-line errors.

Imported as ``from helpers import ...`` (pytest puts tests/ on sys.path: rootdir conftest,
default "prepend" import mode).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- seeds

DEFAULT_SEED = 20240611
SEED_ENV = "DIFF2LIP_TEST_SEED"


def base_seed() -> int:
    """The run's base seed: $DIFF2LIP_TEST_SEED (an integer, 0x.. accepted) or DEFAULT_SEED."""
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return DEFAULT_SEED
    try:
        return int(value, 0)
    except ValueError:
        raise ValueError(f"{SEED_ENV}={value!r} is not an integer") from None


def seed_for(nodeid: str) -> int:
    """The seed of one test (or module, for module-scoped fixtures): the base seed mixed
    with a stable hash (crc32) of its pytest node id, in [0, 2**32)."""
    return (base_seed() * 1_000_003 + zlib.crc32(nodeid.encode())) % 2**32


def rng_for(nodeid: str) -> np.random.Generator:
    """A numpy Generator seeded by ``seed_for(nodeid)`` (for module-scoped fixtures:
    ``rng_for(request.node.nodeid)``; tests take the ``rng`` fixture instead)."""
    return np.random.default_rng(seed_for(nodeid))


def rerun_hint(nodeid: str) -> str:
    return f"{SEED_ENV}={base_seed()} python -m pytest '{nodeid}'"


# --------------------------------------------------------------------------- tolerances


def rel_l2(out, ref) -> float:
    """Relative L2 error ||out - ref|| / ||ref||, computed in float64."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x1, y1, x2, y2) boxes, end exclusive."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def max_abs_diff_tree(a, b) -> float:
    """The largest |a - b| over all leaves of two pytrees of arrays of the same structure (float64)."""
    import jax

    diffs = jax.tree.map(
        lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0)), a, b
    )
    return max(jax.tree.leaves(diffs), default=0.0)


# --------------------------------------------------------------------------- CLIs


def run_module(module: str, *args, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``python -m module args`` with this interpreter; stdout/stderr captured as text."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def start_module(module: str, *args, **kwargs) -> subprocess.Popen:
    """Like run_module but started in the background (pipes for stdout/stderr); finish with ``finish``."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for a ``start_module`` process; its result as a CompletedProcess."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def one_line_error(result: subprocess.CompletedProcess, prefix: str | None = None, context=None) -> str:
    """Asserts a user error: exit 2, exactly one non-blank line on stderr (starting with
    ``prefix`` when given), no traceback on stderr or stdout. Returns that line."""
    why = result.stderr if context is None else (context, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, why
    assert len(lines) == 1, why
    assert "Traceback" not in result.stderr + (result.stdout or ""), why
    if prefix is not None:
        assert lines[0].startswith(prefix), why
    return lines[0]


# --------------------------------------------------------------------------- data

SYNTH_BOX = (8, 124, 8, 120)  # a fixed face box that holds the synthetic 128 px faces


def prepare_box_dataset(source, out, split: str = "train", **builder_kwargs):
    """Prepares the clips under ``source`` into ``out`` (the "local_videos" builder) with the
    fixed face box SYNTH_BOX: fast and deterministic. Returns the builder (run_result etc.)."""
    import tensorflow_datasets as tfds

    from data_pipelines.builders import ProcessOptions, make_builder

    tfds.disable_progress_bar()
    builder = make_builder(
        "local_videos",
        data_dir=str(out),
        source=str(source),
        split=split,
        options=ProcessOptions(face_detector="box", box=SYNTH_BOX),
        **builder_kwargs,
    )
    builder.download_and_prepare()
    return builder

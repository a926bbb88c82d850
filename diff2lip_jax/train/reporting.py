"""Console, TensorBoard metrics and PNG sample grids (process 0 only).

Console style, for both trainers: one summary line per log step on stdout
(`step 100/3000 train loss=0.1 ... | 6.8 steps/s, eta 7m10s`), notices and warnings
on stderr, and on a terminal a progress bar whose rate counts finished steps (not
dispatched ones), so it matches wall time.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from diff2lip_jax.images import unit_to_uint8_round


def notice(text: str) -> None:
    """A status line on stderr, from every process (multi-process runs tell them apart)."""
    tqdm.write(text, file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """The progress bar (a terminal only, process 0) and the per-log-step rate and ETA."""

    def __init__(self, start: int, total: int):
        self.total, self._mark_step, self._mark_time, self._first = total, start, time.perf_counter(), True
        self._bar = tqdm(
            total=total,
            initial=start,
            unit="step",
            dynamic_ncols=True,
            disable=True if jax.process_index() != 0 else None,  # None: only on a terminal
        )

    def finished(self, step: int) -> None:
        """Step `step` has finished on the device (its outputs are ready)."""
        if self._first:  # the first step includes compilation: the rate starts after it
            self._first, self._mark_step, self._mark_time = False, step, time.perf_counter()
        self._bar.update(step - self._bar.n)

    def rate(self, step: int) -> tuple[float, str]:
        """(steps/s since the last call, ETA text) at finished step `step`; (0, ...) for the first step."""
        now = time.perf_counter()
        if step == self._mark_step:
            return 0.0, "after the first step (compiling)"
        rate = (step - self._mark_step) / max(now - self._mark_time, 1e-9)
        self._mark_step, self._mark_time = step, now
        return rate, _duration((self.total - step) / rate) if rate > 0 else "?"

    def close(self) -> None:
        self._bar.close()


class MetricWriter:
    """Scalars to `<workdir>/tensorboard` event files and one line on stdout; a no-op off process 0."""

    def __init__(self, workdir: str, total_steps: int = 0):
        self.active = jax.process_index() == 0
        self.total_steps = total_steps
        self._tb = None
        if self.active:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "train", suffix: str = "") -> None:
        """Logs `scalars` as `prefix/name` and prints `step N/T prefix k=v ... [| suffix]`."""
        if not self.active:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(f"{prefix}/{name}", value, step)
        self._tb.flush()
        # The rate is in the suffix when there is one (steps/s, ETA); not twice.
        text = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()) if not (suffix and k == "steps_per_s"))
        total = f"/{self.total_steps}" if self.total_steps else ""
        tqdm.write(f"step {step}{total} {prefix} {text}" + (f" | {suffix}" if suffix else ""), file=sys.stdout)

    def say(self, text: str) -> None:
        """A result line on stdout (process 0), e.g. the held-out sync accuracy."""
        if self.active:
            tqdm.write(text, file=sys.stdout)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def save_grid(path: str, columns: Mapping[str, np.ndarray], max_rows: int = 10) -> str:
    """Writes a PNG whose columns are the given [N, H, W, 3] image sets in [-1, 1], one row per image.

    Column order is the mapping's order (e.g. masked input | reference | x0_pred |
    DDIM sample | ground truth). Written atomically (temp file + rename).
    """
    cols = [unit_to_uint8_round(np.asarray(v)[:max_rows]) for v in columns.values()]
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(cols[0].shape[0])]
    grid = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)
    return path

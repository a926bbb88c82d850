"""Metrics to TensorBoard and stdout, and PNG sample grids (process 0 only)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from PIL import Image

from diff2lip_jax.images import unit_to_uint8_round


class MetricWriter:
    """Scalars to `<workdir>/tensorboard` event files and one line on stdout; a no-op off process 0."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self._tb = None
        if self.active:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "train") -> None:
        if not self.active:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(f"{prefix}/{name}", value, step)
        self._tb.flush()
        text = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
        logging.info("step %d %s %s", step, prefix, text)

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

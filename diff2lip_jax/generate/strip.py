"""The paper's Fig. 3 as a PNG: how x_t and the x0 prediction evolve over the DDIM steps."""

from __future__ import annotations

import os
import pathlib
import secrets

import cv2
import numpy as np

GAP = 2  # white pixels between tiles
MIN_TILE = 128  # small crops (tiny models: 64 px) are enlarged by an integer factor


def strip_image(x_t: np.ndarray, x0_pred: np.ndarray) -> np.ndarray:
    """Two rows (x_t, then x0_pred), K columns from the noisiest step: uint8 [2S', K S', 3] RGB.

    x_t, x0_pred: uint8 [K, S, S, 3] RGB, each already composited with the known upper half.
    """
    x_t, x0_pred = np.asarray(x_t, np.uint8), np.asarray(x0_pred, np.uint8)
    if x_t.shape != x0_pred.shape or x_t.ndim != 4:
        raise ValueError(f"x_t {x_t.shape} and x0_pred {x0_pred.shape} must both be [K, S, S, 3]")
    k, s = x_t.shape[0], x_t.shape[1]
    scale = max(1, MIN_TILE // s)
    tile = s * scale
    canvas = np.full((2 * tile + GAP, k * tile + (k - 1) * GAP, 3), 255, np.uint8)
    for row, images in enumerate((x_t, x0_pred)):
        for col, img in enumerate(images):
            big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)  # nearest: keep the noise visible
            y, x = row * (tile + GAP), col * (tile + GAP)
            canvas[y : y + tile, x : x + tile] = big
    return canvas


def write_strip(path: str | os.PathLike, x_t: np.ndarray, x0_pred: np.ndarray) -> None:
    """Writes :func:`strip_image` as a PNG, atomically (temp file + rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.png")
    try:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(strip_image(x_t, x0_pred), cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""Putting generated face crops back into the video frames: full, lower or feathered.

The model regenerates the lower half of a face crop (rows from
`conditioning.first_hidden_row`) at its own resolution. How much of the crop
reaches the output frame is the paste mode:

* ``full`` (the official generate.py): the whole crop, resized to the face box,
  replaces the box. The upper face passes through the model's resolution and
  the box border is a hard edge.
* ``lower``: only the generated lower half replaces the box's lower half.
* ``feather``: the generated lower half is blended in through a mask that rises
  from 0 at the box's left, right and bottom edges and at the first generated
  row to 1 a `feather` fraction of the box inside them, so no edge remains where
  the frame meets the generated pixels. Pixels outside the box are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diff2lip_jax.conditioning import first_hidden_row
from diff2lip_jax.face import paste_back

PASTE_MODES = ("full", "lower", "feather")
# Width of the feathered ramp as a fraction of the box's shorter side; at 0.12 a
# 100 px face box blends over 12 px, which stays below the mouth for the face
# boxes of the detectors here (the mouth sits in the middle of the lower half).
FEATHER = 0.12


def _ramp(n: int, width: int) -> np.ndarray:
    """float32 [n]: a smoothstep from 0 at index 0 to 1 at `width` and beyond (all 1 if width < 1)."""
    if width < 1:
        return np.ones(n, np.float32)
    u = np.clip(np.arange(n, dtype=np.float32) / float(width), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def feather_mask(height: int, width: int, feather: float = FEATHER) -> np.ndarray:
    """float32 [height, width] in [0, 1]: the weight of the generated pixels in a face box.

    0 above `first_hidden_row(height)` and on the box's left, right and bottom
    edges; 1 from `feather * min(height, width)` pixels inside those lines on.
    """
    ramp = int(round(feather * min(height, width)))
    top = first_hidden_row(height)
    rows = np.zeros(height, np.float32)
    below = height - top
    rows[top:] = np.minimum(_ramp(below, ramp), _ramp(below, ramp)[::-1])
    cols = np.minimum(_ramp(width, ramp), _ramp(width, ramp)[::-1])
    return rows[:, None] * cols[None, :]


def check_mode(mode: str) -> None:
    """ValueError naming the choices unless `mode` is one of PASTE_MODES."""
    if mode not in PASTE_MODES:
        raise ValueError(f"--paste={mode!r}: choose one of {', '.join(PASTE_MODES)}")


def paste(mode: str, originals: np.ndarray, crops: np.ndarray, boxes: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Frames with the generated crops put back: -> new uint8 [N, H, W, 3] (inputs untouched).

    originals: uint8 [N, H, W, 3]; crops: [N, S, S, 3] (uint8, or float in [0, 255],
    truncated as the official code); boxes: [N, 4] int (x1, y1, x2, y2); mode: one
    of PASTE_MODES (module docstring).
    """
    check_mode(mode)
    boxes = np.asarray(boxes)
    pasted = paste_back(originals, crops, boxes)
    if mode == "full":
        return pasted
    for frame, orig, (x1, y1, x2, y2) in zip(pasted, originals, boxes):
        if mode == "lower":
            top = y1 + first_hidden_row(y2 - y1)
            frame[y1:top, x1:x2] = orig[y1:top, x1:x2]
        else:
            weight = feather_mask(int(y2 - y1), int(x2 - x1))[..., None]
            box_orig = orig[y1:y2, x1:x2].astype(np.float32)
            blended = box_orig + weight * (frame[y1:y2, x1:x2].astype(np.float32) - box_orig)
            frame[y1:y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return pasted

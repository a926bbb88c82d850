"""generate.paste: full / lower / feathered paste of generated crops, on a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from diff2lip_jax.conditioning import first_hidden_row
from diff2lip_jax.face import crop_and_resize
from diff2lip_jax.generate import paste as paste_lib

BOX = np.array([[170, 40, 290, 170]])  # x1, y1, x2, y2: the astronaut's face in the 512 px photo


@pytest.fixture(scope="module")
def photo_and_crop() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo [1, 512, 512, 3] and a 'generated' 32 px crop of its face: the face
    through 32 px (blur) with a skin tone 25 levels too bright, as a tiny model's output looks."""
    frame = skimage.data.astronaut()[None]
    rng = np.random.default_rng(0)
    crop = crop_and_resize(frame, BOX, 32).astype(np.float32) + 25.0 + rng.normal(0, 2, (1, 32, 32, 3))
    return frame, np.clip(crop, 0, 255)


def _border_steps(frame: np.ndarray, original: np.ndarray) -> tuple[float, float]:
    """Mean |difference| across the lower box border (left, right and bottom edges of the
    generated half) between the pixel outside and the pixel just inside, and the same one
    pixel further in (two neighbours inside): a seam makes the first much larger."""
    x1, y1, x2, y2 = BOX[0]
    top = y1 + first_hidden_row(y2 - y1)
    f = frame.astype(np.float32)
    across = [
        (f[top:y2, x1 - 1], f[top:y2, x1], f[top:y2, x1 + 1]),
        (f[top:y2, x2], f[top:y2, x2 - 1], f[top:y2, x2 - 2]),
        (f[y2, x1:x2], f[y2 - 1, x1:x2], f[y2 - 2, x1:x2]),
    ]
    border = np.mean([np.abs(o - i).mean() for o, i, _ in across])
    inside = np.mean([np.abs(i - j).mean() for _, i, j in across])
    return float(border), float(inside)


def test_feather_mask_shape_and_range():
    m = paste_lib.feather_mask(130, 120)
    assert m.shape == (130, 120) and m.dtype == np.float32
    assert m.min() == 0.0 and m.max() == 1.0
    top = first_hidden_row(130)
    assert not m[:top].any()  # the known upper half keeps the frame's pixels
    assert not m[:, 0].any() and not m[:, -1].any() and not m[-1].any()  # zero on the box edges
    ramp = round(paste_lib.FEATHER * 120)
    assert (m[top + ramp : 130 - ramp, ramp : 120 - ramp] == 1.0).all()
    np.testing.assert_array_equal(m, m[:, ::-1])  # symmetric left/right


@pytest.mark.parametrize("mode", paste_lib.PASTE_MODES)
def test_outside_the_box_is_untouched(photo_and_crop, mode):
    frame, crop = photo_and_crop
    out = paste_lib.paste(mode, frame, crop, BOX)
    x1, y1, x2, y2 = BOX[0]
    outside = np.ones(frame.shape[1:3], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[0][outside], frame[0][outside])
    assert out.dtype == np.uint8 and not np.shares_memory(out, frame)
    if mode != "full":  # the upper half of the box is the frame's own
        top = y1 + first_hidden_row(y2 - y1)
        np.testing.assert_array_equal(out[0, y1:top, x1:x2], frame[0, y1:top, x1:x2])


def test_feather_removes_the_seam(photo_and_crop):
    frame, crop = photo_and_crop
    natural = _border_steps(frame[0], frame[0])
    steps = {
        mode: _border_steps(paste_lib.paste(mode, frame, crop, BOX)[0], frame[0]) for mode in paste_lib.PASTE_MODES
    }
    # The hard pastes jump at the border by far more than the photo's own neighbour step ...
    for mode in ("full", "lower"):
        border, inside = steps[mode]
        assert border > 3 * inside and border > natural[0] + 15, (mode, steps[mode], natural)
    # ... the feathered paste steps across the border like the untouched photo (within 1 level).
    border, inside = steps["feather"]
    assert abs(border - natural[0]) < 1.0 and border < 1.5 * inside + 1.0, (steps["feather"], natural)
    # Inside the ramp the generated pixels take over: the box centre of the lower half is the crop's.
    x1, y1, x2, y2 = BOX[0]
    full = cv2.resize(np.clip(crop[0], 0, 255).astype(np.uint8), (x2 - x1, y2 - y1))
    cy, cx = (y2 - y1) * 3 // 4, (x2 - x1) // 2
    out = paste_lib.paste("feather", frame, crop, BOX)[0]
    np.testing.assert_array_equal(out[y1 + cy, x1 + cx], full[cy, cx])


def test_unknown_mode_is_one_clear_error(photo_and_crop):
    frame, crop = photo_and_crop
    with pytest.raises(ValueError, match="--paste='soft': choose one of full, lower, feather"):
        paste_lib.paste("soft", frame, crop, BOX)

"""A smoothly moving real face, for measuring face detectors: skimage's astronaut photo
gliding and zooming over a 640x480 frame, and the box-size jitter statistic.

The photo (512x512, face ~93 px wide at scale 1) ships with scikit-image. Each frame
places it by a similarity transform whose scale and offset follow half-cosine
ramps, so the true face size changes smoothly and monotonically: any
frame-to-frame wobble of a detector's box size is the detector's.
"""

from __future__ import annotations

import numpy as np

# The face in the 512 px photo (by eye, cheek to cheek, fringe to chin): ~93 px wide.
PHOTO_FACE_WIDTH = 93.0

__all__ = ["PHOTO_FACE_WIDTH", "box_height_jitter", "moving_photo_clip"]


def moving_photo_clip(
    num_frames: int = 50,
    size: tuple[int, int] = (480, 640),
    scale: tuple[float, float] = (0.9, 1.2),
    brightness: float = 1.0,
    shift: tuple[float, float] = (160.0, 30.0),
    background: int = 90,
) -> np.ndarray:
    """The moving astronaut: -> uint8 [num_frames, H, W, 3] RGB.

    size: (H, W) of the frames. scale: photo scale at the first and last frame
    (a half-cosine ramp between; the face is ~93 px wide at 1). brightness:
    every pixel times this (0.4: darkened to 40%). shift: (x, y) amplitude in
    pixels of the face centre's motion around the frame centre (x: one full
    sine period, y: half of one). background: grey level outside the photo.
    """
    import cv2
    from skimage import data

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    photo = np.ascontiguousarray(data.astronaut()[..., :3])
    h, w = size
    out = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        t = i / max(1, num_frames - 1)
        s = scale[0] + (scale[1] - scale[0]) * (0.5 - 0.5 * np.cos(np.pi * t))
        cx = w / 2 + shift[0] * np.sin(2 * np.pi * t)
        cy = h / 2 + shift[1] * np.sin(np.pi * t)
        # The face centre (~(225, 125) in the photo) goes to (cx, cy).
        m = np.array([[s, 0.0, cx - 225.0 * s], [0.0, s, cy - 125.0 * s]])
        frame = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(background,) * 3)
        out[i] = np.clip(frame.astype(np.float32) * brightness + 0.5, 0, 255).astype(np.uint8)
    return out


def box_height_jitter(boxes: np.ndarray, window: int = 5) -> float:
    """Box-size jitter: boxes [N,4] (x1, y1, x2, y2) -> mean |h - moving average of h| / h, in %.

    h is the box height; the centred `window`-frame moving average is taken where
    it is defined (frames window//2 .. N-1-window//2). NaN with fewer than
    `window` boxes.
    """
    b = np.asarray(boxes, np.float64)
    h = b[:, 3] - b[:, 1]
    if len(h) < window:
        return float("nan")
    k = window // 2
    mean = np.convolve(h, np.ones(window) / window, mode="valid")
    core = h[k : len(h) - k]
    return float(np.mean(np.abs(core - mean) / core) * 100.0)

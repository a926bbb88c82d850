"""Face detectors behind one interface, and the `make_detector` factory.

A detector is a callable `frames [N,H,W,3] uint8 RGB -> (boxes [N,4] int64
(x1, y1, x2, y2), found [N] bool)` with a class attribute `fixed`: True for
fixed crops, whose box is used as is (no pads, no smoothing, never missing).
Boxes of frames where `found` is False are zeros and meaningless.

Kinds: "s3fd" (the official detector, needs a local `s3fd.pth`), "cascade" (an
LBP cascade that ships with scikit-image: offline, the default), "voxceleb2"
(the official fixed VoxCeleb2 crop), "box" (a user box).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from diff2lip_jax.face.s3fd import S3FDDetector

DETECTOR_KINDS = ("cascade", "s3fd", "voxceleb2", "box")


class FaceDetector(Protocol):
    """frames [N,H,W,3] uint8 RGB -> (boxes [N,4] int64 x1,y1,x2,y2, found [N] bool)."""

    fixed: bool

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N,H,W,3] RGB, got shape {frames.shape}")
    return frames


def voxceleb2_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The official VoxCeleb2 crop of an H x W frame as (x1, y1, x2, y2).

    Rows [0, H - int(H*2.36/8)), columns [int(W*1.8/8), W - int(W*1.8/8)): the
    face of a VoxCeleb2 clip, which is already centred on the speaker.
    """
    dy, dx = int(height * 2.36 / 8), int(width * 1.8 / 8)
    return dx, 0, width - dx, height - dy


class FixedCropDetector:
    """A fixed box for every frame: the VoxCeleb2 crop, or a user box.

    `box` is (y1, y2, x1, x2) = (top, bottom, left, right) in pixels, end
    exclusive: the order of Wav2Lip's `--box` and of the (y1, y2, x1, x2)
    tuples the official Diff2Lip `face_detect` returns. It is clamped to each
    frame; a box empty after clamping raises ValueError. `box=None` means the
    VoxCeleb2 crop, computed from each frame's size.
    """

    fixed = True

    def __init__(self, box: Sequence[int] | None = None):
        if box is not None:
            if len(box) != 4:
                raise ValueError(f"box must be (y1, y2, x1, x2), got {box}")
            y1, y2, x1, x2 = (int(v) for v in box)
            if min(y1, x1) < 0 or y2 <= y1 or x2 <= x1:
                raise ValueError(f"box (y1, y2, x1, x2) = {tuple(box)} needs 0 <= y1 < y2 and 0 <= x1 < x2")
            self.box: tuple[int, int, int, int] | None = (x1, y1, x2, y2)
        else:
            self.box = None

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, h, w, _ = _check_frames(frames).shape
        if self.box is None:
            box = voxceleb2_box(h, w)
        else:
            x1, y1, x2, y2 = self.box
            box = (min(x1, w), min(y1, h), min(x2, w), min(y2, h))
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box {self.box} (x1,y1,x2,y2) lies outside the {w}x{h} frames")
        return np.tile(np.asarray(box, np.int64), (n, 1)), np.ones(n, bool)


class CascadeDetector:
    """Offline detector: the OpenCV-trained LBP frontal-face cascade shipped in scikit-image.

    opencv-python(-headless) 5.x no longer has `cv2.CascadeClassifier` nor the
    Haar xml files, so this runs OpenCV's `lbpcascade_frontalface` through
    `skimage.feature.Cascade`. The largest detection per frame is taken (one
    talking head per video). Frames larger than `max_side` are downscaled first
    (speed; faces in talking-head video are large).

    The raw cascade box is square and runs from the upper forehead to about
    the chin, cheek to cheek. S3FD's boxes are about as wide and reach just
    below the chin, so the box keeps its top edge and width and its height is
    scaled by `height_scale` (1.1: chosen by eye on skimage's astronaut photo,
    where it moves the bottom edge from the chin line to just below it; not
    calibrated against S3FD output, whose weights are not available offline).
    Diff2Lip inpaints the lower half of the crop, so including the chin matters
    more than the forehead.
    """

    fixed = False

    def __init__(
        self,
        height_scale: float = 1.1,
        width_scale: float = 1.0,
        max_side: int = 480,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        min_face_fraction: float = 0.1,
    ):
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        self._cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.height_scale, self.width_scale = float(height_scale), float(width_scale)
        self.max_side, self.scale_factor = int(max_side), float(scale_factor)
        self.min_neighbors, self.min_face_fraction = int(min_neighbors), float(min_face_fraction)

    def detect_raw(self, frame: np.ndarray) -> tuple[float, float, float, float] | None:
        """One frame [H,W,3] uint8 RGB -> the largest raw cascade box (x, y, w, h) in pixels, or None."""
        h, w = frame.shape[:2]
        ratio = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        if ratio < 1.0:
            gray = cv2.resize(gray, (round(w * ratio), round(h * ratio)), interpolation=cv2.INTER_AREA)
        gh, gw = gray.shape
        side = max(24, int(self.min_face_fraction * min(gh, gw)))  # 24 = the cascade's window
        found = self._cascade.detect_multi_scale(
            img=gray.astype(np.float32) / 255.0,
            scale_factor=self.scale_factor,
            step_ratio=1.0,
            min_size=(side, side),
            max_size=(gh, gw),
            min_neighbor_number=self.min_neighbors,
            intersection_score_threshold=0.5,
        )
        if not found:
            return None
        best = max(found, key=lambda d: d["width"] * d["height"])
        return tuple(v / ratio for v in (best["c"], best["r"], best["width"], best["height"]))

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = _check_frames(frames)
        boxes = np.zeros((len(frames), 4), np.int64)
        found = np.zeros(len(frames), bool)
        for i, frame in enumerate(frames):
            raw = self.detect_raw(frame)
            if raw is None:
                continue
            x, y, bw, bh = raw
            cx, nw = x + bw / 2, bw * self.width_scale
            box = np.array([cx - nw / 2, y, cx + nw / 2, y + bh * self.height_scale])
            boxes[i], found[i] = np.clip(box, 0, None).astype(np.int64), True
        return boxes, found


def make_detector(
    kind: str = "cascade",
    weights_path: str | os.PathLike[str] | None = None,
    batch_size: int = 4,
    box: Sequence[int] | None = None,
) -> FaceDetector:
    """Build a detector by kind.

    kind: "cascade" (offline default), "s3fd" (`weights_path`: a local copy of the
    official s3fd.pth; default the `diff2lip_jax.weights` cache's, fetched on first
    use; `batch_size` frames per jitted forward:
    the official uses 64 on a GPU, 4 keeps a 720p batch near 2 GB on CPU),
    "voxceleb2" (the official fixed crop), "box" (`box` = (y1, y2, x1, x2)).
    """
    if kind == "cascade":
        return CascadeDetector()
    if kind == "s3fd":
        if weights_path is None:  # the registry's copy, fetched on first use (one-line error offline)
            from diff2lip_jax import weights

            weights_path = weights.fetch("s3fd")
        return S3FDDetector.from_file(weights_path, batch_size=batch_size)
    if kind == "voxceleb2":
        return FixedCropDetector(None)
    if kind == "box":
        if box is None:
            raise ValueError("the box detector needs box=(y1, y2, x1, x2)")
        return FixedCropDetector(box)
    raise ValueError(f"unknown detector kind {kind!r}; expected one of {DETECTOR_KINDS}")

"""Per-video face boxes (pads, gap filling, smoothing) and crop / paste-back.

:func:`track_from_detections` is the one post-processing of raw detector output
(pads, gap fill, smoothing) that face detection for evaluation
(:func:`detect_faces`), generation's streaming face pass and data preparation
all use.

Box convention everywhere here: int64 (x1, y1, x2, y2), end exclusive, so the
face is `frame[y1:y2, x1:x2]`. `FaceTrack.official_boxes()` gives the
(y1, y2, x1, x2) order of the official Diff2Lip `face_detect` results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from diff2lip_jax.face.detectors import FaceDetector

SMOOTH_WINDOW = 5  # the official get_smoothened_boxes(T=5)
MAX_GAP = 5  # frames a missed detection may borrow the nearest detected box from


@dataclasses.dataclass(frozen=True)
class FaceTrack:
    """Face boxes of a video.

    boxes: [N,4] int64 (x1, y1, x2, y2) inside the frame, always usable for
      cropping (a faceless frame carries the box of its nearest detected frame,
      or the whole frame when the video has no detection at all).
    has_face: [N] bool; False where no face was detected within `max_gap`
      frames. The caller decides what to do with those frames.
    """

    boxes: np.ndarray
    has_face: np.ndarray

    def official_boxes(self) -> np.ndarray:
        """[N,4] int64 in the official (y1, y2, x1, x2) order."""
        return self.boxes[:, [1, 3, 0, 2]]


def parse_pads(pads: Sequence[int] | str) -> tuple[int, int, int, int]:
    """Pads (pady1, pady2, padx1, padx2) = (top, bottom, left, right) from ints or "0,10,0,0"."""
    values = [int(v) for v in pads.split(",")] if isinstance(pads, str) else [int(v) for v in pads]
    if len(values) != 4:
        raise ValueError(f"pads must be (pady1, pady2, padx1, padx2), got {pads!r}")
    return values[0], values[1], values[2], values[3]


def apply_pads(boxes: np.ndarray, pads: Sequence[int] | str, height: int, width: int) -> np.ndarray:
    """Grow boxes [N,4] (x1,y1,x2,y2) by pads (top, bottom, left, right) and clamp to the frame.

    As the official face_detect: y1 = max(0, y1 - pady1), y2 = min(H, y2 + pady2),
    x1 = max(0, x1 - padx1), x2 = min(W, x2 + padx2).
    """
    pady1, pady2, padx1, padx2 = parse_pads(pads)
    b = np.asarray(boxes, np.int64)
    return np.stack(
        [
            np.maximum(0, b[:, 0] - padx1),
            np.maximum(0, b[:, 1] - pady1),
            np.minimum(width, b[:, 2] + padx2),
            np.minimum(height, b[:, 3] + pady2),
        ],
        axis=1,
    )


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """The official get_smoothened_boxes: [N,4] int -> [N,4] int64.

    Box i becomes the mean of boxes i..i+window-1, truncated to int (the
    official writes float means into an int array). The last window-1 boxes
    all use the final window, which the official loop updates in place, so
    their means already include the smoothed boxes before them; this is
    reproduced. Deviation: for N < window the official slice start goes
    negative and wraps around; here the window is the whole clip instead.
    """
    b = np.array(boxes, np.int64)
    n = len(b)
    if n == 0:
        return b.reshape(0, 4)
    t = min(window, n)
    # Windows starting at 0..n-t lie ahead of every update: one vectorised pass.
    csum = np.concatenate([np.zeros((1, b.shape[1]), np.int64), np.cumsum(b, axis=0)])
    head = n - t + 1
    b[:head] = ((csum[t : t + head] - csum[:head]) / t).astype(np.int64)
    for i in range(head, n):  # at most window-1 tail frames, each sees earlier updates
        b[i] = (b[n - t :].sum(axis=0) / t).astype(np.int64)
    return b


def fill_gaps(
    boxes: np.ndarray, found: np.ndarray, max_gap: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Give frames without a detection the box of the nearest detected frame.

    boxes [N,4] int64, found [N] bool -> (boxes [N,4] int64, has_face [N] bool).
    A frame borrows from the nearest detected frame (the earlier one on a tie);
    it counts as having a face when that frame is at most `max_gap` frames
    away. Beyond that it still carries the borrowed box (so crops and
    smoothing stay defined) but has_face is False. With no detection at all,
    every frame gets the whole frame and has_face False.
    """
    boxes = np.asarray(boxes, np.int64)
    found = np.asarray(found, bool)
    n = len(found)
    hits = np.flatnonzero(found)
    if hits.size == 0:
        return np.tile(np.array([0, 0, width, height], np.int64), (n, 1)), np.zeros(n, bool)
    idx = np.arange(n)
    pos = np.searchsorted(hits, idx)  # first detected frame at or after idx
    after = hits[np.minimum(pos, hits.size - 1)]
    before = hits[np.maximum(pos - 1, 0)]
    d_after = np.where(after >= idx, after - idx, n + 1)
    d_before = np.where(before <= idx, idx - before, n + 1)
    source = np.where(d_before <= d_after, before, after)
    distance = np.minimum(d_before, d_after)
    return boxes[source], distance <= max_gap


def track_from_detections(
    boxes: np.ndarray,
    found: np.ndarray,
    height: int,
    width: int,
    *,
    fixed: bool = False,
    pads: Sequence[int] | str = (0, 0, 0, 0),
    smooth: bool = True,
    max_gap: int = MAX_GAP,
) -> FaceTrack:
    """Raw detector output -> FaceTrack: the face-box post-processing.

    boxes [N,4] (x1,y1,x2,y2) and found [N] bool from a detector on frames of
    `height` x `width`. Detector boxes get the pads and are clamped to the frame
    (official order), frames without a detection borrow the nearest box within
    `max_gap` frames (else has_face False), then boxes are smoothed over the
    official 5-frame window when `smooth`. With `fixed` (a fixed-crop detector,
    as the official VoxCeleb2 crop and Wav2Lip's `--box`) the boxes are used as
    they are.
    """
    boxes, found = np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(found, bool)
    if fixed:
        return FaceTrack(boxes, found)
    boxes = apply_pads(boxes, pads, height, width)
    boxes, has_face = fill_gaps(boxes, found, max_gap, height, width)
    if smooth:
        boxes = smooth_boxes(boxes)
    return FaceTrack(boxes, has_face)


def detect_faces(
    frames: np.ndarray,
    detector: FaceDetector,
    pads: Sequence[int] | str = (0, 0, 0, 0),
    smooth: bool = True,
    max_gap: int = MAX_GAP,
) -> FaceTrack:
    """Face boxes for a video: frames [N,H,W,3] uint8 RGB -> FaceTrack.

    Runs the detector on all frames and post-processes its boxes with
    :func:`track_from_detections`: pads and clamping, gap filling within
    `max_gap` frames, the official 5-frame smoothing when `smooth`; fixed-crop
    detectors (`detector.fixed`) are used as is. A video never fails for
    faceless frames: check `has_face`.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [N,H,W,3] uint8 RGB, got {frames.shape} {frames.dtype}")
    n, h, w, _ = frames.shape
    boxes, found = detector(frames)
    return track_from_detections(
        boxes, found, h, w, fixed=getattr(detector, "fixed", False), pads=pads, smooth=smooth, max_gap=max_gap
    )


def _check_boxes(boxes: np.ndarray, n: int) -> np.ndarray:
    boxes = np.asarray(boxes, np.int64)
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must be [{n},4] (x1,y1,x2,y2), got {boxes.shape}")
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise ValueError("every box needs x2 > x1 and y2 > y1")
    return boxes


def crop_and_resize(frames: np.ndarray, boxes: np.ndarray, size: int = 128) -> np.ndarray:
    """Face crops: frames [N,H,W,3] uint8, boxes [N,4] (x1,y1,x2,y2) -> [N,size,size,3] uint8.

    cv2.resize with its default bilinear interpolation, as the official code.
    """
    frames = np.asarray(frames)
    boxes = _check_boxes(boxes, len(frames))
    out = np.empty((len(frames), size, size, frames.shape[-1]), np.uint8)
    for i, (frame, (x1, y1, x2, y2)) in enumerate(zip(frames, boxes)):
        out[i] = cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2]), (size, size))
    return out


def paste_back(frames: np.ndarray, crops: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Write crops back into frames: -> new [N,H,W,3] uint8 (inputs untouched).

    Each crop [S,S,3] (uint8, or float in [0,255]: clipped and truncated to
    uint8 as the official `astype(np.uint8)`) is resized bilinearly to its box size and
    replaces `frame[y1:y2, x1:x2]`, as the official generate does.
    """
    out = np.array(frames, np.uint8, copy=True)
    boxes = _check_boxes(boxes, len(out))
    crops = np.asarray(crops)
    if len(crops) != len(out):
        raise ValueError(f"{len(crops)} crops for {len(out)} frames")
    if crops.dtype != np.uint8:
        crops = np.clip(crops, 0, 255).astype(np.uint8)
    for frame, crop, (x1, y1, x2, y2) in zip(out, crops, boxes):
        frame[y1:y2, x1:x2] = cv2.resize(np.ascontiguousarray(crop), (int(x2 - x1), int(y2 - y1)))
    return out

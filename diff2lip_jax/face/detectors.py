"""Face detectors behind one interface, the default-detector policy, and `make_detector`.

A detector is a callable `frames [N,H,W,3] uint8 RGB -> (boxes [N,4] int64
(x1, y1, x2, y2), found [N] bool)` with a class attribute `fixed`: True for
fixed crops, whose box is used as is (no pads, no smoothing, never missing).
Boxes of frames where `found` is False are zeros and meaningless.

Kinds: "dlib" (dlib's HOG detector, offline, boxes mapped to S3FD's convention
and refined by the 68 landmarks when the `landmarks` extra is installed; see
`dlib_hog`), "s3fd" (the official detector; weights from the
`diff2lip_jax.weights` cache, fetched on first use), "voxceleb2" (the official
fixed VoxCeleb2 crop), "box" (a user box).

Default (`kind=None`, the CLIs' default): "s3fd" when its weights are in the
cache or can be fetched, else "dlib" with a one-line notice on stderr
(:func:`resolve_detector_kind`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from diff2lip_jax.face.s3fd import S3FDDetector

DETECTOR_KINDS = ("dlib", "s3fd", "voxceleb2", "box")
# Kinds whose crops are those the official checkpoint was trained on (S3FD boxes, or the
# fixed VoxCeleb2 crop of the official generate.py).
OFFICIAL_CROP_KINDS = ("s3fd", "voxceleb2")


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


def default_detector_kind() -> tuple[str, str | None]:
    """The default policy: ("s3fd", None) when S3FD's weights are in the `diff2lip_jax.weights`
    cache or can be fetched now (offline the fetch fails at once), else ("dlib", the
    one-line notice saying why, without a program prefix)."""
    from diff2lip_jax import weights

    try:
        weights.fetch("s3fd")
    except weights.WeightsError as e:
        return "dlib", f"face detector dlib (offline HOG), not the official S3FD: {e}"
    return "s3fd", None


def resolve_detector_kind(kind: str | None = None, prog: str = "diff2lip") -> str:
    """The detector kind to use: `kind` itself when given, else :func:`default_detector_kind`,
    whose notice (when it falls back to dlib) goes to stderr as one line `{prog}: note: ...`.
    An unknown `kind` raises ValueError listing the kinds."""
    if kind is not None:
        if kind not in DETECTOR_KINDS:
            raise ValueError(f"unknown face detector {kind!r}; expected one of {', '.join(DETECTOR_KINDS)}")
        return kind
    kind, notice = default_detector_kind()
    if notice:
        print(f"{prog}: note: {notice}", file=sys.stderr, flush=True)
    return kind


def make_detector(
    kind: str | None = None,
    weights_path: str | os.PathLike[str] | None = None,
    batch_size: int = 4,
    box: Sequence[int] | None = None,
) -> FaceDetector:
    """Build a detector by kind.

    kind: None (the default policy of :func:`resolve_detector_kind`: s3fd when
    its weights are at hand, else dlib; with a `weights_path`: s3fd), "dlib" (offline: `dlib_hog.DlibDetector`),
    "s3fd" (`weights_path`: a local copy of the official s3fd.pth; default the
    `diff2lip_jax.weights` cache's, fetched on first use; `batch_size` frames per
    jitted forward: the official uses 64 on a GPU, 4 keeps a 720p batch near 2 GB
    on CPU), "voxceleb2" (the official fixed crop), "box" (`box` = (y1, y2, x1, x2)).
    """
    if kind is None and weights_path is None:
        kind = resolve_detector_kind(None)
    elif kind is None:
        kind = "s3fd"
    if kind == "dlib":
        from diff2lip_jax.face.dlib_hog import DlibDetector

        return DlibDetector()
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

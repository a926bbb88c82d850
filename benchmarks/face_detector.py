"""The offline face detector on a smoothly moving real face: detection rate, box-size jitter,
speed, the smallest face found, and the HOG -> S3FD-convention box mapping fit.

    python benchmarks/face_detector.py [--frames 50] [--small_scales 0.6,0.5,0.45,0.4,0.35,0.3]

Clip: skimage's astronaut gliding and zooming over 640x480 frames
(``data_pipelines.synthetic.moving_photo``), bright and darkened to 40%. Jitter: mean
|box height - its 5-frame moving average| in % of the box height, on the raw
detector boxes (no smoothing). Rows: "dlib" (HOG boxes mapped by HOG_TO_S3FD) and
"dlib+landmarks" (boxes from the 68 landmarks; needs the ``landmarks`` extra).
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags

from data_pipelines.synthetic.moving_photo import PHOTO_FACE_WIDTH, box_height_jitter, moving_photo_clip
from diff2lip_jax.face import dlib_hog
from diff2lip_jax.face import landmarks as landmarks_lib

_FRAMES = flags.DEFINE_integer("frames", 50, "Frames per clip.")
_SMALL = flags.DEFINE_list("small_scales", ["0.6", "0.5", "0.45", "0.4", "0.35", "0.3"], "Photo scales tried.")


def _row(name: str, detector: dlib_hog.DlibDetector, frames: np.ndarray) -> None:
    start = time.perf_counter()
    boxes, found = detector(frames)
    ms = (time.perf_counter() - start) / len(frames) * 1000
    jitter = box_height_jitter(boxes[found]) if found.all() else float("nan")
    h = boxes[found, 3] - boxes[found, 1]
    print(
        f"  {name:15s} found {found.mean():6.1%}  jitter {jitter:5.2f}%  {ms:6.1f} ms/frame  box h {h.min()}-{h.max()}"
    )


def _mapping_fit(frames_sets: list[np.ndarray]) -> None:
    hog = dlib_hog.HogFaces(max_upsample=0)
    rel = []
    for frames in frames_sets:
        for frame in frames:
            rect = hog.best(frame)
            if rect is None:
                continue
            raw = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], float)
            target = landmarks_lib.landmark_box(landmarks_lib.landmarks_in_box(frame, rect))
            rel.append((target - raw) / (raw[2] - raw[0]))
    rel = np.array(rel)
    print(f"HOG -> landmark box offsets over {len(rel)} frames, in HOG box sides (x1, y1, x2, y2):")
    print(f"  mean {np.round(rel.mean(0), 3).tolist()}  std {np.round(rel.std(0), 3).tolist()}")
    print(f"  in use (dlib_hog.HOG_TO_S3FD): {list(dlib_hog.HOG_TO_S3FD)}")


def main(argv: list[str]) -> None:
    del argv
    have_lm = landmarks_lib.have_shape_predictor()
    detectors = [("dlib", dlib_hog.DlibDetector(refine=False))]
    if have_lm:
        detectors.append(("dlib+landmarks", dlib_hog.DlibDetector(refine=True)))
    else:
        print(f"note: {landmarks_lib.MISSING}; only the HOG rows")
    clips = {}
    for brightness in (1.0, 0.4):
        clips[brightness] = moving_photo_clip(_FRAMES.value, brightness=brightness)
        print(f"moving astronaut, 640x480, {_FRAMES.value} frames, brightness {brightness:.0%}, face ~84-112 px wide:")
        for name, det in detectors:
            _row(name, det, clips[brightness])
    print("small faces (photo scale s: face ~93*s px wide), bright, 10 frames each:")
    for s in (float(v) for v in _SMALL.value):
        frames = moving_photo_clip(10, scale=(s, s * 1.05))
        for name, det in detectors:
            _row(f"{name} s={s:g} ({PHOTO_FACE_WIDTH * s:.0f} px)", det, frames)
    if have_lm:
        _mapping_fit(list(clips.values()))


if __name__ == "__main__":
    app.run(main)

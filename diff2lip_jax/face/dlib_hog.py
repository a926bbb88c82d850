"""The offline face detector: dlib's HOG frontal-face detector, boxes mapped to S3FD's convention;
and the built-in LMD landmark model (HOG face + dlib's 68 landmarks, :class:`DlibLandmarks`).

dlib's detector (HOG features + a linear SVM over an image pyramid; ``dlib-bin``:
Boost licence, no model file to download) finds frontal faces of at least ~80 px;
each doubling of the image (`upsample`) halves that, at four times the cost.
Detections scoring under `SCORE_THRESHOLD` are dropped: dlib reports scores down
to 0, and the false positives (patches of texture) score low; in a sequence, a
detection overlapping the previous frame's face needs only dlib's own threshold, 0
(:meth:`HogFaces.track`: the drawn synthetic faces' scores dip to ~0.16).

Box convention. The model's training crops are S3FD boxes (plus pads 0,10,0,0 in
the official code). dlib's HOG box is smaller: a square from the brows to just
above the chin. Two mappings, both to the box that :func:`landmarks.landmark_box`
defines from the 68 landmarks (cheek to cheek, upper forehead to chin: the WIDER
FACE convention S3FD was trained on; no S3FD output can be produced offline to
calibrate against, its weights being a download):

* with the ``landmarks`` extra (the default when installed): the shape predictor
  runs in the HOG box and the box is :func:`landmark_box` of its points. This is
  also far steadier: HOG boxes come from a pyramid with 5/6 steps, so their size
  jumps from frame to frame, while the landmarks follow the face smoothly.
* without it: the HOG box grown by `HOG_TO_S3FD` (fractions of the HOG box side
  for x1, y1, x2, y2), the mean offset of :func:`landmark_box` from the HOG box
  measured on the moving astronaut clip (faces 84-112 px wide, bright and at 40%
  brightness; ``benchmarks/face_detector.py`` prints the fit;
  ``tests/test_dlib_face.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diff2lip_jax.face import landmarks as landmarks_lib

SCORE_THRESHOLD = 0.3
# (x1, y1, x2, y2) offsets of the S3FD-convention box from the HOG box, in HOG box sides.
HOG_TO_S3FD = (0.0, -0.11, 0.01, 0.07)

__all__ = ["HOG_TO_S3FD", "SCORE_THRESHOLD", "DlibDetector", "DlibLandmarks", "HogFaces", "map_hog_box"]


class HogFaces:
    """dlib's HOG detector returning the most confident face of each image.

    score_threshold: a detection needs this score, or, in a sequence (:meth:`track`),
    `continuity_threshold` (dlib's own default, 0) when it overlaps the previous
    frame's face (IoU > 0.5): a face seen a frame ago whose score dips for a frame
    stays found, while a low-score detection elsewhere (texture, background) is
    still refused. max_upsample: when nothing is found, the image is doubled up to
    this many times (0: faces of >= ~80 px only; 1: >= ~40 px, 4x the time for those
    frames).
    """

    def __init__(
        self, score_threshold: float = SCORE_THRESHOLD, max_upsample: int = 1, continuity_threshold: float = 0.0
    ):
        import dlib

        if max_upsample < 0:
            raise ValueError(f"max_upsample must be >= 0, got {max_upsample}")
        self._detector = dlib.get_frontal_face_detector()
        self.score_threshold, self.max_upsample = float(score_threshold), int(max_upsample)
        self.continuity_threshold = min(float(continuity_threshold), self.score_threshold)

    def best(self, image: np.ndarray, previous: Any = None) -> Any:
        """image [H,W,3] uint8 RGB -> the best ``dlib.rectangle``, or None.

        previous: the face's ``dlib.rectangle`` in the frame before (None: none or unknown).
        """
        image = np.ascontiguousarray(image)
        for upsample in range(self.max_upsample + 1):
            rects, scores, _ = self._detector.run(image, upsample, self.continuity_threshold)
            for i in (int(j) for j in np.argsort(scores)[::-1]):
                if scores[i] >= self.score_threshold or (previous is not None and _iou(rects[i], previous) > 0.5):
                    return rects[i]
        return None

    def all_faces(self, image: np.ndarray) -> list[tuple[Any, float]]:
        """image [H,W,3] uint8 RGB -> every face as (``dlib.rectangle``, score), scores down to
        `continuity_threshold`; upsampled (up to `max_upsample`) while none reaches `score_threshold`."""
        image = np.ascontiguousarray(image)
        found: list[tuple[Any, float]] = []
        for upsample in range(self.max_upsample + 1):
            rects, scores, _ = self._detector.run(image, upsample, self.continuity_threshold)
            found = [(rects[i], float(scores[i])) for i in range(len(rects))]
            if any(score >= self.score_threshold for _, score in found):
                break
        return found

    def track(self, frames: np.ndarray) -> list[Any]:
        """frames [N,H,W,3] uint8 RGB (a sequence) -> the face ``dlib.rectangle`` or None of each."""
        out, previous = [], None
        for frame in frames:
            previous = self.best(frame, previous)
            out.append(previous)
        return out


def _iou(a: Any, b: Any) -> float:
    """IoU of two ``dlib.rectangle``."""
    inter = a.intersect(b)
    overlap = inter.area() if not inter.is_empty() else 0
    return overlap / max(1, a.area() + b.area() - overlap)


def _uint8_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [N,H,W,3] uint8 RGB, got {frames.shape} {frames.dtype}")
    return frames


def map_hog_box(rect: Any) -> np.ndarray:
    """A HOG box (``dlib.rectangle`` or (x1, y1, x2, y2), inclusive corners as dlib gives them)
    -> float64 [4] (x1, y1, x2, y2) in the S3FD convention, without landmarks (`HOG_TO_S3FD`)."""
    if hasattr(rect, "left"):
        rect = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
    box = np.asarray(rect, np.float64)
    side = box[2] - box[0]
    return box + side * np.asarray(HOG_TO_S3FD)


class DlibDetector:
    """The offline face detector (kind "dlib"): frames [N,H,W,3] uint8 RGB ->
    (boxes [N,4] int64 x1,y1,x2,y2 in the S3FD convention, found [N] bool).

    refine: place the 68 landmarks in each HOG box and take their box
    (:func:`landmarks.landmark_box`); None = when the ``landmarks`` extra is
    installed. score_threshold, max_upsample: see :class:`HogFaces`. One face
    per frame (the most confident: one talking head per video; frames are a sequence,
    see :meth:`HogFaces.track`). Boxes are
    clamped at 0 (as S3FD's); the track clamps them to the frame.
    """

    fixed = False

    def __init__(
        self, refine: bool | None = None, score_threshold: float = SCORE_THRESHOLD, max_upsample: int = 1
    ) -> None:
        if refine is None:
            refine = landmarks_lib.have_shape_predictor()
        if refine:
            landmarks_lib.shape_predictor()  # ImportError naming the extra, before any frame
        self.refine = bool(refine)
        self._hog = HogFaces(score_threshold, max_upsample)

    def box(self, frame: np.ndarray, rect: Any) -> np.ndarray:
        """The S3FD-convention box float64 [4] (x1, y1, x2, y2) of the face in HOG box `rect`
        of frame [H,W,3] uint8 RGB."""
        if self.refine:
            return landmarks_lib.landmark_box(landmarks_lib.landmarks_in_box(frame, rect))
        return map_hog_box(rect)

    @property
    def score_threshold(self) -> float:
        """The score a face needs to start a track (lower-scoring faces may continue one)."""
        return self._hog.score_threshold

    def detect_all(self, frames: np.ndarray) -> list[np.ndarray]:
        """frames [N,H,W,3] uint8 RGB -> per frame every face float64 [K,5] (x1, y1, x2, y2, score),
        boxes in the S3FD convention, for following one face among several (`face.FaceFollower`)."""
        out = []
        for frame in _uint8_frames(frames):
            faces = [(*np.clip(self.box(frame, rect), 0, None), score) for rect, score in self._hog.all_faces(frame)]
            out.append(np.asarray(faces, np.float64).reshape(-1, 5))
        return out

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = _uint8_frames(frames)
        boxes = np.zeros((len(frames), 4), np.int64)
        found = np.zeros(len(frames), bool)
        for i, (frame, rect) in enumerate(zip(frames, self._hog.track(frames))):
            if rect is not None:
                boxes[i] = np.clip(np.round(self.box(frame, rect)), 0, None).astype(np.int64)
                found[i] = boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]
        return boxes, found


class DlibLandmarks:
    """Built-in LMD landmark model: frames [N,H,W,3] uint8 RGB -> float64 [N,68,2] (NaN rows: no face).

    Each frame's face is found by dlib's HOG detector (the most confident one
    above `score_threshold`, with up to `max_upsample` image doublings for
    small faces, e.g. 128 px crops need none; frames are a sequence, see
    :meth:`HogFaces.track`), then the shape predictor places the 68 points.
    Needs the ``landmarks`` extra (ImportError naming it otherwise).
    """

    def __init__(self, score_threshold: float | None = None, max_upsample: int = 1):
        landmarks_lib.shape_predictor()  # fail now, with the extra's name, not on the first frame
        self._hog = HogFaces(SCORE_THRESHOLD if score_threshold is None else score_threshold, max_upsample)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _uint8_frames(frames)
        out = np.full((len(frames), 68, 2), np.nan)
        for i, (frame, rect) in enumerate(zip(frames, self._hog.track(frames))):
            if rect is not None:
                out[i] = landmarks_lib.landmarks_in_box(frame, rect)
        return out

"""Mouth-opening correlation on synthetic clips, whose ground truth is known.

``diff2lip-synth`` writes ``<clip>.json`` beside each ``<clip>.mp4`` with the true
``mouth_opening`` ``[F]`` in [0, 1] and ``mouth_boxes`` ``[F, 4]`` (x1, y1, x2, y2 in
frame pixels, lips included). From those:

* :func:`mouth_darkness` measures how open a mouth is in any video: per frame, the
  fraction of *dark* pixels inside a given mouth box. :func:`measure_mouth` uses a
  clip's *steady* mouth boxes (:func:`steady_boxes`): each frame's true box centre
  (which follows the head) with the clip's largest box size. The true boxes
  themselves grow with the true opening, so a window of that size would put the
  source's opening into the measure of any video: a frozen open mouth measured in
  them correlates with the source's opening at r down to -0.9 (box area up, dark
  share down); in steady boxes |r| stays at chance level. The renderer
  (``data_pipelines/synthetic/faces.py``, ``draw_mouth``) fills the opening with a
  near-black inner colour, RGB (40, 10, 15) on drawn faces and (45, 12, 18) on the
  photo; lips are the skin reddened (red ~90 or more even on the darkest skin
  tone) and teeth near-white. A pixel is dark when its largest channel (the HSV
  value) is below ``DARK_MAX_CHANNEL = 60``: measured on encoded 128 and 256 px
  clips, the open interior's largest channel is at most ~53 (H.264's 4:2:0 chroma
  blur lifts it from 45, so 45 would miss it), and with the mouth closed 99 % of
  the box's pixels are above 66 (only the thin seam between the lips is darker).
  On untouched synthetic clips the measure (steady boxes) correlates with the true
  opening at r = 0.94-0.99 (mean 0.96; 20 clips of 3-8 s at 128 and 256 px), a
  little lower on smaller faces: 0.91-0.97 at 96 px, 0.87-0.97 at 64 px.
* :func:`correlations` compares such a measure with true openings (Pearson r over
  the frames both have): ``mouth_sync`` with the driving (audio source) clip's
  opening, what a lip-synced video follows; ``mouth_copy`` with the video source's
  own opening, what a model that copies its input mouth follows; ``mouth_chance``
  between the two true openings, the level of an unrelated mouth.

r is undefined (NaN, JSON null) when either sequence is constant over those frames,
e.g. a frozen closed mouth, which has no dark pixels at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable

import numpy as np

DARK_MAX_CHANNEL = 60
MOUTH_KEYS = ("mouth_sync", "mouth_copy", "mouth_chance")
NO_TRUTH = (
    "no ground truth: needs <clip>.json with mouth_opening and mouth_boxes beside the source videos "
    "(diff2lip-synth writes one per clip)"
)

__all__ = [
    "DARK_MAX_CHANNEL",
    "MOUTH_KEYS",
    "NO_TRUTH",
    "MouthTruth",
    "truth_path",
    "has_truth",
    "load_truth",
    "TruthCache",
    "steady_boxes",
    "mouth_darkness",
    "measure_mouth",
    "pearson",
    "correlations",
    "mouth_record",
]


@dataclasses.dataclass(frozen=True)
class MouthTruth:
    """A synthetic clip's mouth ground truth: ``opening`` float64 ``[F]`` in [0, 1],
    ``boxes`` float64 ``[F, 4]`` (x1, y1, x2, y2, frame pixels), ``fps``."""

    opening: np.ndarray
    boxes: np.ndarray
    fps: float


def truth_path(video: str | os.PathLike[str]) -> pathlib.Path:
    """The ground-truth json beside a clip: ``<clip>.json`` for ``<clip>.<ext>``."""
    return pathlib.Path(video).with_suffix(".json")


def has_truth(videos: Iterable[str | os.PathLike[str]]) -> bool:
    """Whether every one of these clips has a json beside it (not yet checked to be a ground truth)."""
    return all(truth_path(v).is_file() for v in videos)


def load_truth(video: str | os.PathLike[str], fps: float) -> MouthTruth | None:
    """The ground truth of the clip ``video``, or None when it has no json beside it.

    Args:
      video: the clip's video path (the json is :func:`truth_path`).
      fps: the rate the evaluation decodes frames at; the truth must be at that rate.

    Raises:
      ValueError: a json that is not a ground truth (unreadable, no ``mouth_opening``
        ``[F]`` / ``mouth_boxes`` ``[F, 4]`` of one length, or another frame rate).
    """
    path = truth_path(video)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        opening = np.asarray(meta["mouth_opening"], np.float64)
        boxes = np.asarray(meta["mouth_boxes"], np.float64)
        truth_fps = float(meta.get("fps", fps))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: not a ground-truth json with mouth_opening and mouth_boxes ({e!r})") from None
    if opening.ndim != 1 or boxes.shape != (len(opening), 4):
        raise ValueError(
            f"{path}: mouth_opening must be [F] and mouth_boxes [F, 4], got {opening.shape} and {boxes.shape}"
        )
    if abs(truth_fps - fps) > 1e-6:
        raise ValueError(f"{path}: the ground truth is at {truth_fps:g} fps; the evaluation decodes at {fps:g}")
    return MouthTruth(opening, boxes, truth_fps)


class TruthCache:
    """Ground truths of source clips, each read once (``fps``: see :func:`load_truth`)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._truths: dict[pathlib.Path, MouthTruth | str | None] = {}  # None: no json; str: why unusable

    def pair(
        self, audio_source: pathlib.Path, video_source: pathlib.Path
    ) -> tuple[MouthTruth | None, MouthTruth | None, str | None]:
        """(audio source truth, video source truth, why mouth r cannot be computed for the pair, or None)."""
        out, why = [], None
        for path in (audio_source, video_source):
            if path not in self._truths:
                try:
                    self._truths[path] = load_truth(path, self.fps)
                except ValueError as e:
                    self._truths[path] = " ".join(str(e).split())
            truth = self._truths[path]
            if not isinstance(truth, MouthTruth):
                why = why or (truth if isinstance(truth, str) else f"no ground truth {truth_path(path)}")
                truth = None
            out.append(truth)
        return out[0], out[1], why


def steady_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes of one size: each box's centre, the largest width and height of all of them.

    Args:
      boxes: ``[F, 4]`` (x1, y1, x2, y2).

    Returns:
      float64 ``[F, 4]``.
    """
    boxes = np.asarray(boxes, np.float64)
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]).max(axis=0)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def mouth_darkness(frames: np.ndarray, boxes: np.ndarray, threshold: int = DARK_MAX_CHANNEL) -> np.ndarray:
    """Per frame, the fraction of dark pixels inside that frame's mouth box.

    Args:
      frames: uint8 ``[N, H, W, 3]`` RGB.
      boxes: ``[N, 4]`` (x1, y1, x2, y2) in pixels of those frames; every pixel the
        box touches counts (floor of x1/y1 to ceil of x2/y2), clipped to the frame.
      threshold: a pixel is dark when its largest channel is below this.

    Returns:
      float64 ``[N]`` in [0, 1]; NaN for a box that lies outside the frame.
    """
    frames, boxes = np.asarray(frames), np.asarray(boxes, np.float64)
    if frames.ndim != 4 or boxes.shape != (len(frames), 4):
        raise ValueError(f"need frames [N, H, W, 3] and boxes [N, 4], got {frames.shape} and {boxes.shape}")
    h, w = frames.shape[1:3]
    lo = np.maximum(np.floor(boxes[:, :2]), 0).astype(np.int64)
    hi = np.minimum(np.ceil(boxes[:, 2:]), [w, h]).astype(np.int64)
    out = np.full(len(frames), np.nan)
    for i, ((x1, y1), (x2, y2)) in enumerate(zip(lo, hi)):
        if x2 > x1 and y2 > y1:
            out[i] = np.mean(frames[i, y1:y2, x1:x2].max(axis=-1) < threshold)
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two sequences over their first ``min(len(a), len(b))`` entries.

    Entries where either is NaN are dropped. Returns NaN when fewer than 2 remain
    or either sequence is constant over them (r is undefined).
    """
    n = min(len(a), len(b))
    x, y = np.asarray(a, np.float64)[:n], np.asarray(b, np.float64)[:n]
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    if len(x) < 2 or denom == 0.0:
        return float("nan")
    return float(np.clip(np.sum(x * y) / denom, -1.0, 1.0))


def correlations(measure: np.ndarray, driving: np.ndarray, video: np.ndarray) -> dict[str, float | int]:
    """``mouth_sync``, ``mouth_copy``, ``mouth_chance`` (see module doc) and ``mouth_frames``.

    Args:
      measure: float ``[N]`` mouth measure of the video scored (:func:`mouth_darkness`).
      driving: float ``[A]`` true opening of the audio source.
      video: float ``[V]`` true opening of the video source.

    All three use the first ``mouth_frames = min(N, A, V)`` frames.
    """
    n = min(len(measure), len(driving), len(video))
    m, d, v = measure[:n], driving[:n], video[:n]
    return {"mouth_sync": pearson(m, d), "mouth_copy": pearson(m, v), "mouth_chance": pearson(d, v), "mouth_frames": n}


def measure_mouth(frames: np.ndarray, boxes_of: MouthTruth) -> np.ndarray:
    """The mouth opening measure of ``frames`` (uint8 ``[N, H, W, 3]``) in the steady mouth
    boxes of the clip ``boxes_of``: float64 ``[min(N, F)]`` (:func:`mouth_darkness`)."""
    n = min(len(frames), len(boxes_of.boxes))
    return mouth_darkness(frames[:n], steady_boxes(boxes_of.boxes)[:n])


def mouth_record(frames: np.ndarray, boxes_of: MouthTruth, driving: MouthTruth, video: MouthTruth) -> dict:
    """:func:`correlations` of ``frames`` (uint8 ``[N, H, W, 3]``) measured in the steady
    mouth boxes of ``boxes_of`` (:func:`measure_mouth`), against the true openings of
    the ``driving`` (audio source) and ``video`` (video source) clips."""
    return correlations(measure_mouth(frames, boxes_of), driving.opening, video.opening)

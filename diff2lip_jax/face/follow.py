"""Following one face through a video when a frame holds several.

A detector that lists every face (`detect_all(frames) -> [K_i, 5]` per frame: x1, y1,
x2, y2, score) gives several candidates per frame; `FaceFollower` turns them into one
box per frame for the face chosen at the start:

* the target is the largest face of the first frame that has one (`face_index=k`: the
  k-th largest, 0-based), or the face that best covers a box hint;
* in each later frame, the candidate that overlaps the last tracked box most (IoU at
  least `min_iou`) continues the track; a face that moved faster than that, or came back
  after being absent, is picked up again when its centre lies within `reacquire` face
  sizes of where the track was last seen and its size is within a factor of
  `max_size_ratio`; another face elsewhere in the frame is never taken;
* frames without the target are reported as not found (the pipeline passes them through).

It is streaming (state across `update` calls), so generation's chunked face pass uses it
as is. Boxes: int64 (x1, y1, x2, y2), end exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def box_iou(box: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with candidates [K, 4] (x1, y1, x2, y2) -> [K] float64."""
    b = np.asarray(box, np.float64)
    c = np.asarray(candidates, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(b[2], c[:, 2]) - np.maximum(b[0], c[:, 0]), 0, None)
    h = np.clip(np.minimum(b[3], c[:, 3]) - np.maximum(b[1], c[:, 1]), 0, None)
    inter = w * h
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)
    return inter / np.maximum(area(b) + area(c) - inter, 1e-9)


def check_face_index(face_index: int) -> int:
    """`face_index` as an int, or ValueError (worded for --face_index) when it is negative:
    a negative index would silently pick from the smallest faces."""
    if int(face_index) < 0:
        raise ValueError(f"--face_index={face_index}: must be >= 0 (0 = the largest face)")
    return int(face_index)


def _size(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 1, None) * np.clip(boxes[:, 3] - boxes[:, 1], 1, None))


def _centre(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


class FaceFollower:
    """Picks the tracked face's box from each frame's candidates.

    Args:
      face_index: which face to follow at the start, by size (0 = the largest).
      hint: (x1, y1, x2, y2) near the face to follow at the start (overrides face_index).
      min_iou: overlap with the last tracked box that continues the track.
      reacquire: centre distance, in face sizes (sqrt of the box area), within which a
        candidate resumes a track that was lost or jumped.
      max_size_ratio: largest size change (either way) accepted when resuming.
      min_score: the score (column 4 of a candidate, when given) a face needs to start
        or resume the track; a face already followed by overlap continues at any score
        (a detector's score dips for a frame or two on the same face).
    """

    def __init__(
        self,
        face_index: int = 0,
        hint: Sequence[int] | None = None,
        min_iou: float = 0.3,
        reacquire: float = 1.0,
        max_size_ratio: float = 1.5,
        min_score: float = -np.inf,
    ):
        if hint is not None and len(hint) != 4:
            raise ValueError(f"face hint must be (x1, y1, x2, y2), got {hint}")
        self.face_index = check_face_index(face_index)
        self.hint = None if hint is None else np.asarray(hint, np.float64)
        self.min_iou, self.reacquire, self.max_size_ratio = min_iou, reacquire, max_size_ratio
        self.min_score = float(min_score)
        self.last: np.ndarray | None = None  # the last tracked box
        self.started = False

    def _confident(self, cands: np.ndarray) -> np.ndarray:
        return cands[:, 4] >= self.min_score if cands.shape[1] > 4 else np.ones(len(cands), bool)

    def _start(self, cands: np.ndarray) -> int | None:
        keep = np.flatnonzero(self._confident(cands))
        pick = self._start_among(cands[keep])
        return None if pick is None else int(keep[pick])

    def _start_among(self, cands: np.ndarray) -> int | None:
        if not len(cands):
            return None
        if self.hint is not None:
            iou = box_iou(self.hint, cands[:, :4])
            if iou.max() > 0:
                return int(iou.argmax())
            return int(np.linalg.norm(_centre(cands[:, :4]) - _centre(self.hint), axis=1).argmin())
        if len(cands) <= self.face_index:
            return None  # not enough faces yet: wait for a frame that has them
        order = np.argsort(-_size(cands[:, :4]), kind="stable")
        return int(order[self.face_index])

    def _continue(self, cands: np.ndarray) -> int | None:
        boxes = cands[:, :4]
        iou = box_iou(self.last, boxes)
        if iou.max() >= self.min_iou:
            return int(iou.argmax())
        size = _size(self.last[None])[0]
        dist = np.linalg.norm(_centre(boxes) - _centre(self.last), axis=1) / size
        ratio = _size(boxes) / size
        ok = (dist <= self.reacquire) & (ratio <= self.max_size_ratio) & (ratio >= 1 / self.max_size_ratio)
        ok &= self._confident(cands)
        return int(np.where(ok, dist, np.inf).argmin()) if ok.any() else None

    def update(self, candidates: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame candidates ([K_i, 4 or 5] arrays) -> (boxes [N, 4] int64, found [N] bool)."""
        boxes = np.zeros((len(candidates), 4), np.int64)
        found = np.zeros(len(candidates), bool)
        for i, cands in enumerate(candidates):
            cands = np.asarray(cands, np.float64).reshape(-1, np.shape(cands)[-1] if np.size(cands) else 4)
            if not len(cands):
                continue
            pick = self._continue(cands) if self.started else self._start(cands)
            if pick is None:
                continue
            self.started = True
            self.last = cands[pick, :4]
            boxes[i] = np.rint(self.last).astype(np.int64)
            found[i] = True
        return boxes, found

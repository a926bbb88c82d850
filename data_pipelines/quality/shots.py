"""Shot cuts with PySceneDetect's ContentDetector, and the segments a clip splits into.

The detector is fed the same 25 fps frames the records hold (decoded once by
ffmpeg in :mod:`data_pipelines.builders.clip`), so cut indices are frame indices
of the record with no second decoding pass and no frame-rate conversion between
two decoders. Frames are downscaled to at most :data:`DETECT_WIDTH` pixels wide
before detection (PySceneDetect's own ``SceneManager`` downscales the same way:
content changes of a hard cut do not need full resolution).

A cut at frame ``c`` means frame ``c`` is the first frame of a new shot.
"""

from __future__ import annotations

import cv2
import numpy as np

DETECT_WIDTH = 256  # frames wider than this are downscaled before detection
DEFAULT_THRESHOLD = 27.0  # ContentDetector's default (HSV + edge content change, 0-255 scale)


class CutFinder:
    """Incremental cut detection over chunks of RGB frames.

    Args:
      threshold: ContentDetector threshold (its default 27; lower finds more cuts).
        ``threshold <= 0`` turns detection off (``feed`` only counts frames).
      fps: frame rate of the frames fed (25 for records).
      min_shot_frames: cuts closer than this to the previous cut are ignored
        (ContentDetector's ``min_scene_len``).

    Use: ``feed(chunk)`` for each ``[n, H, W, 3]`` uint8 RGB chunk in order, then read ``cuts``.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, fps: float = 25.0, min_shot_frames: int = 8) -> None:
        self.threshold, self.fps = float(threshold), float(fps)
        self.cuts: list[int] = []
        self.seen = 0
        self._detector = None
        if self.threshold > 0:
            from scenedetect import ContentDetector

            self._detector = ContentDetector(threshold=self.threshold, min_scene_len=int(min_shot_frames))

    def feed(self, chunk: np.ndarray) -> None:
        """Feeds uint8 RGB frames ``[n, H, W, 3]`` (the next ``n`` frames of the clip)."""
        if self._detector is None:
            self.seen += len(chunk)
            return
        from scenedetect import FrameTimecode

        for frame in chunk:
            h, w = frame.shape[:2]
            bgr = np.ascontiguousarray(frame[..., ::-1])
            if w > DETECT_WIDTH:
                bgr = cv2.resize(bgr, (DETECT_WIDTH, max(1, round(h * DETECT_WIDTH / w))), interpolation=cv2.INTER_AREA)
            found = self._detector.process_frame(FrameTimecode(self.seen, fps=self.fps), bgr)
            self.cuts.extend(int(c.frame_num) for c in found)
            self.seen += 1

    def finish(self) -> list[int]:
        """The cut frame indices, sorted, each in ``(0, frames fed)``."""
        if self._detector is not None and self.seen:
            from scenedetect import FrameTimecode

            last = FrameTimecode(self.seen - 1, fps=self.fps)
            self.cuts.extend(int(c.frame_num) for c in self._detector.post_process(last))
        return sorted({c for c in self.cuts if 0 < c < self.seen})


def shot_ranges(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """The shots ``[(start, stop), ...]`` (stop exclusive) that ``cuts`` split ``num_frames`` frames into."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < num_frames), num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

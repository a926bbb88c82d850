"""Side-by-side comparison videos: labelled panels in one row, with one audio track.

Used by ``diff2lip-generate --side_by_side`` (video source | lip-synced | driving
clip, with the driving audio) so that a viewer can check at a glance whether the
mouth follows the sound. Panels are streamed at 25 fps (memory stays bounded for
long videos), scaled to a common height, and a panel that ends early holds its
last frame until the first panel (the lip-synced video's length) ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from diff2lip_jax.constants import FPS
from diff2lip_jax.video import VideoWriter, iter_frames

LABEL_HEIGHT = 20  # pixels of the caption bar above each panel


def _frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    for chunk in iter_frames(path, fps=float(FPS), chunk=16):
        yield from chunk


def _panel(frame: np.ndarray, height: int, label: str) -> np.ndarray:
    """uint8 [H, W, 3] -> [LABEL_HEIGHT + height, W', 3]: scaled to `height`, caption on top."""
    h, w = frame.shape[:2]
    width = max(2, int(round(w * height / h)))
    body = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)
    bar = np.zeros((LABEL_HEIGHT, width, 3), np.uint8)
    scale = min(0.45, 0.9 * width / max(1, 9 * len(label)))  # fits the caption in narrow panels
    cv2.putText(bar, label, (3, LABEL_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, body], axis=0)


def write_side_by_side(
    panels: Sequence[tuple[str | os.PathLike, str]],
    out: str | os.PathLike,
    *,
    audio_path: str | os.PathLike,
    lead: int = 0,
    height: int | None = None,
) -> int:
    """Writes the videos of `panels` ((path, caption) pairs) side by side into `out`.

    Args:
      panels: left to right; every path is a video ffmpeg can read.
      out: .mp4/.m4v/.mov/.mkv, written atomically (VideoWriter).
      audio_path: the sound of the comparison (e.g. the driving audio).
      lead: index of the panel whose length is the output's (the others hold their
        last frame, or are cut).
      height: panel height in pixels (default: the lead panel's height).

    Returns:
      The number of frames written.
    """
    streams = [_frames(path) for path, _ in panels]
    last = [next(stream, None) for stream in streams]
    empty = [path for (path, _), frame in zip(panels, last) if frame is None]
    if empty:
        raise ValueError(f"{empty[0]}: no video frames to show in the side-by-side comparison")
    h = height or last[lead].shape[0]
    count = 0
    with VideoWriter(out, fps=float(FPS), audio_path=audio_path) as writer:
        while last[lead] is not None:
            writer.write(np.concatenate([_panel(f, h, label) for f, (_, label) in zip(last, panels)], axis=1))
            count += 1
            last = [next(stream, None if i == lead else last[i]) for i, stream in enumerate(streams)]
    return count

"""A small synthetic set with planted faults for the data-quality filters (tests and
``benchmarks/quality.py``).

:func:`make_faulty_set` writes real mp4s (H.264 + AAC through ffmpeg) under
``root/<speaker>/<name>.mp4``:

* ``good_a``, ``good_b``: clean clips (3 s);
* ``cut``: identity 0 for 3 s, a hard cut, identity 2 for 3 s (two segments kept);
* ``cut_short``: identity 0 for 3 s, a hard cut, identity 2 for 1 s (cut_too_short);
* ``delayed``: a clean clip whose audio is delayed by ``DELAY`` frames (found and corrected);
* ``swapped``: a clip with another speaker's audio (sync_confidence);
* ``broken``: a text file named .mp4 (unreadable).

Returns ``{name: path}`` and the clean audio of ``delayed``.
"""

from __future__ import annotations

import pathlib

import numpy as np

from data_pipelines.synthetic import synthesize_clip
from diff2lip_jax.constants import SAMPLES_PER_FRAME
from diff2lip_jax.video import write_video

SIZE = (128, 128)
DELAY = 3  # frames
SCORER = "data_pipelines.synthetic.scorer:make"
# The mouth-energy scorer on these clips: aligned 0.57-0.93 (delayed: 0.88 once corrected), swapped 0.30.
MIN_CONFIDENCE = 0.45


def _clip(index: int, seconds: float, identities: int = 4):
    return synthesize_clip(11, index, num_identities=identities, size=SIZE, seconds=seconds)


def make_faulty_set(root: pathlib.Path, copies: int = 1) -> tuple[dict[str, pathlib.Path], np.ndarray]:
    """Writes the set (see the module doc) under ``root``; returns ``({name: mp4 path},
    the delayed clip's true audio float32 [48000])``. ``copies > 1`` writes the set that
    many times under ``root/copy<i>/`` (for timing; the names then carry ``copy<i>/``)."""
    if copies > 1:
        paths: dict[str, pathlib.Path] = {}
        for i in range(copies):
            more, true_audio = make_faulty_set(root / f"copy{i}")
            paths.update({f"copy{i}/{k}": v for k, v in more.items()})
        return paths, true_audio
    paths = {}

    def write(speaker: str, name: str, frames: np.ndarray, wav: np.ndarray) -> None:
        path = root / speaker / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames, audio=wav.astype(np.float32))
        paths[name] = path

    # Identities 0, 2 and 3 (drawn identity 1's small mouth moves the mouth scorer the least).
    a, b = _clip(0, 3.0), _clip(2, 3.0)
    write("id00000", "good_a", a.frames, a.audio)
    write("id00001", "good_b", b.frames, b.audio)
    c0, c1 = _clip(4, 3.0), _clip(6, 3.0)  # identities 0 and 2
    write("id00000", "cut", np.concatenate([c0.frames, c1.frames]), np.concatenate([c0.audio, c1.audio]))
    s1 = _clip(10, 1.0)
    write("id00000", "cut_short", np.concatenate([c0.frames, s1.frames]), np.concatenate([c0.audio, s1.audio]))
    d = _clip(3, 3.0)
    k = DELAY * SAMPLES_PER_FRAME
    write("id00002", "delayed", d.frames, np.concatenate([np.zeros(k, np.float32), d.audio[:-k]]))
    w, other = _clip(7, 3.0), _clip(8, 3.0)  # identity 3 with identity 0's speech
    write("id00003", "swapped", w.frames, other.audio)
    broken = root / "id00003" / "broken.mp4"
    broken.write_text("not a video\n")
    paths["broken"] = broken
    return paths, d.audio

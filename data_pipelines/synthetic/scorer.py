"""A transparent sync scorer for the synthetic talking faces, whose mouth opens with the audio.

The face embedding of a 5-frame window is the darkness of the mouth region of
each crop (the drawn mouth's opening darkens it), the audio embedding the mouth
opening the generator derives from each frame's 640 samples
(:func:`data_pipelines.synthetic.voice.mouth_from_audio`: the ground-truth mapping
of audio level to opening); both with their mean and linear trend over the 5
frames removed (slow head motion changes the light on the crop), unit-normed, so
the distance is small when the mouth opens and closes with the sound. It implements
:class:`diff2lip_jax.evaluate.lse.SyncScorer` without a network: tests and the
synthetic benchmark of the sync filter use it as
``--sync_scorer=data_pipelines.synthetic.scorer:make``. On real faces it means nothing.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.synthetic.voice import mouth_from_audio
from diff2lip_jax.constants import FPS, FRAMES_PER_WINDOW, SAMPLES_PER_FRAME
from diff2lip_jax.face import crop_and_resize

CROP = 64  # crop side in pixels
MOUTH_ROWS, MOUTH_COLS = slice(34, 58), slice(16, 48)  # where the mouth is in a face-box crop


def _unit(x: np.ndarray) -> np.ndarray:
    """Removes the mean and linear trend over the last axis, then unit-norms it."""
    t = np.arange(x.shape[-1]) - (x.shape[-1] - 1) / 2.0
    x = x - x.mean(axis=-1, keepdims=True)
    x = x - (x * t).sum(axis=-1, keepdims=True) / (t**2).sum() * t
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class MouthEnergyScorer:
    """Mouth darkness vs audio level (see the module doc). Shapes as :class:`SyncScorer`:
    crops uint8 ``[N, 64, 64, 3]``, audio windows float64 ``[B, 5]`` (opening per frame),
    embeddings float64 ``[B, 5]``."""

    name = "mouth-energy"

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return crop_and_resize(frames, boxes, CROP)

    def audio_windows(self, wav: np.ndarray, start_frames: np.ndarray) -> np.ndarray:
        n = len(wav) // SAMPLES_PER_FRAME
        opening = mouth_from_audio(wav[: n * SAMPLES_PER_FRAME], float(FPS), n)[0].astype(np.float64)
        opening = np.pad(opening, (0, 2 * FRAMES_PER_WINDOW))
        return opening[np.asarray(start_frames)[:, None] + np.arange(FRAMES_PER_WINDOW)[None, :]]

    def embed(self, face_windows: np.ndarray, audio_windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lum = face_windows[:, :, MOUTH_ROWS, MOUTH_COLS].astype(np.float64).mean(axis=(2, 3, 4))
        return _unit(-lum), _unit(np.asarray(audio_windows, np.float64))


def make(path: str | None = None) -> MouthEnergyScorer:
    """The ``module:factory`` entry (``path`` is ignored: the scorer has no weights)."""
    return MouthEnergyScorer()

"""A transparent sync scorer for the synthetic talking faces, whose mouth opens with the audio.

The face embedding of a 5-frame window is the darkness of the lower half of each
crop (the drawn mouth's opening darkens it), the audio embedding the RMS level
(dB) of each frame's 640 samples; both centred and unit-normed, so the distance
is small when the mouth opens and closes with the sound. It implements
:class:`diff2lip_jax.evaluate.lse.SyncScorer` without a network: tests and the
synthetic benchmark of the sync filter use it as
``--sync_scorer=data_pipelines.synthetic.scorer:make``. On real faces it means nothing.
"""

from __future__ import annotations

import numpy as np

from diff2lip_jax.constants import FRAMES_PER_WINDOW, SAMPLES_PER_FRAME
from diff2lip_jax.face import crop_and_resize

CROP = 64  # crop side in pixels
FLOOR_DB = -50.0  # audio levels below this count as silence


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class MouthEnergyScorer:
    """Mouth darkness vs audio level (see the module doc). Shapes as :class:`SyncScorer`:
    crops uint8 ``[N, 64, 64, 3]``, audio windows float64 ``[B, 5]`` (dB per frame),
    embeddings float64 ``[B, 5]``."""

    name = "mouth-energy"

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return crop_and_resize(frames, boxes, CROP)

    def audio_windows(self, wav: np.ndarray, start_frames: np.ndarray) -> np.ndarray:
        n = len(wav) // SAMPLES_PER_FRAME
        padded = np.pad(wav[: n * SAMPLES_PER_FRAME], (0, SAMPLES_PER_FRAME * 8))
        per_frame = padded.reshape(-1, SAMPLES_PER_FRAME).astype(np.float64)
        db = 20 * np.log10(np.sqrt(np.mean(per_frame**2, axis=1) + 1e-10))
        return db[np.asarray(start_frames)[:, None] + np.arange(FRAMES_PER_WINDOW)[None, :]]

    def embed(self, face_windows: np.ndarray, audio_windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lum = face_windows[:, :, face_windows.shape[2] // 2 :].astype(np.float64).mean(axis=(2, 3, 4))
        return _unit(-lum), _unit(np.maximum(audio_windows, FLOOR_DB))


def make(path: str | None = None) -> MouthEnergyScorer:
    """The ``module:factory`` entry (``path`` is ignored: the scorer has no weights)."""
    return MouthEnergyScorer()

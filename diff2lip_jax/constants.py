"""The numbers every stage shares: frame rate, audio rate, mel layout, window length.

Data preparation, training, generation and evaluation import these from here, so
the 25 fps / 16 kHz / 80-band / 5-frame contract of the official Diff2Lip (and
Wav2Lip, whose ``audio/hparams.py`` it inherits) is written once. Plain ints; this
module imports nothing.

* One video frame lasts ``1 / FPS`` = 40 ms = ``SAMPLES_PER_FRAME`` (640) samples
  = 3.2 mel steps.
* A window is ``FRAMES_PER_WINDOW`` (5) frames = 0.2 s = ``MEL_STEPS_PER_WINDOW``
  (16) mel steps: the training sequence, the SyncNet input, and each frame's mel
  window of the UNet's audio encoder.
"""

from __future__ import annotations

FPS = 25  # video frames per second of every clip the models see
SAMPLE_RATE = 16000  # Hz, mono audio
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples per video frame
NUM_MELS = 80  # mel bands
MEL_STEPS_PER_SECOND = 80  # SAMPLE_RATE / hop 200 (audio.HOP_SIZE)
MEL_STEPS_PER_WINDOW = 16  # mel steps per window (0.2 s)
FRAMES_PER_WINDOW = 5  # video frames per window (training sequence, SyncNet syncnet_T)

__all__ = [
    "FPS",
    "SAMPLE_RATE",
    "SAMPLES_PER_FRAME",
    "NUM_MELS",
    "MEL_STEPS_PER_SECOND",
    "MEL_STEPS_PER_WINDOW",
    "FRAMES_PER_WINDOW",
    "WEIGHTS",
    "PRECISIONS",
]

# Choices that both the console scripts (no jax import before --help) and the library check.
WEIGHTS = ("ema", "raw")  # which weights of a training workdir: the EMA `params` item, or `state.params`
PRECISIONS = ("auto", "float32", "bfloat16")  # sampler compute dtype; auto: the model flags' (use_fp16)

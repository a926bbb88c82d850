"""Synthetic talking faces whose lip motion is learnable from their audio.

For tests and the demo: several identities (variants of the astronaut photo that
ships with scikit-image, and drawn faces), smooth head motion, speech-like 16 kHz
audio (harmonics + moving formants + syllables + pauses), and a mouth whose opening
and width follow the audio of each video frame. The console script is
``diff2lip-synth = data_pipelines.synthetic:run``; see :mod:`.cli` for flags and the
output layout.

Submodules: ``voice`` (audio and audio features), ``faces`` (identities and the
mouth), ``clip`` (head motion and the in-memory generator), ``cli`` (files),
``scorer`` (a transparent sync scorer for these faces), ``faults`` (a small set with
planted faults for the data-quality filters).
Importing this package defines no absl flags; :func:`run` does.
"""

from data_pipelines.synthetic.cli import AUDIO_FORMATS, clip_metadata, generate_dataset, parse_size, run
from data_pipelines.synthetic.clip import Clip, clip_name, synthesize_clip
from data_pipelines.synthetic.faces import Identity, make_identity
from data_pipelines.synthetic.voice import SAMPLE_RATE, frame_bounds, frame_rms, mouth_from_audio

__all__ = [
    "AUDIO_FORMATS",
    "SAMPLE_RATE",
    "Clip",
    "Identity",
    "clip_metadata",
    "clip_name",
    "frame_bounds",
    "frame_rms",
    "generate_dataset",
    "make_identity",
    "mouth_from_audio",
    "parse_size",
    "run",
    "synthesize_clip",
]

"""Audio front end of Diff2Lip / Wav2Lip: decoding, mel spectrogram, per-frame mel windows.

Every number here reproduces the official PyTorch code (``audio/hparams.py`` and
``generate.py`` of soumik-kanad/diff2lip, which inherit them from Wav2Lip):

* audio is 16 kHz mono float32;
* the mel spectrogram has 80 bands and 80 steps per second (hop 200 samples), so
  one video frame at 25 fps spans 3.2 mel steps;
* the model consumes windows of 16 mel steps (0.2 s, i.e. 5 video frames).

All functions are vectorised numpy; nothing here imports jax.
"""

from __future__ import annotations

import functools
import os
import subprocess

import librosa
import numpy as np
import scipy.signal
import soundfile

from diff2lip_jax.constants import (
    FPS,
    FRAMES_PER_WINDOW,
    MEL_STEPS_PER_SECOND,
    MEL_STEPS_PER_WINDOW,
    NUM_MELS,
    SAMPLE_RATE,
)
from diff2lip_jax.type_aliases import PathLike
from diff2lip_jax.video import MediaError, ffmpeg_command, ffmpeg_error_summary, require_audio

# The shared constants live in diff2lip_jax.constants; SAMPLE_RATE, FPS, NUM_MELS and
# MEL_STEPS_PER_SECOND are re-exported here. Old names kept as aliases for callers
# outside this refactor (train/syncnet.py); use the constants' names in new code.
MEL_STEP_SIZE = MEL_STEPS_PER_WINDOW  # alias: mel steps per window (16)
SYNCNET_T = FRAMES_PER_WINDOW  # alias: frames per SyncNet / training sequence (5)

# STFT and mel parameters of the official hparams (n_fft == win_size; no LWS).
N_FFT = 800
HOP_SIZE = 200
WIN_SIZE = 800
PREEMPHASIS = 0.97
FMIN = 55.0
FMAX = 7600.0
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0  # symmetric normalisation to [-4, 4], clipped

__all__ = [
    "SAMPLE_RATE",
    "FPS",
    "NUM_MELS",
    "MEL_STEPS_PER_WINDOW",
    "MEL_STEP_SIZE",
    "MEL_STEPS_PER_SECOND",
    "FRAMES_PER_WINDOW",
    "SYNCNET_T",
    "MediaError",
    "load_audio",
    "save_wav",
    "melspectrogram",
    "frame_mel_windows",
    "frame_window_starts",
    "window_starts",
    "full_window_count",
    "frame_windows_at",
    "sync_mel_window",
    "sync_mel_windows",
]


# -- file I/O ---------------------------------------------------------------------------


def load_audio(path: PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any file ffmpeg reads to mono float32 at ``sr``.

    Works for wav, mp3, m4a, flac, ogg and the audio track of mp4/mkv/mov/webm videos.
    Channels are averaged (as ``librosa.load(mono=True)`` does); the signal is
    decoded at its native rate and resampled with soxr "hq", which is what
    ``librosa.load(path, sr=16000)`` (the official loader) does since librosa 0.10;
    the official pin, 0.9.2, used resampy's kaiser_best filter instead.

    Args:
      path: media file.
      sr: output sample rate in Hz.

    Returns:
      float32 array ``[N]``, nominally in [-1, 1].

    Raises:
      MediaError: missing or empty file, not a media file, no audio stream,
        decoding failure, or zero decoded samples.
    """
    info = require_audio(path)
    native_sr = info.audio_sample_rate or sr
    cmd = [
        *ffmpeg_command(),
        "-i",
        os.fspath(path),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        # rematrix_maxval=1 turns ffmpeg's stereo->mono downmix (0.707 L + 0.707 R)
        # into the plain channel mean that librosa uses.
        "-af",
        "aresample=rematrix_maxval=1",
        "-ac",
        "1",
        # Decode at the rate probe reported, so we know exactly what we resample from.
        "-ar",
        str(native_sr),
        "-c:a",
        "pcm_f32le",
        "-f",
        "f32le",
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise MediaError(
            f"{path}: cannot decode the audio ({ffmpeg_error_summary(proc.stderr)}); re-encode it, e.g. to wav"
        )
    wav = np.frombuffer(proc.stdout, dtype="<f4")
    if wav.size == 0:
        raise MediaError(f"{path}: the audio stream decoded to 0 samples; pass a file with non-empty audio")
    if native_sr == sr:
        return wav.astype(np.float32)  # a writable copy (frombuffer views immutable bytes)
    return librosa.resample(wav, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq").astype(np.float32, copy=False)


def save_wav(path: PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Write a mono waveform ``[N]`` (float in [-1, 1]) to a WAV file.

    Unlike the official ``save_wav`` the signal is not peak-normalised: levels are
    kept, values outside [-1, 1] are clipped for integer subtypes. ``subtype="FLOAT"``
    writes 32-bit float samples losslessly.
    """
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if subtype.startswith("PCM"):
        wav = np.clip(wav, -1.0, 1.0)
    soundfile.write(os.fspath(path), wav, sr, subtype=subtype)


# -- mel spectrogram --------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """Slaney-normalised mel filterbank ``[NUM_MELS, N_FFT // 2 + 1]`` (librosa defaults)."""
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)
    basis.setflags(write=False)  # shared through the cache: must not be mutated
    return basis


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """The official Wav2Lip/Diff2Lip log-mel spectrogram of a 16 kHz waveform.

    Pipeline: pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``; centred STFT (n_fft 800,
    hop 200, Hann window 800) with zero padding of n_fft/2 on both sides (the official
    code calls ``librosa.stft`` with defaults, pinned at librosa 0.9.2 whose default
    ``pad_mode`` is already "constant"; we pass it explicitly); magnitude; Slaney mel
    filterbank (80 bands, 55-7600 Hz); ``20 log10(max(1e-5, .)) - 20`` dB; then
    ``clip(8 (S + 100) / 100 - 4, -4, 4)``.

    Args:
      wav: float waveform ``[N]`` at 16 kHz.

    Returns:
      float32 ``[80, T]`` with ``T = N // 200 + 1``, values in [-4, 4].
    """
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    if wav.size == 0:
        raise ValueError("melspectrogram: empty waveform")
    emphasised = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], wav)
    spec = librosa.stft(
        y=emphasised, n_fft=N_FFT, hop_length=HOP_SIZE, win_length=WIN_SIZE, center=True, pad_mode="constant"
    )
    mel = _mel_basis() @ np.abs(spec)
    min_level = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    norm = (2.0 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


# -- windows ------------------------------------------------------------------------------


def _start_index(frames: np.ndarray, fps: float) -> np.ndarray:
    """Mel index where a window for (already clamped) video frame ``frames`` starts.

    Evaluated in float64 in the same order as the official
    ``int(80. * (frame / float(fps)))`` so that the truncation is bit-identical.
    """
    return (float(MEL_STEPS_PER_SECOND) * (np.asarray(frames, np.float64) / float(fps))).astype(np.int64)


def _gather(mel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Windows ``[n, 80, 16]`` of ``mel [80, T]`` starting at ``starts [n]``, edge padded."""
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] == 0:
        raise ValueError(f"mel must be [num_mels, T] with T > 0, got shape {mel.shape}")
    # Indices past the end repeat the last column (edge padding), so every window is full.
    idx = np.clip(starts[:, None] + np.arange(MEL_STEPS_PER_WINDOW)[None, :], 0, mel.shape[1] - 1)
    return np.ascontiguousarray(np.moveaxis(mel[:, idx], 0, 1), dtype=np.float32)


def window_starts(frames: np.ndarray, fps: float = FPS) -> np.ndarray:
    """Mel start index of the window of each 0-based video frame in ``frames``, int64.

    The window of frame ``f`` (a time ``f / fps``) starts 40 ms (one 25 fps frame)
    before it: ``int(80 * max(f - fps / 25, 0) / fps)``, 16 steps = 0.2 s long. At
    25 fps this is the official ``int(80 * max(f - 1, 0) / 25)``, computed in the same
    float order (bit-identical; :func:`frame_mel_windows`); at other rates each frame
    gets the audio at its own time (Wav2Lip's ``int(80 / fps * index)`` rule) with the
    same 40 ms lead the models were trained with at 25 fps.

    Args:
      frames: int ``[n]`` frame indices (>= 0) at ``fps``.
      fps: their frame rate.

    Returns:
      int64 ``[n]``.
    """
    shifted = np.asarray(frames, np.float64) - float(fps) / float(FPS)
    return np.maximum(_start_index(shifted, fps), 0)


def frame_window_starts(num_frames: int, fps: float = FPS) -> np.ndarray:
    """Mel start index of the window of each of frames ``0 .. num_frames-1``, int64 ``[num_frames]``.

    At 25 fps frame ``f`` starts at ``int(80 * max(f - 1, 0) / 25)``: 0, 0, 3, 6, 9, 12,
    16, ...; any fps: :func:`window_starts`.
    """
    return window_starts(np.arange(num_frames), fps)


def full_window_count(mel_steps: int, fps: float = FPS) -> int:
    """How many frames from 0 on get a complete 16-step window of a ``mel_steps``-long mel.

    The official ``generate.py`` stops at the first frame whose window runs past the
    spectrogram's end (``load_all_indiv_mels``) and truncates the video to that count:
    for 1 s of 16 kHz audio (81 mel steps) at 25 fps, 22 frames.
    """
    if mel_steps < MEL_STEPS_PER_WINDOW:
        return 0
    # Starts never decrease; past this bound (the last start's frame, plus the 40 ms
    # lead, plus slack) every window starts beyond the end.
    bound = int(np.ceil(mel_steps * float(fps) / MEL_STEPS_PER_SECOND + float(fps) / FPS)) + 2
    return int(np.count_nonzero(window_starts(np.arange(bound), fps) + MEL_STEPS_PER_WINDOW <= mel_steps))


def frame_windows_at(mel: np.ndarray, frames: np.ndarray, fps: float = FPS) -> np.ndarray:
    """The 16-step windows of 0-based frames ``frames [n]`` at ``fps`` (:func:`window_starts`),
    edge padded past the end: float32 ``[n, 80, 16]`` of ``mel [80, T]``."""
    return _gather(mel, window_starts(np.asarray(frames, np.int64).reshape(-1), fps))


def frame_mel_windows(mel: np.ndarray, num_frames: int, fps: float = FPS) -> np.ndarray:
    """Per-frame 16-step mel windows, the ``indiv_mels`` input of the UNet.

    Convention (official ``generate.py``: ``load_all_indiv_mels`` with
    ``crop_audio_window``): the official loop counts frames from ``i = 1`` and crops
    at video frame ``max(i - syncnet_T // 2, 0) = max(i - 2, 0)``, so the window for
    0-based frame ``f = i - 1`` starts at mel index ``int(80 * max(f - 1, 0) / fps)``
    and covers 16 steps (5 frames at 25 fps): the audio of frames ``f - 1 .. f + 3``
    (``syncnet_T // 2`` with the official 1-based count puts frame ``f`` second, not
    in the middle). At 25 fps the starts are
    0, 0, 3, 6, 9, 12, 16, ... for frames 0, 1, 2, 3, 4, 5, 6, ...; at other rates
    each frame's window starts 40 ms before its own time (:func:`window_starts`).

    Difference from the official code: it stops at the first window that runs past
    the end of the spectrogram and truncates the video to that many frames; here every
    one of ``num_frames`` frames gets a full window, indices past the end repeating the
    last mel column (edge padding), so audio and video lengths need not agree.

    Args:
      mel: ``[80, T]`` from :func:`melspectrogram`.
      num_frames: number of video frames to produce windows for.
      fps: video frame rate (the models train at 25).

    Returns:
      float32 ``[num_frames, 80, 16]``.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    return _gather(mel, frame_window_starts(num_frames, fps))


def sync_mel_windows(mel: np.ndarray, start_frames: np.ndarray, fps: float = FPS) -> np.ndarray:
    """SyncNet mel windows for 5-frame sequences starting at video frames ``start_frames``.

    Wav2Lip convention: the window for the sequence whose first (0-based) frame is
    ``s`` starts at mel index ``int(80 * s / fps)`` and spans 16 steps, i.e. exactly
    the 0.2 s of the 5 frames. Windows past the end are edge padded.

    Args:
      mel: ``[80, T]``.
      start_frames: int ``[n]`` first frame of each sequence (>= 0).
      fps: video frame rate.

    Returns:
      float32 ``[n, 80, 16]``.
    """
    start_frames = np.asarray(start_frames, dtype=np.int64).reshape(-1)
    if np.any(start_frames < 0):
        raise ValueError("start_frames must be >= 0")
    return _gather(mel, _start_index(start_frames, fps))


def sync_mel_window(mel: np.ndarray, start_frame: int, fps: float = FPS) -> np.ndarray:
    """Single-sequence :func:`sync_mel_windows`: float32 ``[80, 16]``."""
    return sync_mel_windows(mel, np.array([start_frame]), fps)[0]

"""Audio front end: official mel parity, window conventions, decoding of any container.

Tolerances: mel parity relative L2 < 1e-5 (the reference README's bound for the mel);
decoded lengths within one 25 fps video frame (640 samples at 16 kHz).
"""

from __future__ import annotations

import pathlib
import subprocess

import numpy as np
import pytest
import soundfile
from helpers import rel_l2, rng_for

from diff2lip_jax import audio
from diff2lip_jax.video import MediaError, ffmpeg_exe

SR = audio.SAMPLE_RATE
ONE_FRAME = SR // audio.FPS  # 640 samples = 40 ms


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory, request) -> dict:
    """A 2.0 s stereo 44.1 kHz chirp as wav, m4a (AAC) and mp3, plus broken inputs."""
    d = tmp_path_factory.mktemp("audio_media")
    rng = rng_for(request.node.nodeid)
    sr, dur = 44100, 2.0
    t = np.arange(int(sr * dur)) / sr
    f0 = rng.uniform(200, 400)
    left = 0.5 * np.sin(2 * np.pi * (f0 * t + 150 * t**2))
    right = 0.2 * np.sin(2 * np.pi * 3 * f0 * t)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    paths = {"wav44": d / "chirp44.wav", "m4a": d / "chirp.m4a", "mp3": d / "chirp.mp3"}
    soundfile.write(str(paths["wav44"]), stereo, sr, subtype="FLOAT")
    _ffmpeg("-i", str(paths["wav44"]), "-c:a", "aac", "-b:a", "128k", str(paths["m4a"]))
    _ffmpeg("-i", str(paths["wav44"]), "-c:a", "libmp3lame", "-b:a", "128k", str(paths["mp3"]))
    # What the decoders should return: the channel mean, at 16 kHz.
    t16 = np.arange(int(SR * dur)) / SR
    mono16 = 0.5 * (0.5 * np.sin(2 * np.pi * (f0 * t16 + 150 * t16**2)) + 0.2 * np.sin(2 * np.pi * 3 * f0 * t16))
    paths["expected16"] = mono16.astype(np.float32)
    paths["silent_video"] = d / "silent.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:size=32x32:rate=25:duration=1", "-c:v", "libx264", str(paths["silent_video"])
    )
    paths["text"] = d / "notes.mp3"
    paths["text"].write_text("this is not audio\n")
    paths["empty"] = d / "empty.wav"
    paths["empty"].touch()
    return paths


def test_mel_matches_official_golden(reference_dir: pathlib.Path) -> None:
    golden = np.load(reference_dir / "mel_golden.npz")
    mel = audio.melspectrogram(golden["wav"])
    assert mel.dtype == np.float32 and mel.shape == golden["mel"].shape
    assert rel_l2(mel, golden["mel"]) < 1e-5


def test_mel_shape_and_range(rng) -> None:
    n = int(rng.integers(8000, 24000))
    mel = audio.melspectrogram(rng.standard_normal(n).astype(np.float32) * 0.1)
    assert mel.shape == (audio.NUM_MELS, n // 200 + 1)
    assert mel.min() >= -4.0 and mel.max() <= 4.0


def _official_indiv_mels(mel: np.ndarray, fps: float = 25.0) -> list:
    """Re-statement of the official load_all_indiv_mels loop (1-based i, T//2 offset, stop at short)."""
    spec, out, i = mel.T, [], 1
    while True:
        start = int(80.0 * (max(i - 5 // 2, 0) / float(fps)))
        window = spec[start : start + 16, :]
        if window.shape[0] != 16:
            return out
        out.append(window.T)
        i += 1


def test_frame_windows_follow_official_convention(rng) -> None:
    mel = rng.standard_normal((80, int(rng.integers(100, 140)))).astype(np.float32)
    official = _official_indiv_mels(mel)
    num_frames = len(official) + 6  # some frames past the audio: need edge padding
    win = audio.frame_mel_windows(mel, num_frames)
    assert win.shape == (num_frames, 80, 16) and win.dtype == np.float32
    # Wherever the official code produces a window, ours is identical.
    np.testing.assert_array_equal(win[: len(official)], np.stack(official))
    # Start indices: int(80 * (f - 1) / 25) clamped at 0.
    starts = audio.frame_window_starts(num_frames)
    for f, expected in [(0, 0), (1, 0), (2, 3), (3, 6), (6, 16), (26, 80)]:
        assert starts[f] == expected == max(int(80 * (f - 1) / 25), 0)
        np.testing.assert_array_equal(win[f], mel[:, expected : expected + 16])
    # The first frame the official code drops: its window runs past the end, so it gets
    # the available columns followed by the last column repeated.
    f = len(official)
    s = starts[f]
    valid = mel.shape[1] - s
    assert 0 < valid < 16
    np.testing.assert_array_equal(win[f, :, :valid], mel[:, s:])
    np.testing.assert_array_equal(win[f, :, valid:], np.repeat(mel[:, -1:], 16 - valid, axis=1))


def test_frame_windows_beyond_audio_are_all_last_column(rng) -> None:
    mel = rng.standard_normal((80, 20)).astype(np.float32)
    win = audio.frame_mel_windows(mel, 40)
    assert win.shape == (40, 80, 16)
    np.testing.assert_array_equal(win[-1], np.repeat(mel[:, -1:], 16, axis=1))


def test_sync_window_start(rng) -> None:
    mel = rng.standard_normal((80, 200)).astype(np.float32)
    for start_frame in [0, 1, 7, 13, 40]:
        s = int(80 * start_frame / 25)
        np.testing.assert_array_equal(audio.sync_mel_window(mel, start_frame), mel[:, s : s + 16])
    batch = audio.sync_mel_windows(mel, np.array([0, 7, 13]))
    assert batch.shape == (3, 80, 16)
    np.testing.assert_array_equal(batch[1], audio.sync_mel_window(mel, 7))
    tail = audio.sync_mel_window(mel, 60)  # starts at 192: 8 real columns, 8 padded
    np.testing.assert_array_equal(tail[:, :8], mel[:, 192:])
    np.testing.assert_array_equal(tail[:, 8:], np.repeat(mel[:, -1:], 8, axis=1))


def test_load_wav_at_native_rate_is_exact(tmp_path: pathlib.Path, rng) -> None:
    wav = (rng.standard_normal(SR) * 0.1).astype(np.float32)
    path = tmp_path / "x.wav"
    audio.save_wav(path, wav, subtype="FLOAT")
    back = audio.load_audio(path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, wav, atol=1e-7)
    audio.save_wav(path, wav)  # 16-bit PCM: quantisation error only
    np.testing.assert_allclose(audio.load_audio(path), wav, atol=1.0 / 32767 + 1e-6)


@pytest.mark.parametrize("key", ["wav44", "m4a", "mp3"])
def test_load_audio_resamples_and_downmixes(media: dict, key: str) -> None:
    wav = audio.load_audio(media[key])
    expected = media["expected16"]
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - len(expected)) <= ONE_FRAME
    if key == "wav44":  # lossless source: only the resampler's error (soxr: ~1e-7; edges excluded)
        mid = slice(ONE_FRAME, len(expected) - ONE_FRAME)
        assert rel_l2(wav[mid], expected[mid]) < 1e-4
    else:  # lossy codecs: same signal, aligned, at the right level
        n = min(len(wav), len(expected))
        corr = np.dot(wav[:n], expected[:n]) / (np.linalg.norm(wav[:n]) * np.linalg.norm(expected[:n]))
        assert corr > 0.97  # encoder delay is compensated: a shift of 1 ms would fail this
        assert abs(np.std(wav[:n]) / np.std(expected[:n]) - 1) < 0.1


@pytest.mark.parametrize("key", ["missing", "text", "empty", "silent_video"])
def test_bad_audio_inputs_raise_one_line_media_error(media: dict, key: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.wav" if key == "missing" else media[key]
    with pytest.raises(MediaError) as info:
        audio.load_audio(path)
    message = str(info.value)
    assert "\n" not in message and str(pathlib.Path(path).name) in message
    assert isinstance(info.value, ValueError)

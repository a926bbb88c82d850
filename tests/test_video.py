"""Video decode/encode: round trip, fps resampling by timestamp, containers, atomic writes, errors.

Frames carry their own index as 8 black/white stripes (one bit each, 8 px wide), which
survives lossy codecs, so tests can tell exactly which source frames were decoded.
Tolerances: audio duration within one 25 fps frame (40 ms) of the video; decoded pixels
within a mean absolute error of 4/255 of smooth sources at crf 18.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import pytest

from diff2lip_jax import audio, video
from diff2lip_jax.video import MediaError

H, W = 48, 64


def _ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    cmd = [video.ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    if stdin is not None:
        cmd.remove("-nostdin")
    subprocess.run(cmd, input=stdin, check=True)


def _index_frames(n: int) -> np.ndarray:
    """uint8 [n, H, W, 3]: frame i shows the bits of i as 8 vertical stripes."""
    bits = (np.arange(n)[:, None] >> np.arange(8)[None, :]) & 1  # [n, 8]
    stripes = np.repeat(bits * 255, W // 8, axis=1).astype(np.uint8)  # [n, W]
    return np.broadcast_to(stripes[:, None, :, None], (n, H, W, 3)).copy()


def _decode_index(frames: np.ndarray) -> np.ndarray:
    stripes = frames.astype(np.float32).mean(axis=(1, 3)).reshape(len(frames), 8, W // 8).mean(axis=2)
    return ((stripes > 127.5) * (1 << np.arange(8))).sum(axis=1)


def _encode_raw(path: pathlib.Path, frames: np.ndarray, fps: float, codec: list) -> None:
    n, h, w, _ = frames.shape
    _ffmpeg(
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "-",
        *codec,
        str(path),
        stdin=frames.tobytes(),
    )


def _smooth_frames(rng: np.random.Generator, n: int, h: int = H, w: int = W) -> np.ndarray:
    """Random smooth colour gradients (compress well, so pixel error stays small)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    coef = rng.uniform(-1, 1, (n, 3, 3))
    img = coef[:, :, 0, None, None] * yy + coef[:, :, 1, None, None] * xx + coef[:, :, 2, None, None]
    return (np.clip(0.5 + 0.25 * img, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


X264 = ["-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("video_media")
    m: dict = {"dir": d}
    m["c30"] = d / "index30.mp4"  # 3 s at 30 fps
    _encode_raw(m["c30"], _index_frames(90), 30, X264)
    m["c20"] = d / "index20.mp4"  # 2 s at 20 fps
    _encode_raw(m["c20"], _index_frames(40), 20, X264)
    codecs = {
        "mkv": X264,
        "mov": X264,
        "webm": ["-c:v", "libvpx", "-b:v", "1M", "-deadline", "realtime", "-cpu-used", "8"],
        "avi": ["-c:v", "mpeg4", "-q:v", "2"],
    }
    for ext, codec in codecs.items():
        m[ext] = d / f"index25.{ext}"
        _encode_raw(m[ext], _index_frames(20), 25, codec)
    m["audio_only"] = d / "tone.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(m["audio_only"]))
    m["text"] = d / "readme.mp4"
    m["text"].write_text("not a video\n")
    m["empty"] = d / "empty.mp4"
    m["empty"].touch()
    # A truncated download: intact header (moov first), no frame data after it.
    full = d / "faststart.mp4"
    _ffmpeg("-i", str(m["c30"]), "-c", "copy", "-movflags", "+faststart", str(full))
    data = full.read_bytes()
    m["truncated"] = d / "truncated.mp4"
    m["truncated"].write_bytes(data[: data.index(b"mdat") + 4])
    return m


@pytest.mark.parametrize("audio_vs_video", [0.6, 1.0, 1.4])
def test_round_trip_frames_fps_and_audio_duration(tmp_path: pathlib.Path, audio_vs_video: float, rng) -> None:
    n = int(rng.integers(30, 60))
    frames = _smooth_frames(rng, n)
    t = np.arange(int(n / 25 * audio_vs_video * 16000)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)).astype(np.float32)
    path = tmp_path / "rt.mp4"
    video.write_video(path, frames, fps=25, audio=wav, sample_rate=16000)
    assert sorted(os.listdir(tmp_path)) == ["rt.mp4"]  # no temp files left behind
    info = video.probe(path)
    assert info.has_video and info.has_audio and info.fps == 25.0 and (info.width, info.height) == (W, H)
    back = video.read_frames(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(np.float32) - frames).mean() < 4.0
    # Duration follows the video: long audio is cut, short audio padded with silence.
    decoded = audio.load_audio(path)
    assert abs(len(decoded) - n * 640) <= 640
    k = min(len(wav), len(decoded)) - 640
    corr = np.dot(decoded[:k], wav[:k]) / (np.linalg.norm(decoded[:k]) * np.linalg.norm(wav[:k]))
    assert corr > 0.95
    if audio_vs_video < 1.0:
        assert np.abs(decoded[len(wav) + 640 :]).max() < 0.01


def test_writer_accepts_single_frames_odd_sizes_and_audio_path(tmp_path: pathlib.Path, media: dict, rng) -> None:
    frames = _smooth_frames(rng, 10, 47, 63)
    path = tmp_path / "odd.mp4"
    with video.VideoWriter(path, fps=25, audio_path=media["audio_only"]) as w:
        for f in frames:
            w.write(f)
    back = video.read_frames(path)
    assert back.shape == (10, 48, 64, 3)  # padded to even on the bottom/right
    assert np.abs(back[:, :47, :63].astype(np.float32) - frames).mean() < 4.0
    assert abs(len(audio.load_audio(path)) - 10 * 640) <= 640


@pytest.mark.parametrize("key,src_fps,src_n,expected_n", [("c30", 30, 90, 75), ("c20", 20, 40, 50)])
def test_fps_resampling_keeps_the_frames_ffmpeg_fps_filter_picks(
    media: dict, key: str, src_fps: int, src_n: int, expected_n: int
) -> None:
    native = video.read_frames(media[key], fps=None)
    np.testing.assert_array_equal(_decode_index(native), np.arange(src_n))
    assert video.probe(media[key]).fps == src_fps
    out = video.read_frames(media[key], fps=25)
    assert out.shape == (expected_n, H, W, 3)
    # fps filter: round each input timestamp to the nearest 1/25 s tick (halves up);
    # output tick k shows the last input frame whose tick is <= k.
    ticks = np.floor(np.arange(src_n) * 25 / src_fps + 0.5)
    expected = [int(np.nonzero(ticks <= k)[0].max()) for k in range(expected_n)]
    np.testing.assert_array_equal(_decode_index(out), expected)


@pytest.mark.parametrize("ext", ["mkv", "mov", "webm", "avi"])
def test_containers_decode(media: dict, ext: str) -> None:
    info = video.probe(media[ext])
    assert info.has_video and not info.has_audio and info.fps == 25.0 and info.num_frames == 20
    frames = video.read_frames(media[ext])
    assert frames.dtype == np.uint8 and frames.shape == (20, H, W, 3)
    np.testing.assert_array_equal(_decode_index(frames), np.arange(20))


def test_chunked_iteration_matches_read_frames(media: dict) -> None:
    whole = video.read_frames(media["c30"])
    chunks = list(video.iter_frames(media["c30"], chunk=7))
    assert [len(c) for c in chunks] == [7] * 10 + [5]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    it = video.iter_frames(media["c30"], chunk=4)
    np.testing.assert_array_equal(next(it), whole[:4])
    it.close()  # stopping early must end ffmpeg cleanly, not raise


def test_writer_is_atomic(tmp_path: pathlib.Path, rng) -> None:
    frames = _smooth_frames(rng, 5)
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with video.VideoWriter(path, audio=(np.zeros(3200, np.float32), 16000)) as w:
            w.write(frames)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(MediaError, match="no frames"):
        with video.VideoWriter(path):
            pass
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"previous result")  # a failed write must not clobber an existing file
    with pytest.raises(ValueError):
        with video.VideoWriter(path) as w:
            w.write(frames)
            w.write(frames[:, :10])  # size change
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"] and path.read_bytes() == b"previous result"
    video.write_video(path, frames)
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"] and len(video.read_frames(path)) == 5


@pytest.mark.parametrize("key", ["missing", "text", "empty", "audio_only", "truncated"])
def test_bad_video_inputs_raise_one_line_media_error(media: dict, key: str) -> None:
    path = media["dir"] / "does_not_exist.mp4" if key == "missing" else media[key]
    calls = [video.read_frames, lambda p: list(video.iter_frames(p))]
    if key != "truncated":  # its header is intact: only decoding can tell
        calls += [video.iter_frames, video.require_video]  # these validate without decoding
    for call in calls:
        with pytest.raises(MediaError) as info:
            call(path)
        message = str(info.value)
        assert "\n" not in message and path.name in message and isinstance(info.value, ValueError)


def test_probe_audio_only(media: dict) -> None:
    info = video.probe(media["audio_only"])
    assert not info.has_video and info.has_audio and info.audio_sample_rate == 44100
    assert abs(info.duration - 1.0) < 0.05
    video.require_audio(media["audio_only"])
    with pytest.raises(MediaError, match="no audio stream"):
        video.require_audio(media["mkv"])

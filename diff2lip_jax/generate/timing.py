"""Output timing of `generate`: the frame rate, the frame count, and each frame's mel window.

* Frame rate (`output_fps`): by default a video keeps its own rate (`--fps native`),
  a still image or reconstruction (one frame repeated) gets 25 fps; `--fps 25` (or
  any rate) resamples the video with ffmpeg's fps filter, as the official tool does.
* Frame count (`output_length`): `--length audio` (default) makes the video as long
  as the audio, round(audio seconds * fps) frames, the last windows edge padded;
  `--length official` is the official generate.py's count, min(video frames, frames
  with a complete mel window) (1 s of audio at 25 fps: 22 frames), for the paper's
  tables. The official truncates the audio to the frames kept, as our writer does.
* Mel windows: frame k at fps f gets the 16 mel steps (0.2 s) starting 40 ms before
  its own time k / f (`audio.window_starts`; at 25 fps the official rule exactly).
  The models always see 16-step windows, whatever the video's rate.
"""

from __future__ import annotations

from diff2lip_jax.audio import HOP_SIZE, full_window_count
from diff2lip_jax.constants import FPS, MEL_STEPS_PER_SECOND, MEL_STEPS_PER_WINDOW, SAMPLE_RATE
from diff2lip_jax.video import VideoInfo

LENGTHS = ("audio", "official")
MAX_FPS = 240.0
# NTSC-style rates that ffmpeg prints rounded to two decimals ("29.97 fps").
_NTSC = tuple(n * 1000 / 1001 for n in (24, 30, 48, 60, 120, 240))


def snap_fps(fps: float) -> float:
    """The exact rate behind a rounded one: 29.97 -> 30000/1001 (likewise 23.976, 59.94, ...); else fps."""
    for exact in _NTSC:
        if abs(fps - exact) < 0.006:
            return exact
    return float(fps)


def parse_fps(value: str | float | int | None) -> str | float | None:
    """None, "native" or a rate in (0, 240] frames/s (a number or its string).

    Raises:
      ValueError: one line naming the accepted values.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "native"):
        return None if value is None else "native"
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--fps={value!r}: use native or a frame rate in frames per second, e.g. 25") from None
    if not 0.0 < rate <= MAX_FPS:
        raise ValueError(f"--fps={value!r}: the frame rate must be in (0, {MAX_FPS:g}] frames per second, e.g. 25")
    return snap_fps(rate)


def output_fps(fps: str | float | int | None, info: VideoInfo, still: bool) -> float:
    """The output frame rate (frames/s, float).

    fps: None (the default: the video's own rate, or 25 when `still` — a still image
    or reconstruction mode, where one frame is repeated), "native" (the video's own
    rate, also when still), or a rate. info: `video.probe` of the video.

    Raises:
      ValueError: a bad `fps`, or "native" for a file that reports no frame rate.
    """
    fps = parse_fps(fps)
    if fps is None and still:
        return float(FPS)
    if fps is None or fps == "native":
        if info.fps <= 0:
            raise ValueError(f"--fps native: {info.path} reports no frame rate; pass a rate, e.g. --fps 25")
        return snap_fps(min(info.fps, MAX_FPS))
    return float(fps)


def output_length(length: str, num_samples: int, fps: float, num_video: int | None) -> int:
    """Number of output frames (int >= 1) for `num_samples` of 16 kHz audio at `fps`.

    length: "audio" (round(seconds * fps)) or "official" (min(num_video, frames with a
    complete mel window); num_video None = unlimited, for a still image).

    Raises:
      ValueError: unknown `length`, or audio too short for one frame (one line, with the fix).
    """
    check_length(length)
    ms = num_samples / SAMPLE_RATE * 1000
    if length == "audio":
        num = int(round(num_samples * fps / SAMPLE_RATE))
        if num < 1:
            raise ValueError(
                f"the audio lasts {ms:.0f} ms, under one video frame ({1000 / fps:.0f} ms); pass longer audio"
            )
        return num
    mel_steps = num_samples // HOP_SIZE + 1  # the T of audio.melspectrogram
    num = full_window_count(mel_steps, fps)
    if num < 1:
        raise ValueError(
            f"the audio lasts {ms:.0f} ms, shorter than the one mel window "
            f"({1000 * MEL_STEPS_PER_WINDOW / MEL_STEPS_PER_SECOND:.0f} ms) --length official needs; "
            "pass longer audio or use --length audio"
        )
    return num if num_video is None else min(num, int(num_video))


def check_length(length: str) -> None:
    """ValueError naming the choices unless `length` is one of LENGTHS."""
    if length not in LENGTHS:
        raise ValueError(f"--length={length!r}: choose audio or official")

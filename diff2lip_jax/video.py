"""Video decoding and encoding through the ffmpeg binary that imageio-ffmpeg ships.

No system ffmpeg is needed: ``imageio_ffmpeg.get_ffmpeg_exe()`` provides one, and we
talk to it over pipes.

* Decoding (:func:`iter_frames`) streams RGB frames in chunks, so memory stays bounded
  whatever the video length (the official tool loads whole videos as JPEG files and
  then into RAM). Frames are resampled with ffmpeg's ``-vf fps=25``, the same command
  the official ``generate.py`` uses, so the frames kept are exactly the official ones.
* Encoding (:class:`VideoWriter`) writes H.264 (libx264, yuv420p) with AAC audio,
  atomically: the file appears at its path only once complete.
* Every failure the user can fix raises :class:`MediaError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np

from diff2lip_jax.constants import FPS, SAMPLE_RATE
from diff2lip_jax.type_aliases import PathLike

__all__ = [
    "MediaError",
    "VideoInfo",
    "ffmpeg_command",
    "ffmpeg_exe",
    "probe",
    "aac_args",
    "require_video",
    "require_audio",
    "iter_frames",
    "read_frames",
    "VideoWriter",
    "write_video",
]


class MediaError(ValueError):
    """A media file is missing, unreadable or lacks the stream we need (one-line message)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What ``ffmpeg -i`` reports about a file.

    ``width``/``height`` are the displayed size (swapped for 90/270 degree rotation
    metadata, which ffmpeg applies when decoding). ``num_frames`` is an estimate,
    ``round(duration * fps)``; the exact count is only known after decoding.
    Fields about a missing stream are 0.
    """

    path: str
    fps: float
    width: int
    height: int
    num_frames: int
    duration: float
    has_video: bool
    has_audio: bool
    audio_sample_rate: int = 0
    audio_channels: int = 0
    audio_codec: str = ""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_command() -> list[str]:
    """The start of every ffmpeg call of ours: the binary, no banner, no stdin, errors only."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]


def ffmpeg_error_summary(stderr: bytes) -> str:
    """The most telling line of ffmpeg's stderr (its last error line)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    # Strip the "[in#0 @ 0x...]" prefixes: they mean nothing to a user.
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln) for ln in lines]
    return " ".join(lines[-1].split()) if lines else "no error message"


def _check_file(path: PathLike) -> pathlib.Path:
    p = pathlib.Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file; check the path")
    if not p.is_file():
        raise MediaError(f"{p}: not a regular file; pass a media file, not a directory")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty (0 bytes); re-copy or re-export it")
    return p


_STREAM_RE = re.compile(r"^\s*Stream #0:\d+.*?: (Video|Audio): (.*)$")
_SIZE_RE = re.compile(r"(?<![\w.])(\d+)x(\d+)(?=[\s,\[]|$)")
_RATE_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)\b")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_ROTATION_RE = re.compile(r"(?:rotation of|rotate\s*:)\s*(-?[\d.]+)")


def _parse_rate(line: str) -> float:
    """Frame rate from a video stream line: "fps" if printed, else "tbr"."""
    found = {unit: float(num) * (1000.0 if k else 1.0) for num, k, unit in _RATE_RE.findall(line)}
    return found.get("fps", found.get("tbr", 0.0))


_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8}


def _parse_channels(line: str) -> int:
    """Channel count from an audio stream line: "mono", "stereo", "5.1(side)", "3 channels", ..."""
    fields = [f.strip() for f in line.split(",")]
    for field in fields[1:]:
        name = field.split("(")[0]
        if name in _LAYOUT_CHANNELS:
            return _LAYOUT_CHANNELS[name]
        if m := re.fullmatch(r"(\d+)\.(\d+)", name):
            return int(m.group(1)) + int(m.group(2))
        if m := re.fullmatch(r"(\d+) channels", name):
            return int(m.group(1))
    return 0


def probe(path: PathLike) -> VideoInfo:
    """Inspect a media file by parsing ``ffmpeg -i`` (imageio-ffmpeg has no ffprobe).

    Cover art in audio files (an "attached pic" video stream) does not count as video.

    Raises:
      MediaError: missing or empty file, or a file ffmpeg cannot open.
    """
    p = _check_file(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    text = proc.stderr.decode("utf-8", "replace")
    if "Input #0" not in text:  # ffmpeg could not open it (it always exits 1 here: no output given)
        raise MediaError(
            f"{p}: not a readable media file (ffmpeg: {ffmpeg_error_summary(proc.stderr)}); "
            "check that it is a complete video or audio file"
        )
    # One block per stream: its "Stream #0:i" line plus the lines after it (metadata,
    # side data such as the display rotation) up to the next stream.
    blocks = re.split(r"\n(?=\s*Stream #)", text)
    streams = [(m.group(1), m.group(2), b) for b in blocks if (m := _STREAM_RE.match(b.split("\n", 1)[0]))]
    video = next((s for s in streams if s[0] == "Video" and "(attached pic)" not in s[1]), None)
    audio = next((s for s in streams if s[0] == "Audio"), None)
    dm = _DURATION_RE.search(text)
    duration = int(dm.group(1)) * 3600 + int(dm.group(2)) * 60 + float(dm.group(3)) if dm else 0.0
    fps, width, height, sample_rate = 0.0, 0, 0, 0
    if video is not None:
        fps = _parse_rate(video[1])
        sm = _SIZE_RE.search(video[1])
        width, height = (int(sm.group(1)), int(sm.group(2))) if sm else (0, 0)
        rm = _ROTATION_RE.search(video[2])
        if rm and round(abs(float(rm.group(1)))) % 180 == 90:  # ffmpeg rotates while decoding
            width, height = height, width
    channels, codec = 0, ""
    if audio is not None:
        am = re.search(r"(\d+) Hz", audio[1])
        sample_rate = int(am.group(1)) if am else 0
        channels = _parse_channels(audio[1])
        codec = audio[1].split(",")[0].split()[0] if audio[1].strip() else ""
    return VideoInfo(
        path=str(p),
        fps=fps,
        width=width,
        height=height,
        num_frames=int(round(duration * fps)),
        duration=duration,
        has_video=video is not None,
        has_audio=audio is not None,
        audio_sample_rate=sample_rate,
        audio_channels=channels,
        audio_codec=codec,
    )


def require_video(path: PathLike) -> VideoInfo:
    """:func:`probe`, raising :class:`MediaError` unless the file has a video stream."""
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"{path}: no video stream (audio-only or data file); pass a video file")
    return info


def require_audio(path: PathLike) -> VideoInfo:
    """:func:`probe`, raising :class:`MediaError` unless the file has an audio stream."""
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{path}: no audio stream; pass a file with sound (wav, mp3, m4a, or a video with audio)")
    return info


# -- decoding ---------------------------------------------------------------------------


def _read_ppm_header(stream) -> tuple[bytes, int, int] | None:
    """Read one binary PPM header; returns (header bytes, width, height), None at EOF.

    ffmpeg's PPM encoder always writes exactly "P6\\n<w> <h>\\n255\\n".
    """
    magic = stream.readline()
    if not magic:
        return None
    dims, maxval = stream.readline(), stream.readline()
    if magic != b"P6\n" or maxval != b"255\n" or len(dims.split()) != 2:
        raise MediaError(f"unexpected frame header {magic + dims + maxval!r} from ffmpeg; the video may be truncated")
    width, height = map(int, dims.split())
    return magic + dims + maxval, width, height


def iter_frames(path: PathLike, fps: float | None = float(FPS), chunk: int = 64) -> Iterator[np.ndarray]:
    """Decode a video's frames as RGB chunks, resampled to ``fps``.

    Any container/codec ffmpeg reads (mp4, mkv, mov, avi, webm, ...); rotation metadata
    is applied. Resampling uses ffmpeg's ``fps`` filter (``-vf fps=25``, as the official
    code extracts frames): each input timestamp is rounded to the nearest output tick
    ``k / fps`` (halves away from zero), and output frame k is the last input frame
    whose rounded tick is <= k; so frames are dropped or repeated by timestamp, not by
    count. ``fps=None`` returns every decoded frame at the native rate
    (``-fps_mode passthrough``).

    Args:
      path: video file.
      fps: output frame rate, or None for the native rate.
      chunk: frames per yielded array (memory is O(chunk * H * W)).

    Yields:
      uint8 ``[n, H, W, 3]`` RGB arrays, ``1 <= n <= chunk``.

    Raises:
      MediaError: missing/empty/unreadable file, no video stream, decoding failure,
        or a video that decodes to zero frames.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    require_video(path)  # here, not in the generator, so bad paths fail at the call
    return _frame_chunks(path, fps, chunk)


def _frame_chunks(path: PathLike, fps: float | None, chunk: int) -> Iterator[np.ndarray]:
    """The generator behind :func:`iter_frames` (input already validated).

    Frames travel as PPM images: each carries its size, so unlike rawvideo there is no
    need to parse ffmpeg's stderr for the output dimensions (which rotation can swap).
    """
    vf = ["-vf", f"fps={float(fps)!r}"] if fps is not None else ["-fps_mode", "passthrough"]
    cmd = [
        *ffmpeg_command(),
        "-i",
        os.fspath(path),
        "-map",
        "0:V:0",  # capital V: the first real video stream, never cover art
        "-an",
        "-sn",
        "-dn",
        *vf,
        "-pix_fmt",
        "rgb24",
        "-c:v",
        "ppm",
        "-f",
        "image2pipe",
        "-",
    ]
    total = 0
    # stderr goes to a temp file: a pipe we do not drain could fill up and stall ffmpeg.
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
        try:
            assert proc.stdout is not None
            first = _read_ppm_header(proc.stdout)
            if first is not None:
                header, width, height = first
                # Every record is this header plus the pixels: ffmpeg keeps the output size
                # fixed (it rescales if the stream changes size mid-way).
                record = len(header) + width * height * 3
                data = header + proc.stdout.read(record - len(header))
                while data:
                    buf = np.empty((chunk, height, width, 3), np.uint8)
                    n = 0
                    while data and n < chunk:
                        if len(data) != record or not data.startswith(header):
                            raise MediaError(f"{path}: ffmpeg output ended inside a frame; re-encode the video")
                        buf[n] = np.frombuffer(data, np.uint8, offset=len(header)).reshape(height, width, 3)
                        n += 1
                        data = proc.stdout.read(record)
                    total += n
                    yield buf if n == chunk else buf[:n].copy()
            rc = proc.wait()
            errf.seek(0)
            if total == 0:  # e.g. a truncated download: headers intact, no frame data
                raise MediaError(
                    f"{path}: the video stream decoded to no frames (ffmpeg: {ffmpeg_error_summary(errf.read())}); "
                    "the file may be truncated, re-download or re-encode it"
                )
            if rc != 0:
                raise MediaError(f"{path}: ffmpeg failed to decode the video ({ffmpeg_error_summary(errf.read())})")
        finally:
            # Reached early when the consumer stops iterating: stop ffmpeg, reap it.
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()


def read_frames(path: PathLike, fps: float | None = float(FPS)) -> np.ndarray:
    """All frames of a video, uint8 ``[N, H, W, 3]`` RGB (see :func:`iter_frames`).

    Holds the whole video in memory; prefer :func:`iter_frames` for long videos.
    """
    return np.concatenate(list(iter_frames(path, fps=fps, chunk=256)), axis=0)


# -- encoding ---------------------------------------------------------------------------


_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# The sampling rates AAC has (ISO/IEC 14496-3 sampling_frequency_index); others go to 48 kHz.
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def aac_args(sample_rate: int, channels: int) -> list[str]:
    """ffmpeg output arguments of our AAC audio for a source of ``sample_rate`` Hz and ``channels``.

    The source's rate and channel layout are kept (a rate AAC lacks becomes 48 kHz);
    the bitrate is 128 kb/s for mono and 96 kb/s per channel above (192 kb/s stereo),
    at most 512 kb/s: transparent for speech and music. 0 means unknown (ffmpeg keeps
    the source's value; 2 channels are assumed for the bitrate).
    """
    rate = [] if sample_rate in AAC_SAMPLE_RATES or sample_rate <= 0 else ["-ar", "48000"]
    kbps = 128 if channels == 1 else min(96 * (channels or 2), 512)
    return ["-c:a", "aac", *rate, "-b:a", f"{kbps}k"]


class VideoWriter:
    """Stream RGB frames into an H.264 + AAC file, atomically.

    Usage::

        with VideoWriter("out.mp4", fps=25, audio=(wav, 16000)) as w:
            for frames in chunks:
                w.write(frames)          # [H, W, 3] or [n, H, W, 3] uint8 RGB

    Video: libx264, yuv420p, constant rate factor ``crf`` (18 is visually lossless);
    odd widths/heights get one black row/column on the bottom/right, as yuv420p needs
    even sizes. The container follows the suffix: .mp4, .m4v, .mov or .mkv.

    Audio (optional: ``audio_path``, any file with sound, its first audio stream, or
    ``audio=(wav, sr)``) is AAC with the source's sample rate and channels
    (:func:`aac_args`). The duration follows the video, like ffmpeg's
    ``-shortest`` when the video is the shorter stream: audio is cut at
    ``num_frames / fps`` seconds and, if it ends earlier, padded with silence up to
    there. Frames stream into a video-only intermediate file and the audio is muxed
    in on close, when the frame count (hence the duration) is known. In .mp4/.mov the
    audio length is sample-exact (edit lists); .mkv has none, so its AAC track ends on
    a whole 1024-sample frame, up to 64 ms late at 16 kHz.

    Atomicity: all output goes to hidden temp files beside ``path`` (same filesystem,
    so the final rename is atomic); only a successful :meth:`close` puts a file at
    ``path``. If the ``with`` block raises, :meth:`abort` is called, or the writer is
    dropped unclosed, the temp files are deleted and ``path`` is left untouched.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float = float(FPS),
        audio_path: PathLike | None = None,
        audio: tuple[np.ndarray, int] | None = None,
        crf: int = 18,
        preset: str = "medium",
    ) -> None:
        self._closed = True  # until fully initialised, so __del__ has nothing to undo
        self.path = pathlib.Path(path)
        if audio_path is not None and audio is not None:
            raise ValueError("pass audio_path or audio, not both")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if self.path.suffix.lower() not in _MUXERS:
            raise ValueError(f"{self.path}: unsupported output type; use one of {', '.join(_MUXERS)}")
        if not self.path.parent.is_dir():
            raise MediaError(f"{self.path}: output directory does not exist; create {self.path.parent} first")
        # (sample rate, channels) of the audio to mux; 0 = unknown (ffmpeg keeps the source's).
        self._audio_format = (0, 0)
        if audio_path is not None:
            info = require_audio(audio_path)
            self._audio_format = (info.audio_sample_rate, info.audio_channels)
        elif audio is not None:
            self._audio_format = (int(audio[1]), 1)
        self.fps, self.crf, self.preset = float(fps), int(crf), preset
        self.num_frames = 0
        self._audio_path, self._audio = audio_path, audio
        self._size: tuple[int, int] | None = None  # (height, width) of the first frames
        self._proc: subprocess.Popen | None = None
        self._errf = tempfile.TemporaryFile()
        self._temps: list = []
        self._closed = False

    def _temp(self, tag: str) -> pathlib.Path:
        # Not mkstemp: its 0600 mode would carry over to the final file, whereas ffmpeg
        # creates files with the usual umask-derived mode.
        p = self.path.parent / f".{self.path.name}.{secrets.token_hex(6)}.{tag}{self.path.suffix}"
        self._temps.append(p)
        return p

    def _output_args(self, dest: pathlib.Path) -> list:
        fmt = _MUXERS[self.path.suffix.lower()]
        faststart = ["-movflags", "+faststart"] if fmt != "matroska" else []  # index first: streamable
        return ["-f", fmt, *faststart, str(dest)]

    def _failure(self, what: str) -> MediaError:
        self._errf.seek(0)
        return MediaError(f"{self.path}: ffmpeg failed to {what} ({ffmpeg_error_summary(self._errf.read())})")

    def write(self, frames: np.ndarray) -> None:
        """Append frames: uint8 RGB ``[H, W, 3]`` or ``[n, H, W, 3]``, all of one size."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        frames = np.asarray(frames)
        frames = frames[None] if frames.ndim == 3 else frames
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [H, W, 3] or [n, H, W, 3], got {frames.dtype} {frames.shape}")
        if frames.shape[0] == 0:
            return
        if self._proc is None:
            height, width = self._size = frames.shape[1:3]
            self._video_tmp = self._temp("video")
            pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if height % 2 or width % 2 else []
            cmd = [
                *ffmpeg_command(),
                "-y",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-s",
                f"{width}x{height}",
                "-r",
                repr(self.fps),
                "-i",
                "-",
                *pad,
                "-c:v",
                "libx264",
                "-preset",
                self.preset,
                "-crf",
                str(self.crf),
                "-pix_fmt",
                "yuv420p",
                *self._output_args(self._video_tmp),
            ]
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errf)
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"frame size {frames.shape[1:3]} differs from the first frames' {self._size}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
        except BrokenPipeError:  # ffmpeg died; its stderr says why
            self._proc.wait()
            raise self._failure("encode the video") from None
        self.num_frames += frames.shape[0]

    def _audio_file(self) -> str | None:
        """The audio input for the mux pass (in-memory audio goes through a float WAV)."""
        if self._audio is None:
            return None if self._audio_path is None else os.fspath(self._audio_path)
        import soundfile  # a librosa dependency

        wav, sr = np.asarray(self._audio[0], dtype=np.float32), int(self._audio[1])
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"audio must be a non-empty mono waveform [N], got shape {wav.shape}")
        tmp = self._temp("audio")
        soundfile.write(str(tmp), wav, sr, subtype="FLOAT", format="WAV")  # float: no clipping
        return str(tmp)

    def close(self) -> None:
        """Finish encoding, mux the audio, and move the file to ``path``."""
        if self._closed:
            return
        try:
            if self._proc is None:
                raise MediaError(f"{self.path}: no frames were written; write at least one frame")
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
            except BrokenPipeError:  # ffmpeg already failed: the exit code below reports it
                pass
            if self._proc.wait() != 0:
                raise self._failure("encode the video")
            final, audio_in = self._video_tmp, self._audio_file()
            if audio_in is not None:
                final = self._temp("mux")
                cmd = [
                    *ffmpeg_command(),
                    "-y",
                    "-i",
                    str(self._video_tmp),
                    "-i",
                    audio_in,
                    "-map",
                    "0:v:0",
                    "-map",
                    "1:a:0",
                    "-c:v",
                    "copy",
                    # apad: silence after short audio; -t: both streams end with the video.
                    "-af",
                    "apad",
                    *aac_args(*self._audio_format),
                    "-t",
                    f"{self.num_frames / self.fps:.6f}",
                    *self._output_args(final),
                ]
                self._errf.seek(0)
                self._errf.truncate()
                if subprocess.run(cmd, stdin=subprocess.DEVNULL, stderr=self._errf, check=False).returncode != 0:
                    raise self._failure("mux the audio")
            os.replace(final, self.path)
            self._temps.remove(final)
        except BaseException:
            self.abort()
            raise
        self.abort()  # the result is in place; this only deletes the intermediates

    def abort(self) -> None:
        """Stop ffmpeg and delete every temp file (``path`` is left as it was)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
        for p in self._temps:
            p.unlink(missing_ok=True)
        self._temps.clear()
        self._errf.close()
        self._closed = True

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):  # dropped unclosed: never commit
            self.abort()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = float(FPS),
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    audio_path: PathLike | None = None,
    crf: int = 18,
) -> None:
    """Write uint8 RGB frames (``[N, H, W, 3]``, or an iterable of ``[n, H, W, 3]`` /
    ``[H, W, 3]``) as H.264, with mono audio ``[N]`` at ``sample_rate`` or the sound of
    ``audio_path``. Duration and atomicity as in :class:`VideoWriter`."""
    audio_arg = (audio, sample_rate) if audio is not None else None
    with VideoWriter(path, fps=fps, audio_path=audio_path, audio=audio_arg, crf=crf) as w:
        for f in [frames] if isinstance(frames, np.ndarray) else frames:
            w.write(f)

"""Frames for generation: the detector choice, the streaming face-box pass, ping-pong order, and the frame cache.

Memory stays bounded whatever the video length:

* Pass 1 (:func:`scan_faces`) decodes the video in chunks, runs the detector on each
  chunk and keeps only the boxes ([N, 4] int64), then pads, gap-fills and smooths
  them with `face.track_from_detections`, as `face.detect_faces` does.
* Pass 2 (:func:`frames_in_output_order`) decodes the video again and yields frames
  in output order. When the audio outlasts the video, the output plays the video
  back and forth (ping-pong: 0..N-1, N-2..1, 0..N-1, ...). Going backwards needs
  random access, which a decoder pipe does not give, so during the first (forward)
  leg every frame is also written to an on-disk cache of lossless segments (FFV1 in
  Matroska, up to `SEGMENT_BYTES` of raw frames each: exact pixels, compressed),
  in a hidden folder beside the output. Later legs read the cache one segment at a
  time, reversing it in memory for backward legs. Host memory is one segment; disk
  is the losslessly compressed video at the output rate, and only when ping-pong is needed.

Every pass decodes at the output frame rate `fps` (`generate.timing.output_fps`):
ffmpeg's fps filter, which at the video's own rate passes a constant-rate video
through unchanged.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from diff2lip_jax.constants import FPS
from diff2lip_jax.face import (
    DETECTOR_KINDS,
    OFFICIAL_CROP_KINDS,
    FaceDetector,
    FaceTrack,
    default_detector_kind,
    make_detector,
    track_from_detections,
)
from diff2lip_jax.face.follow import FaceFollower, check_face_index
from diff2lip_jax.video import MediaError, ffmpeg_command, ffmpeg_error_summary, iter_frames

SEGMENT_BYTES = 64 << 20  # raw frame bytes per cache segment (host memory when reading it back)


def choose_detector(
    face_detector: str | FaceDetector | None, box: Sequence[int] | None, s3fd_weights: str | os.PathLike | None
) -> tuple[FaceDetector, str, str | None]:
    """-> (detector, its kind, the default policy's notice or None) for a kind (None: the
    default policy, `face.default_detector_kind`) or a detector object (kind: its class
    name); a `box` implies the fixed-box detector (as Wav2Lip's --box). The caller prints
    the notice once every input is known to be valid."""
    notice = None
    if face_detector is not None and not isinstance(face_detector, str):
        return face_detector, type(face_detector).__name__, None  # a detector object (custom detectors, tests)
    if face_detector is not None and face_detector not in DETECTOR_KINDS:
        raise ValueError(f"--face_detector={face_detector!r}: choose one of {', '.join(DETECTOR_KINDS)}")
    if box is not None:
        if face_detector not in (None, "box"):
            raise ValueError(f"--box is a fixed face box; it cannot be combined with --face_detector={face_detector}")
        face_detector = "box"
    if face_detector is None and s3fd_weights is not None:
        face_detector = "s3fd"
    if face_detector == "s3fd" and s3fd_weights is not None and not os.path.isfile(s3fd_weights):
        raise FileNotFoundError(f"--s3fd_weights {s3fd_weights}: no such file")
    if face_detector is None:
        face_detector, notice = default_detector_kind()
    return make_detector(face_detector, weights_path=s3fd_weights, box=box), face_detector, notice


def check_face_choice(face_index: int, face_hint: Sequence[int] | None, detector: FaceDetector) -> tuple | None:
    """Validates --face_index / --face_hint (y1, y2, x1, x2) before any work; the hint as
    (x1, y1, x2, y2), or None. They need a detector that lists every face."""
    # face.follow owns the rule; FaceFollower applies it only once the video is being decoded.
    face_index = check_face_index(face_index)
    if (face_index or face_hint is not None) and not hasattr(detector, "detect_all"):
        raise ValueError(
            "--face_index/--face_hint choose among several faces; the fixed-box detectors have one "
            "(use --face_detector dlib or s3fd)"
        )
    if face_hint is None:
        return None
    if len(face_hint) != 4:
        raise ValueError(f"--face_hint={face_hint}: expected four integers y1,y2,x1,x2")
    y1, y2, x1, x2 = (int(v) for v in face_hint)
    if y2 <= y1 or x2 <= x1:
        raise ValueError(f"--face_hint (y1, y2, x1, x2) = {tuple(face_hint)} needs y1 < y2 and x1 < x2")
    return (x1, y1, x2, y2)


def warn_unofficial_crops(checkpoint: str | os.PathLike, kind: str) -> None:
    """One warning line on stderr when a state_dict file (the official model's format) is
    used with a detector `kind` other than s3fd / voxceleb2: crops unlike its training crops."""
    if os.path.isdir(checkpoint) or kind in OFFICIAL_CROP_KINDS:
        return
    print(
        f"diff2lip-generate: warning: {os.fspath(checkpoint)} is a state_dict file (the official model's format), "
        f"trained on S3FD crops; --face_detector={kind} crops differ from them (use s3fd, or voxceleb2 for "
        "VoxCeleb2-framed videos)",
        file=sys.stderr,
        flush=True,
    )


def pingpong_source(k: np.ndarray | int, n: int) -> np.ndarray:
    """Source frame of output frame k when a video of n frames plays back and forth.

    0, 1, ..., n-1, n-2, ..., 1, 0, 1, ...: period 2n-2 (1 for a single frame).
    Returns int64 with the shape of k.
    """
    if n < 1:
        raise ValueError(f"a video needs at least one frame, got {n}")
    k = np.asarray(k, np.int64)
    period = max(2 * n - 2, 1)
    p = k % period
    return np.where(p < n, p, period - p)


def scan_faces(
    video: str | os.PathLike,
    detector: FaceDetector,
    pads: Sequence[int] | str,
    smooth: bool,
    max_frames: int | None = None,
    chunk: int = 32,
    progress: Callable[[int], None] | None = None,
    fps: float = FPS,
    face_index: int = 0,
    face_hint: Sequence[int] | None = None,
) -> tuple[FaceTrack, tuple[int, int]]:
    """Pass 1: face boxes of (the first `max_frames` frames of) a video decoded at `fps`.

    A detector that lists every face (`detect_all`) is followed through the video
    (`face.FaceFollower`): the `face_index`-th largest face at the start (0: the
    largest), or the one nearest `face_hint` (x1, y1, x2, y2), in every frame; frames
    without it are faceless. Other detectors give one face per frame.
    Returns (FaceTrack over the N frames read, (height, width)). Holds one chunk of
    frames at a time. `progress(n)` is called after each chunk with its frame count.
    """
    follower = None
    if hasattr(detector, "detect_all") and not getattr(detector, "fixed", False):
        min_score = getattr(detector, "score_threshold", -np.inf)
        follower = FaceFollower(face_index=face_index, hint=face_hint, min_score=min_score)
    boxes, found, size, count = [], [], (0, 0), 0
    for frames in iter_frames(video, fps=fps, chunk=chunk):
        if max_frames is not None:
            frames = frames[: max_frames - count]
        size = frames.shape[1:3]
        b, f = follower.update(detector.detect_all(frames)) if follower is not None else detector(frames)
        boxes.append(np.asarray(b, np.int64).reshape(-1, 4))
        found.append(np.asarray(f, bool))
        count += len(frames)
        if progress is not None:
            progress(len(frames))
        if max_frames is not None and count >= max_frames:
            break  # closing the generator stops ffmpeg
    track = track_from_detections(
        np.concatenate(boxes),
        np.concatenate(found),
        *size,
        fixed=getattr(detector, "fixed", False),
        pads=pads,
        smooth=smooth,
    )
    return track, (int(size[0]), int(size[1]))


def first_frame(video: str | os.PathLike) -> np.ndarray:
    """The first frame of a video or image (decoded at 25 fps, as pass 1 reads it): uint8 [H, W, 3]."""
    for frames in iter_frames(video, fps=FPS, chunk=1):
        return frames[0].copy()
    raise MediaError(f"{video}: no frames")  # unreachable: iter_frames raises first


def count_frames(video: str | os.PathLike, fps: float) -> int:
    """Number of frames of `video` decoded at `fps` (ffmpeg's fps filter), without
    converting them to RGB: for `--length official` when only the first frame is read.

    Raises:
      MediaError: the video cannot be decoded.
    """
    cmd = [*ffmpeg_command(), "-i", os.fspath(video), "-map", "0:V:0", "-vf", f"fps={float(fps)!r}"]
    cmd += ["-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    counts = [line for line in proc.stdout.decode().splitlines() if line.startswith("frame=")]
    if proc.returncode != 0 or not counts:
        raise MediaError(f"{video}: cannot count its frames ({ffmpeg_error_summary(proc.stderr)}); re-encode it")
    return int(counts[-1].split("=", 1)[1])


class FrameCache:
    """Lossless on-disk store of a video's frames, in segments of `segment` frames.

    `append` frames in order (each goes straight to an ffmpeg FFV1 encoder: nothing is
    buffered), `finish`, then `read(start, stop, step)` yields the frames
    `range(start, stop, step)` (step +1 or -1) holding one decoded segment in memory.
    """

    def __init__(self, directory: str | os.PathLike, height: int, width: int, fps: float = FPS):
        self.dir = pathlib.Path(directory)
        self.fps = float(fps)  # only the segments' nominal rate: they are read frame by frame
        self.height, self.width = int(height), int(width)
        self.segment = int(max(1, min(250, SEGMENT_BYTES // (self.height * self.width * 3))))
        self.num_frames = 0
        self._proc: subprocess.Popen | None = None
        self._errf: tempfile._TemporaryFileWrapper | None = None
        self._loaded: tuple[int, np.ndarray] | None = None  # (segment index, its frames)

    def _path(self, index: int) -> pathlib.Path:
        return self.dir / f"segment{index:06d}.mkv"

    def append(self, frame: np.ndarray) -> None:
        """Add one uint8 [H, W, 3] frame."""
        frame = np.ascontiguousarray(frame, np.uint8)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame {frame.shape} does not match the cache's {(self.height, self.width, 3)}")
        if self._proc is None:
            self._errf = tempfile.TemporaryFile()
            cmd = [
                *ffmpeg_command(),
                "-y",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-s",
                f"{self.width}x{self.height}",
                "-r",
                repr(self.fps),
                "-i",
                "-",
                "-c:v",
                "ffv1",
                "-f",
                "matroska",
                str(self._path(self.num_frames // self.segment)),
            ]
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errf)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(frame).cast("B"))
        except BrokenPipeError:  # ffmpeg died: _close_segment reports why
            self._close_segment()
        self.num_frames += 1
        if self.num_frames % self.segment == 0:
            self._close_segment()

    def finish(self) -> None:
        """Complete the last, partial segment."""
        if self._proc is not None:
            self._close_segment()

    def _close_segment(self) -> None:
        proc, errf, self._proc, self._errf = self._proc, self._errf, None, None
        assert proc is not None and proc.stdin is not None and errf is not None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = proc.wait()
        errf.seek(0)
        message = ffmpeg_error_summary(errf.read())
        errf.close()
        if rc != 0:
            raise MediaError(
                f"{self.dir}: cannot write the frame cache ({message}); check the free disk space beside --out"
            )

    def _segment(self, index: int) -> np.ndarray:
        if self._loaded is None or self._loaded[0] != index:
            self._loaded = None  # free the previous segment before decoding the next
            parts = list(iter_frames(self._path(index), fps=None, chunk=self.segment))
            self._loaded = (index, parts[0] if len(parts) == 1 else np.concatenate(parts))
        return self._loaded[1]

    def read(self, start: int, stop: int, step: int = 1) -> Iterator[np.ndarray]:
        """Frames of `range(start, stop, step)`, step = 1 or -1, each uint8 [H, W, 3]."""
        if step not in (1, -1):
            raise ValueError("step must be 1 or -1")
        if self._proc is not None:
            raise RuntimeError("call finish() before reading")
        for i in range(start, stop, step):
            if not 0 <= i < self.num_frames:
                raise IndexError(f"frame {i} is not in the cache of {self.num_frames} frames")
            yield self._segment(i // self.segment)[i % self.segment]

    def abort(self) -> None:
        """Stop a running segment encoder (the caller deletes the directory)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
            self._proc = None
        if self._errf is not None:
            self._errf.close()
            self._errf = None


def frames_in_output_order(
    video: str | os.PathLike,
    num_video: int,
    num_out: int,
    cache_dir: str | os.PathLike | None,
    fps: float = FPS,
) -> Iterator[tuple[int, np.ndarray]]:
    """Pass 2: (source index, frame uint8 [H, W, 3]) for output frames 0..num_out-1, ping-pong order.

    The video is decoded at `fps` (the rate pass 1 read it at, so indices agree).

    The first leg streams from the decoder; when num_out > num_video the frames are
    also cached in `cache_dir` (must be given then) for the later legs.

    Raises:
      MediaError: the video decodes to a different frame count than in pass 1.
    """
    pingpong = num_out > num_video
    cache: FrameCache | None = None
    produced = 0
    try:
        for chunk in iter_frames(video, fps=fps, chunk=16):
            for frame in chunk[: min(num_video, num_out) - produced]:
                if pingpong and num_video > 1:
                    if cache is None:
                        assert cache_dir is not None, "ping-pong needs a cache directory"
                        cache = FrameCache(cache_dir, *frame.shape[:2], fps=fps)
                    cache.append(frame)
                yield produced, frame
                produced += 1
            if produced == min(num_video, num_out):
                break  # closing the decoder stops ffmpeg
        if produced < min(num_video, num_out):
            raise MediaError(
                f"{video}: decoded {produced} frames, expected {num_video}; the file changed while reading"
            )
        if not pingpong:
            return
        if num_video == 1:  # a single frame: repeat it
            for _ in range(num_out - produced):
                yield 0, frame
            return
        assert cache is not None
        cache.finish()
        forward = False  # the leg after the first goes backwards
        while produced < num_out:
            start, stop, step = (0, num_video, 1) if forward else (num_video - 2, 0, -1)
            for s, cached in zip(range(start, stop, step), cache.read(start, stop, step)):
                if produced == num_out:
                    return
                yield s, cached
                produced += 1
            forward = not forward
    finally:
        if cache is not None:
            cache.abort()  # a no-op unless stopped while a segment was being written

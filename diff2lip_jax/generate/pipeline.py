"""`generate`: a face video (or still) + any audio -> a lip-synced 25 fps mp4.

Steps (official `generate.py` semantics, streamed):

1. validate the inputs, load the audio and the model (errors surface before any work);
2. pass 1: face boxes over the video (`frames.scan_faces`; boxes only);
3. pass 2: frames in output order (ping-pong when the audio is longer), face crops
   resized to the model's image size, batched (the last batch padded, so the
   sampler compiles once), DDIM-sampled on all local devices, composited with the
   known upper half, pasted back and streamed to the encoder with the new audio.

Output length: round(audio seconds * 25) frames, so video and audio durations agree
within one frame (the official code instead truncates both to the shorter input).
Frames whose face is missing pass through unchanged.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from diff2lip_jax.audio import frame_window_starts, load_audio, melspectrogram
from diff2lip_jax.constants import FPS, MEL_STEPS_PER_WINDOW, SAMPLE_RATE
from diff2lip_jax.face import FaceDetector, crop_and_resize
from diff2lip_jax.generate import frames as frames_lib
from diff2lip_jax.generate import model as model_lib
from diff2lip_jax.generate import paste as paste_lib
from diff2lip_jax.generate.side_by_side import write_side_by_side
from diff2lip_jax.generate.strip import write_strip
from diff2lip_jax.video import VideoWriter, probe, require_video

MODES = ("cross", "reconstruction")
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


@dataclasses.dataclass
class _Chunk:
    """Consecutive output frames up to (and including) the faces of one sampler batch."""

    frames: list = dataclasses.field(default_factory=list)  # uint8 [H, W, 3] in output order
    face_at: list = dataclasses.field(default_factory=list)  # positions in `frames` that have a face
    boxes: list = dataclasses.field(default_factory=list)  # int64 (x1, y1, x2, y2) per face
    crops: list = dataclasses.field(default_factory=list)  # uint8 [S, S, 3] per face
    refs: list = dataclasses.field(default_factory=list)  # uint8 [S, S, 3] per face
    mels: list = dataclasses.field(default_factory=list)  # float32 [80, 16] per face
    result: Any = None  # the sampler's (asynchronous) output


class _LipSync:
    """Pass 2 after decoding: batches faces, samples, pastes back, writes frames in order.

    Faces accumulate until a batch is full (`batch` slots; a short batch is zero padded
    to the same shape, so the sampler never recompiles). One batch stays in flight
    while the host decodes and crops the next. Faceless frames wait in the chunk of
    the next face; a chunk is also flushed after 2 * batch frames, which bounds host
    memory to about 4 * batch full frames.
    """

    def __init__(
        self,
        writer: VideoWriter,
        sampler: model_lib.Sampler,
        first_sampler: model_lib.Sampler,
        params: Any,
        noise: np.ndarray,
        batch: int,
        paste: str,
        bar: Any,
        stats: dict,
    ):
        self.writer, self.sampler, self.first_sampler = writer, sampler, first_sampler
        self.params, self.noise, self.batch, self.paste, self.bar, self.stats = (
            params,
            noise,
            batch,
            paste,
            bar,
            stats,
        )
        self.chunk = _Chunk()
        self.inflight: collections.deque = collections.deque()
        self.strip: dict[str, Any] = {}  # Fig. 3 arrays of the first batch, if recorded

    def add(
        self,
        frame: np.ndarray,
        box: np.ndarray | None = None,
        crop: np.ndarray | None = None,
        ref: np.ndarray | None = None,
        mel: np.ndarray | None = None,
    ) -> None:
        """Queue one output frame [H, W, 3] uint8; with a face box also its crop, reference and mel window."""
        chunk = self.chunk
        if box is not None:
            chunk.face_at.append(len(chunk.frames))
            chunk.boxes.append(box)
            chunk.crops.append(crop)
            chunk.refs.append(ref)
            chunk.mels.append(mel)
            self.stats["faces"] += 1
        else:
            self.stats["passthrough"] += 1
        chunk.frames.append(frame)
        if len(chunk.crops) == self.batch or len(chunk.frames) >= 2 * self.batch:
            self._dispatch()

    def close(self) -> None:
        """Sample the last (padded) batch and write every remaining frame."""
        if self.chunk.frames:
            self._dispatch()
        while self.inflight:
            self._finish(self.inflight.popleft())

    def _dispatch(self) -> None:
        chunk, self.chunk = self.chunk, _Chunk()
        if chunk.crops:
            missing = self.batch - len(chunk.crops)
            pad = [(0, missing)] + [(0, 0)] * 3
            crops, refs = np.pad(np.stack(chunk.crops), pad), np.pad(np.stack(chunk.refs), pad)
            mels = np.pad(np.stack(chunk.mels), pad[:3])
            sampler = self.first_sampler if self.stats["batches"] == 0 else self.sampler
            chunk.result = sampler(self.params, self.noise, crops, refs, mels)  # asynchronous
            self.stats["batches"] += 1
            self.stats["padded_slots"] += missing
        self.inflight.append(chunk)
        while len(self.inflight) > 1:
            self._finish(self.inflight.popleft())

    def _finish(self, chunk: _Chunk) -> None:
        frames = list(chunk.frames)
        if chunk.crops:
            result = chunk.result
            if isinstance(result, tuple):  # the first batch of a Fig. 3 run
                result, xs, x0s = (np.asarray(r) for r in result)
                self.strip.update(x_t=xs[:, 0], x0_pred=x0s[:, 0])
            generated = np.asarray(result)[: len(chunk.crops)]
            originals = np.stack([frames[i] for i in chunk.face_at])
            pasted = paste_lib.paste(self.paste, originals, generated, np.stack(chunk.boxes))
            for j, i in enumerate(chunk.face_at):
                frames[i] = pasted[j]
        self.writer.write(np.stack(frames))
        self.bar.update(len(frames))


def _check_output(path: pathlib.Path, suffixes: Sequence[str], overwrite: bool, what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {path}: use a {'/'.join(suffixes)} file name")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; pass a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {path} exists; choose another name or pass --overwrite")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what} {path}: directory {path.parent} does not exist; create it first")


def generate(
    video: str | os.PathLike,
    audio: str | os.PathLike,
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike,
    config: Any = None,
    step: int | None = None,
    mode: str = "cross",
    ddim_steps: int = 25,
    seed: int = 7,
    face_detector: str | FaceDetector | None = None,
    pads: Sequence[int] | str = (0, 0, 0, 0),
    box: Sequence[int] | None = None,
    nosmooth: bool = False,
    batch_size: int = 32,
    static: bool = False,
    s3fd_weights: str | os.PathLike | None = None,
    progress: bool = True,
    fig3_strip: str | os.PathLike | None = None,
    fig3_steps: int = 5,
    paste: str = "full",
    side_by_side: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Lip-syncs `video` to `audio` and writes `out` (H.264 + AAC, 25 fps), atomically.

    Args:
      video: any video ffmpeg reads (resampled to 25 fps), or with `static` an image
        (or a video whose first frame is used) repeated for the whole audio.
      audio: any file with sound (wav, mp3, m4a, a video's audio track).
      out: .mp4/.m4v/.mov/.mkv; refused if it exists unless `overwrite`.
      checkpoint: a model directory (EMA params; `step` picks one, default newest) or an
        official .pt/.pth/.safetensors state_dict whose flags come from `config`.
      config: ConfigDict / dict / "FILE.py:VARIANT": model flags for state_dict files
        (default: the official model) and diffusion flags (default: official).
      mode: "cross" (input and reference = the video's frame at each time step) or
        "reconstruction" (the first frame is input and reference for every frame).
      ddim_steps: DDIM steps (respacing "ddim{N}"); seed: the one start-noise image.
      face_detector: "dlib" | "s3fd" (`s3fd_weights`, default the weights cache's) |
        "voxceleb2" | "box", a detector object, or None: s3fd when its weights are at
        hand, else dlib (a one-line notice); `box` = (y1, y2, x1, x2) selects the
        fixed-box detector. An official state_dict file with a detector other than
        s3fd / voxceleb2 gets a one-line warning on stderr (its training crops differ).
      pads: (top, bottom, left, right) pixels added to detected boxes; nosmooth: no
        5-frame box smoothing.
      batch_size: frames per sampler call, rounded up to a multiple of the local devices.
      progress: tqdm bars on stderr (frames/s and ETA).
      paste: "full" (official: the whole resized crop replaces the face box, so the
        upper half passes through the model's resolution), "lower" (only the
        generated lower half of the box is replaced) or "feather" (the lower half
        blended in through a feathered mask: no seam at the box border); `generate.paste`.
      fig3_strip: a .png path: x_t and x0_pred of the first face at `fig3_steps` evenly
        spaced DDIM steps (the paper's Fig. 3), written after the video succeeds.
      side_by_side: also write this comparison video: video source | lip-synced |
        audio source (when the audio file has pictures), with the driving audio.

    Returns:
      stats: output/video frame counts, faces, passthrough frames, batches, padded
      slots, sampler traces (compilations) in this call, timings and frames/s, and
      with `fig3_strip` the arrays under "fig3" (timesteps [K], x_t / x0_pred uint8 [K, S, S, 3]).

    Raises:
      ValueError (incl. MediaError) / FileNotFoundError / FileExistsError with one-line
      messages for bad inputs; nothing is left at `out` (or `fig3_strip`) on failure.
    """
    t_start = time.perf_counter()
    out = pathlib.Path(out)
    if mode not in MODES:
        raise ValueError(f"--mode={mode!r}: choose cross or reconstruction")
    paste_lib.check_mode(paste)
    if int(ddim_steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"--ddim_steps ({ddim_steps}) and --batch_size ({batch_size}) must be >= 1")
    _check_output(out, OUTPUT_SUFFIXES, overwrite, "--out")
    strip_path = pathlib.Path(fig3_strip) if fig3_strip is not None else None
    if strip_path is not None:
        _check_output(strip_path, (".png",), overwrite, "--fig3_strip")
    if side_by_side is not None:
        _check_output(pathlib.Path(side_by_side), OUTPUT_SUFFIXES, overwrite, "--side_by_side")
    info = require_video(video)
    wav = load_audio(audio)
    num_out = int(round(len(wav) * FPS / SAMPLE_RATE))
    if num_out < 1:
        raise ValueError(
            f"{audio}: the audio lasts {len(wav) / SAMPLE_RATE * 1000:.0f} ms, under one video frame (40 ms)"
        )
    detector, detector_kind, notice = frames_lib.choose_detector(face_detector, box, s3fd_weights)
    loaded = model_lib.load_checkpoint(checkpoint, config, step)
    if notice:  # every input is valid now: a user error above stays one line
        print(f"diff2lip-generate: note: {notice}", file=sys.stderr, flush=True)
    frames_lib.warn_unofficial_crops(checkpoint, detector_kind)
    size = loaded.cfg.image_size
    sampler = model_lib.get_sampler(loaded.cfg, loaded.diffusion, int(ddim_steps))
    bs = sampler.padded_batch(batch_size)
    num_strip = min(int(fig3_steps), int(ddim_steps)) if strip_path is not None else 0
    first_sampler = model_lib.get_sampler(loaded.cfg, loaded.diffusion, int(ddim_steps), num_strip)
    traces0 = model_lib.sampler_traces()
    bars = _Bars(progress)

    # Pass 1: boxes. Reconstruction and stills need only the first frame's box; the
    # official smooths over frames 0..4, so those five are scanned.
    t_detect = time.perf_counter()
    still = static or mode == "reconstruction"
    bar = bars.open("faces", None if still else round(info.duration * FPS) or None)
    try:
        track, _ = frames_lib.scan_faces(
            video,
            detector,
            pads,
            smooth=not nosmooth,
            max_frames=1 if static else 5 if still else None,
            progress=bar.update,
        )
    finally:
        bar.close()
    num_video = 1 if still else len(track.has_face)
    t_detect = time.perf_counter() - t_detect

    mel = melspectrogram(wav)
    starts = frame_window_starts(num_out)
    params = sampler.put_params(loaded.params)
    noise = model_lib.start_noise_image(seed, size)
    stats: dict[str, Any] = dict(
        output=str(out),
        mode=mode,
        num_frames=num_out,
        video_frames=num_video,
        fps=FPS,
        audio_seconds=len(wav) / SAMPLE_RATE,
        image_size=size,
        batch_size=bs,
        devices=sampler.num_devices,
        ddim_steps=int(ddim_steps),
        pingpong=num_out > num_video and not still,
        faces=0,
        passthrough=0,
        batches=0,
        padded_slots=0,
        checkpoint=loaded.description,
    )
    cache_dir = None
    if stats["pingpong"]:
        cache_dir = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".frames", dir=out.parent)
    t_pass2 = time.perf_counter()
    bar = bars.open("lip-sync", num_out)
    source: Iterator[tuple[int, np.ndarray]] | None = None
    try:
        if still:
            frame = frames_lib.first_frame(video)
            source = ((0, frame) for _ in range(num_out))
            # Reconstruction / still: the first frame is input and reference for every frame.
            ref_still = crop_and_resize(frame[None], track.boxes[:1], size)[0] if track.has_face[0] else None
        else:
            source = frames_lib.frames_in_output_order(video, num_video, num_out, cache_dir)
        with VideoWriter(out, fps=FPS, audio=(wav, SAMPLE_RATE)) as writer:
            lipsync = _LipSync(writer, sampler, first_sampler, params, noise, bs, paste, bar, stats)
            for k, (s, frame) in enumerate(source):
                if not track.has_face[s]:
                    lipsync.add(frame)
                    continue
                crop = ref_still if still else crop_and_resize(frame[None], track.boxes[s][None], size)[0]
                # cross: the reference is the frame itself (official --sampling_ref_type=gt)
                mel_window = mel[:, np.clip(starts[k] + np.arange(MEL_STEPS_PER_WINDOW), 0, mel.shape[1] - 1)]
                lipsync.add(frame, track.boxes[s], crop, crop, mel_window)
            lipsync.close()
    finally:
        bar.close()
        if cache_dir is not None:
            if source is not None:
                source.close()  # stops the cache's encoder before its folder goes
            shutil.rmtree(cache_dir, ignore_errors=True)
    t_pass2 = time.perf_counter() - t_pass2
    if strip_path is not None and lipsync.strip:
        write_strip(strip_path, lipsync.strip["x_t"], lipsync.strip["x0_pred"])
        timesteps = first_sampler.diffusion.intermediate_timesteps(num_strip)
        stats["fig3"] = dict(path=str(strip_path), timesteps=np.asarray(timesteps).tolist(), **lipsync.strip)
    if side_by_side is not None:
        panels = [(video, "video source"), (out, "lip-synced")]
        if probe(audio).width > 0:
            panels.append((audio, "driving clip"))
        write_side_by_side(panels, side_by_side, audio_path=out, lead=1)
        stats["side_by_side"] = str(side_by_side)
    total = time.perf_counter() - t_start
    stats.update(
        sampler_traces=model_lib.sampler_traces() - traces0,
        detect_seconds=t_detect,
        generate_seconds=t_pass2,
        total_seconds=total,
        frames_per_second=num_out / max(t_pass2, 1e-9),
        frames_per_second_total=num_out / max(total, 1e-9),
    )
    return stats


class _Bars:
    """tqdm progress bars (frames/s and ETA) on stderr, or no-ops."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def open(self, desc: str, total: int | None) -> Any:
        if not self.enabled:
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, smoothing=0.1)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

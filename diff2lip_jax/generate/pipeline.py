"""`generate`: a face video (or still) + any audio -> a lip-synced mp4 at the video's frame rate.

Steps (official `generate.py` semantics, streamed):

1. validate the inputs, load the audio and the model (errors surface before any work);
2. pass 1: face boxes over the video (`frames.scan_faces`; boxes only);
3. pass 2: frames in output order (ping-pong when the audio is longer), face crops
   resized to the model's image size, batched (the last batch padded, so the
   sampler compiles once), DDIM-sampled on all local devices, composited with the
   known upper half, pasted back (`lipsync`, `paste`) and streamed to the encoder
   with the original audio (its own sample rate and channels).

Frame rate, length and mel windows: `timing`. By default the output keeps the
video's frame rate and lasts as long as the audio, round(audio seconds * fps) frames,
so video and audio durations agree within one frame (`length="official"`: the
official code's count, which truncates both to the shorter input). Frames whose
face is missing pass through unchanged.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from diff2lip_jax.audio import frame_windows_at, load_audio, melspectrogram
from diff2lip_jax.constants import SAMPLE_RATE
from diff2lip_jax.face import FaceDetector, crop_and_resize
from diff2lip_jax.generate import frames as frames_lib
from diff2lip_jax.generate import model as model_lib
from diff2lip_jax.generate import paste as paste_lib
from diff2lip_jax.generate import timing
from diff2lip_jax.generate.lipsync import Bars, LipSync
from diff2lip_jax.generate.side_by_side import write_side_by_side
from diff2lip_jax.generate.strip import write_strip
from diff2lip_jax.video import VideoWriter, probe, require_audio, require_video

MODES = ("cross", "reconstruction")
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


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
    weights: str = "ema",
    precision: str = "auto",
    mode: str = "cross",
    ddim_steps: int = 25,
    seed: int = 7,
    face_detector: str | FaceDetector | None = None,
    pads: Sequence[int] | str = (0, 0, 0, 0),
    box: Sequence[int] | None = None,
    face_index: int = 0,
    face_hint: Sequence[int] | None = None,
    nosmooth: bool = False,
    batch_size: int = 32,
    static: bool = False,
    s3fd_weights: str | os.PathLike | None = None,
    progress: bool = True,
    fig3_strip: str | os.PathLike | None = None,
    fig3_steps: int = 5,
    paste: str = "feather",
    side_by_side: str | os.PathLike | None = None,
    overwrite: bool = False,
    fps: str | float | None = None,
    length: str = "audio",
) -> dict:
    """Lip-syncs `video` to `audio` and writes `out` (H.264 + AAC), atomically.

    Args:
      video: any video ffmpeg reads, or with `static` an image (or a video whose first
        frame is used) repeated for the whole audio.
      audio: any file with sound (wav, mp3, m4a, a video's audio track); the output
        carries it at its own sample rate and channels (AAC), the model reads a
        16 kHz mono copy.
      out: .mp4/.m4v/.mov/.mkv; refused if it exists unless `overwrite`.
      checkpoint: a model directory (`step` picks one, default newest; `weights` "ema" or
        "raw", a training workdir's raw params) or an official .pt/.pth/.safetensors
        state_dict whose flags come from `config`.
      precision: the sampler's compute dtype, "auto" (the model flags'), "float32" or
        "bfloat16" (about 2x faster on GPUs/TPUs; error bounded in the tests).
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
      face_index, face_hint: which face to follow through the video when frames hold
        several: the `face_index`-th largest at the start (0 = the largest), or the one
        nearest `face_hint` = (y1, y2, x1, x2) in the first frame's pixels (the order of
        `box`). Frames without that face pass through.
      pads: (top, bottom, left, right) pixels added to detected boxes; nosmooth: no
        5-frame box smoothing.
      batch_size: frames per sampler call, rounded up to a multiple of the local devices.
      progress: tqdm bars on stderr (frames/s and ETA).
      paste: "feather" (default: the generated lower half blended in through a
        feathered mask, no seam at the box border), "full" (the official generate.py:
        the whole resized crop replaces the face box, so the upper half passes through
        the model's resolution) or "lower" (only the box's lower half is replaced);
        `generate.paste`.
      fig3_strip: a .png path: x_t and x0_pred of the first face at `fig3_steps` evenly
        spaced DDIM steps (the paper's Fig. 3), written after the video succeeds.
      side_by_side: also write this comparison video: video source | lip-synced |
        audio source (when the audio file has pictures), with the driving audio.
      fps: output frame rate: None (default: the video's own rate; 25 with `static`
        or reconstruction), "native" (the video's rate in every mode) or a rate such
        as 25 (the video is resampled, as the official tool does). Each output frame
        gets the mel window at its own time (`generate.timing`).
      length: "audio" (default: round(audio seconds * fps) frames, the last mel
        windows edge padded) or "official" (the official generate.py's count,
        min(video frames, frames with a complete mel window); 1 s of audio at 25 fps
        gives 22 frames: the paper's protocol with fps=25).

    Returns:
      stats: output/video frame counts, fps, length, the audio's sample rate and
      channels, faces, passthrough frames, batches, padded
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
    timing.check_length(length)
    timing.parse_fps(fps)  # a typo fails before any file is opened
    if int(ddim_steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"--ddim_steps ({ddim_steps}) and --batch_size ({batch_size}) must be >= 1")
    model_lib.check_precision(precision)
    _check_output(out, OUTPUT_SUFFIXES, overwrite, "--out")
    strip_path = pathlib.Path(fig3_strip) if fig3_strip is not None else None
    if strip_path is not None:
        _check_output(strip_path, (".png",), overwrite, "--fig3_strip")
    if side_by_side is not None:
        _check_output(pathlib.Path(side_by_side), OUTPUT_SUFFIXES, overwrite, "--side_by_side")
    info = require_video(video)
    still = static or mode == "reconstruction"
    out_fps = timing.output_fps(fps, info, still)
    audio_info = require_audio(audio)
    wav = load_audio(audio)
    try:  # an early check (a face scan's worth before the video's length is known)
        num_out = timing.output_length(length, len(wav), out_fps, None)
    except ValueError as e:
        raise ValueError(f"{audio}: {e}") from None
    detector, detector_kind, notice = frames_lib.choose_detector(face_detector, box, s3fd_weights)
    hint_box = frames_lib.check_face_choice(face_index, face_hint, detector)
    loaded = model_lib.load_checkpoint(checkpoint, config, step, weights)
    if notice:  # every input is valid now: a user error above stays one line
        print(f"diff2lip-generate: note: {notice}", file=sys.stderr, flush=True)
    frames_lib.warn_unofficial_crops(checkpoint, detector_kind)
    size = loaded.cfg.image_size
    model_cfg = model_lib.with_precision(loaded.cfg, precision)
    sampler = model_lib.get_sampler(model_cfg, loaded.diffusion, int(ddim_steps))
    bs = sampler.padded_batch(batch_size)
    num_strip = min(int(fig3_steps), int(ddim_steps)) if strip_path is not None else 0
    first_sampler = model_lib.get_sampler(model_cfg, loaded.diffusion, int(ddim_steps), num_strip)
    traces0 = model_lib.sampler_traces()
    bars = Bars(progress)

    # Pass 1: boxes. Reconstruction and stills need only the first frame's box; the
    # official smooths over frames 0..4, so those five are scanned.
    t_detect = time.perf_counter()
    bar = bars.open("faces", None if still else round(info.duration * out_fps) or None)
    try:
        track, _ = frames_lib.scan_faces(
            video,
            detector,
            pads,
            smooth=not nosmooth,
            max_frames=1 if static else 5 if still else None,
            progress=bar.update,
            fps=out_fps,
            face_index=face_index,
            face_hint=hint_box,
        )
    finally:
        bar.close()
    num_video = 1 if still else len(track.has_face)
    if length == "official" and not static:  # the official keeps min(video frames, mel windows)
        frames_in_video = frames_lib.count_frames(video, out_fps) if still else num_video
        num_out = timing.output_length(length, len(wav), out_fps, frames_in_video)
    t_detect = time.perf_counter() - t_detect

    mel = melspectrogram(wav)
    params = sampler.put_params(loaded.params)
    noise = model_lib.start_noise_image(seed, size)
    stats: dict[str, Any] = dict(
        output=str(out),
        mode=mode,
        num_frames=num_out,
        video_frames=num_video,
        fps=out_fps,
        length=length,
        audio_seconds=len(wav) / SAMPLE_RATE,
        audio_sample_rate=audio_info.audio_sample_rate,
        audio_channels=audio_info.audio_channels,
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
            source = frames_lib.frames_in_output_order(video, num_video, num_out, cache_dir, fps=out_fps)
        # The original audio, not the 16 kHz mono copy the model reads.
        with VideoWriter(out, fps=out_fps, audio_path=audio) as writer:
            lipsync = LipSync(writer, sampler, first_sampler, params, noise, bs, paste, bar, stats)
            for k, (s, frame) in enumerate(source):
                if not track.has_face[s]:
                    lipsync.add(frame)
                    continue
                crop = ref_still if still else crop_and_resize(frame[None], track.boxes[s][None], size)[0]
                # cross: the reference is the frame itself (official --sampling_ref_type=gt)
                mel_window = frame_windows_at(mel, np.array([k]), out_fps)[0]  # at output frame k's time
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

"""diff2lip-synth: write N synthetic talking-face clips (mp4 + audio + ground truth).

Usage: diff2lip-synth --out DIR [--num_clips 4] [--seed 0] [--fps 25] [--size 256 | WxH]
                      [--seconds 3] [--audio_format wav|mp3|m4a] [--identities 4] [--head_motion 1]

Output layout (VoxCeleb2-like: one folder per speaker)::

    DIR/manifest.json                          dataset parameters and the list of clips
    DIR/id00000/id00000_clip00000.mp4          H.264 video + AAC audio
    DIR/id00000/id00000_clip00000.<fmt>        the audio alone (wav, mp3 or m4a)
    DIR/id00000/id00000_clip00000.json         ground truth (see :func:`clip_metadata`)
    DIR/id00001/id00001_clip00000.mp4 ...

Clips are dealt round-robin over ``--identities`` speakers: clip ``i`` belongs to
speaker ``i % K`` and is that speaker's clip number ``i // K``. Files of the same
names are overwritten; other files in DIR are left alone. Clips are staged in a
hidden folder and moved into DIR at the end: a failure or Ctrl-C changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import flags

from data_pipelines.synthetic.clip import SAMPLE_RATE, Clip, synthesize_clip
from diff2lip_jax.constants import FPS

PROG = "diff2lip-synth"
AUDIO_FORMATS = ("wav", "mp3", "m4a")
# Encoders of the imageio-ffmpeg binary (both listed by `ffmpeg -encoders`).
_FFMPEG_AUDIO = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-f", "ipod"],
}
FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the CLI flags (idempotent).

    Called by :func:`run`, not at import, so that importing this package in a
    process that defines other ``--out``/``--seed`` flags does not clash.
    """
    if "num_clips" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output directory (created; must not be a file).", **fv)
    flags.DEFINE_integer("num_clips", 4, "Number of clips to write (>= 1).", **fv)
    flags.DEFINE_integer("seed", 0, "Dataset seed (>= 0); the same seed gives the same frames and audio.", **fv)
    flags.DEFINE_float("fps", float(FPS), "Video frame rate, 10-60 (the models use 25; 30 tests resampling).", **fv)
    flags.DEFINE_string("size", "256", 'Frame size: "256" (square) or "WxH" such as "320x240"; even, 64-2048.', **fv)
    flags.DEFINE_float("seconds", 3.0, "Duration of every clip in seconds (0 < s <= 600).", **fv)
    flags.DEFINE_string("audio_format", "wav", "Format of the separate audio file: wav, mp3 or m4a.", **fv)
    flags.DEFINE_integer(
        "identities", 4, "Number of identities (= speakers): even ones are photo variants, odd ones drawn faces.", **fv
    )
    flags.DEFINE_float("head_motion", 1.0, "Scale of the head's sway, nod, zoom and roll, 0-2 (0: still heads).", **fv)
    # `--help` lists the key flags of the module named by argv[0] (the console script).
    for name in ("out", "num_clips", "seed", "fps", "size", "seconds", "audio_format", "identities", "head_motion"):
        flag_values.register_key_flag_for_module(sys.argv[0], flag_values[name])


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> ``(256, 256)``, ``"320x240"`` -> ``(320, 240)`` (width, height).

    Raises:
      ValueError: malformed, odd (H.264 4:2:0 needs even sizes) or outside 64-2048.
    """
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text or "")
    if not m:
        raise ValueError(f"--size={text!r} is not a size; use e.g. --size=256 or --size=320x240")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if not (64 <= w <= 2048 and 64 <= h <= 2048) or w % 2 or h % 2:
        raise ValueError(f"--size={text} must be even and between 64 and 2048 pixels per side")
    return w, h


def write_audio(path: pathlib.Path, wav: np.ndarray, audio_format: str, sr: int = SAMPLE_RATE) -> None:
    """Writes mono float audio ``[N]`` as wav (16-bit PCM), mp3 or m4a (AAC), atomically."""
    from diff2lip_jax.audio import save_wav  # imports librosa: only when writing
    from diff2lip_jax.video import MediaError, ffmpeg_exe

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.{audio_format}")
    try:
        if audio_format == "wav":
            save_wav(tmp, wav, sr)
        else:
            cmd = [
                ffmpeg_exe(),
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "f32le",
                "-ar",
                str(sr),
                "-ac",
                "1",
                "-i",
                "-",
                "-map_metadata",
                "-1",
                "-fflags",
                "+bitexact",
                *_FFMPEG_AUDIO[audio_format],
                str(tmp),
            ]
            data = np.ascontiguousarray(wav, dtype="<f4").tobytes()
            proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            if proc.returncode != 0:
                msg = " ".join(proc.stderr.decode("utf-8", "replace").split()[-30:])
                raise MediaError(f"{path}: ffmpeg could not encode {audio_format} ({msg})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: pathlib.Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # One top-level key (or manifest clip) per line: readable, yet compact arrays.
        lines = []
        for k, v in obj.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                items = ",\n  ".join(json.dumps(x) for x in v)
                lines.append(f" {json.dumps(k)}: [\n  {items}\n ]")
            else:
                lines.append(f" {json.dumps(k)}: {json.dumps(v)}")
        tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _deferred_sigint():
    """Holds a Ctrl-C until the block is done (the final renames: all clips or none)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _rounded(a: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(a, np.float64), decimals).tolist()


def clip_metadata(clip: Clip, files: dict[str, str]) -> dict[str, Any]:
    """Ground truth of a clip as JSON-able dict.

    Keys: clip_id, speaker_id, identity, identity_kind, seed, clip_index, fps,
    num_frames, sample_rate, num_samples, duration, width, height, f0_range,
    files (video/audio/meta names relative to the dataset root), audio_window (how
    frames map to samples), mouth_opening and mouth_width (``[F]`` in [0, 1]),
    face_boxes and mouth_boxes (``[F][4]`` ``x1, y1, x2, y2`` in frame pixels).
    """
    return {
        "clip_id": clip.clip_id,
        "speaker_id": clip.speaker_id,
        "identity": clip.identity,
        "identity_kind": clip.identity_kind,
        "seed": clip.seed,
        "clip_index": clip.clip_index,
        "fps": clip.fps,
        "num_frames": clip.num_frames,
        "sample_rate": clip.sample_rate,
        "num_samples": int(clip.audio.size),
        "duration": clip.num_frames / clip.fps,
        "width": clip.width,
        "height": clip.height,
        "f0_range": [round(x, 2) for x in clip.f0_range],
        "files": files,
        "audio_window": "frame i follows samples [round(i*sample_rate/fps), round((i+1)*sample_rate/fps))",
        "mouth_opening": _rounded(clip.mouth_opening, 4),
        "mouth_width": _rounded(clip.mouth_width, 4),
        "face_boxes": _rounded(clip.face_boxes, 2),
        "mouth_boxes": _rounded(clip.mouth_boxes, 2),
    }


def generate_dataset(
    out: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    fps: float = float(FPS),
    size: tuple[int, int] = (256, 256),
    seconds: float = 3.0,
    audio_format: str = "wav",
    identities: int = 4,
    log: Callable[[str], None] | None = None,
    head_motion: float = 1.0,
) -> dict[str, Any]:
    """Writes ``num_clips`` clips and ``manifest.json`` under ``out``; returns the manifest.

    Arguments are validated (ValueError / NotADirectoryError with a one-line message).
    See the module docstring for the layout.
    """
    from diff2lip_jax.video import VideoWriter

    root = pathlib.Path(out)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--out={root} exists and is not a directory; pass a directory path")
    if num_clips < 1:
        raise ValueError(f"--num_clips must be >= 1, got {num_clips}")
    if identities < 1:
        raise ValueError(f"--identities must be >= 1, got {identities}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if not 10.0 <= fps <= 60.0:
        raise ValueError(f"--fps must be between 10 and 60 (25 or 30 are usual), got {fps:g}")
    if not 0.0 < seconds <= 600.0 or round(seconds * fps) < 1:
        raise ValueError(f"--seconds must be > 0 (at least one frame) and <= 600, got {seconds:g}")
    if not 0.0 <= head_motion <= 2.0:
        raise ValueError(f"--head_motion must be between 0 (still heads) and 2, got {head_motion:g}")
    audio_format = audio_format.lower()
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"--audio_format={audio_format!r} is not supported; use one of {', '.join(AUDIO_FORMATS)}")
    created = [p for p in [root, *root.parents] if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"--out={root}: cannot create it ({e.strerror}); pass another --out") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"--out={root} is not writable; pass another --out")
    # Clips are written to a hidden staging folder and moved into place at the end:
    # an error or Ctrl-C leaves --out as it was (no half clip, no clips without manifest).
    stage = root / f".{PROG}.{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    try:
        entries = []
        for i in range(num_clips):
            start = time.perf_counter()
            clip = synthesize_clip(
                seed, i, identities, fps, size, seconds, render=False, head_motion_amount=head_motion
            )
            folder = stage / clip.speaker_id
            folder.mkdir(exist_ok=True)
            stem = f"{clip.speaker_id}/{clip.clip_id}"
            rel = {"video": f"{stem}.mp4", "audio": f"{stem}.{audio_format}", "meta": f"{stem}.json"}
            write_audio(stage / rel["audio"], clip.audio, audio_format)
            with VideoWriter(stage / rel["video"], fps=fps, audio=(clip.audio, clip.sample_rate)) as writer:
                for frames in clip.iter_frames():
                    writer.write(frames)
            _write_json(stage / rel["meta"], clip_metadata(clip, rel))
            entries.append(
                {
                    "clip_id": clip.clip_id,
                    "speaker_id": clip.speaker_id,
                    "identity": clip.identity,
                    "identity_kind": clip.identity_kind,
                    "num_frames": clip.num_frames,
                    **rel,
                }
            )
            if log:
                took = time.perf_counter() - start
                log(f"[{i + 1}/{num_clips}] {root / rel['video']} ({clip.num_frames} frames, {took:.2f} s)")
        manifest = {
            "generator": PROG,
            "seed": seed,
            "num_clips": num_clips,
            "identities": identities,
            "fps": float(fps),
            "width": size[0],
            "height": size[1],
            "seconds": seconds,
            "head_motion": head_motion,
            "sample_rate": SAMPLE_RATE,
            "audio_format": audio_format,
            "layout": "<speaker_id>/<clip_id>.{mp4,<audio_format>,json}; paths relative to this file",
            "clips": entries,
        }
        _write_json(stage / "manifest.json", manifest)
        with _deferred_sigint():
            for entry in entries:
                (root / entry["speaker_id"]).mkdir(exist_ok=True)
                for key in ("audio", "video", "meta"):
                    os.replace(stage / entry[key], root / entry[key])
            os.replace(stage / "manifest.json", root / "manifest.json")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for p in created:  # folders this run made, if nothing else went in
            try:
                p.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}; all options are --flags")
    if not FLAGS.out:
        raise ValueError("--out is required: the directory to write the clips to")
    start = time.perf_counter()
    manifest = generate_dataset(
        FLAGS.out,
        FLAGS.num_clips,
        FLAGS.seed,
        FLAGS.fps,
        parse_size(FLAGS.size),
        FLAGS.seconds,
        FLAGS.audio_format,
        FLAGS.identities,
        log=print,
        head_motion=FLAGS.head_motion,
    )
    n = manifest["num_clips"]
    print(
        f"{PROG}: wrote {n} clip{'s' if n != 1 else ''} to {FLAGS.out} in {time.perf_counter() - start:.1f} s "
        f"(manifest: {os.path.join(FLAGS.out, 'manifest.json')})"
    )


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point ``diff2lip-synth``."""
    from diff2lip_jax.cli import run_app

    define_flags()
    run_app(PROG, _main, argv=argv, doc=__doc__)

"""diff2lip-generate: lip-sync a face video to any audio with a Diff2Lip checkpoint.

Usage:
  diff2lip-generate --checkpoint MODEL --video FACE.mp4 --audio SPEECH.wav --out OUT.mp4
      [--mode cross|reconstruction] [--ddim_steps 25] [--seed 7] [--step N] [--weights ema|raw]
      [--precision auto|float32|bfloat16]
      [--config=configs/diff2lip.py:tiny] [--config.model.X=V]   (model flags of a .pt; default official)
      [--face_detector dlib|s3fd|voxceleb2|box] [--s3fd_weights s3fd.pth]
      [--pads top,bottom,left,right] [--box y1,y2,x1,x2] [--face_index N | --face_hint y1,y2,x1,x2] [--nosmooth]
      [--batch_size 32] [--static] [--fig3_strip STEPS.png] [--paste feather|full|lower] [--side_by_side CMP.mp4]
      [--fps native|25] [--length audio|official] [--overwrite]

MODEL is a model directory (a diff2lip-train workdir or a diff2lip-convert import)
or an official .pt / .safetensors state_dict. The output is an H.264 + AAC mp4 at
the video's frame rate (--fps native; 25 for --static and reconstruction unless
--fps is given), lasting as long as the audio (a shorter video plays back and
forth), with the driving audio at its own sample rate and channels.

The official generate.py's output: --fps 25 --length official --paste full (and its
face crops: --face_detector voxceleb2, its default, or s3fd).

Without --face_detector, faces are found by S3FD when its weights are in the cache
(`diff2lip-weights fetch s3fd`) or can be fetched, else by dlib's offline HOG
detector (a one-line notice says so). An official .pt was trained on S3FD crops:
with another detector than s3fd or voxceleb2 a warning says so.
"""

from __future__ import annotations

import sys

from absl import flags

from diff2lip_jax import cli
from diff2lip_jax.constants import PRECISIONS, WEIGHTS

PROG = "diff2lip-generate"
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command-line flags (defined by `run`, not at import)."""
    from diff2lip_jax.face import DETECTOR_KINDS

    flags.DEFINE_string("checkpoint", None, "model directory (workdir / import output) or official .pt/.safetensors")
    flags.DEFINE_string("video", None, "face video (any container and frame rate), or an image with --static")
    flags.DEFINE_string("audio", None, "speech: any file with sound (wav, mp3, m4a, a video's audio track)")
    flags.DEFINE_string("out", None, "output video (.mp4, .m4v, .mov or .mkv); refused if it exists")
    flags.DEFINE_enum(
        "mode",
        "cross",
        ["cross", "reconstruction"],
        "cross: each frame is its own input and reference; reconstruction: the first frame is",
    )
    flags.DEFINE_integer("ddim_steps", 25, "DDIM sampling steps (respacing ddimN)")
    flags.DEFINE_enum(
        "precision",
        "auto",
        list(PRECISIONS),
        "sampler compute dtype: auto = the model flags' (use_fp16); bfloat16 is about 2x faster on GPUs/TPUs",
    )
    flags.DEFINE_integer("seed", 7, "seed of the one start-noise image shared by every frame")
    flags.DEFINE_integer("step", None, "checkpoint step of a model directory (default: the newest)")
    flags.DEFINE_enum(
        "weights",
        "ema",
        list(WEIGHTS),
        "a training workdir's EMA params, or its raw params (better early in training, while the EMA is "
        "mostly the initialisation)",
    )
    cli.define_config_flag(
        "model flags for a .pt/.safetensors (config.model) and diffusion flags, default the official ones "
        "(e.g. --config=configs/diff2lip.py:tiny); a model directory brings its own model flags",
        lock_config=False,
    )
    flags.DEFINE_enum(
        "face_detector",
        None,
        list(DETECTOR_KINDS),
        "face detector (default: s3fd when its weights are cached or can be fetched, else dlib, the offline "
        "HOG detector; --box implies box)",
    )
    flags.DEFINE_string("s3fd_weights", None, "local copy of the official s3fd.pth (for --face_detector=s3fd)")
    flags.DEFINE_string("pads", "0,0,0,0", "pixels added to detected boxes: top,bottom,left,right")
    flags.DEFINE_list("box", None, "fixed face box y1,y2,x1,x2 in pixels (skips detection)")
    flags.DEFINE_integer("face_index", 0, "with several faces: follow the N-th largest at the start (0 = largest)")
    flags.DEFINE_list("face_hint", None, "with several faces: follow the one nearest this box y1,y2,x1,x2")
    flags.DEFINE_bool("nosmooth", False, "do not smooth face boxes over 5 frames")
    flags.DEFINE_integer("batch_size", 32, "frames per sampler call (rounded up to a multiple of the devices)")
    flags.DEFINE_bool("static", False, "--video is a still image (or use its first frame) for the whole audio")
    flags.DEFINE_string("fig3_strip", None, "also write x_t / x0_pred over the DDIM steps of the first face (.png)")
    flags.DEFINE_integer("fig3_steps", 5, "columns of --fig3_strip")
    flags.DEFINE_enum(
        "paste",
        "feather",
        ["feather", "full", "lower"],
        "feather: the generated lower half blended in with a feathered edge (no seam); "
        "full: the whole generated crop replaces the face box (the official generate.py); lower: only its lower half",
    )
    flags.DEFINE_string(
        "fps",
        "native",
        "output frame rate: native (the video's own; without --fps, --static and reconstruction give 25) "
        "or a rate such as 25 (the video is resampled, as the official tool does)",
    )
    flags.DEFINE_enum(
        "length",
        "audio",
        ["audio", "official"],
        "audio: as long as the audio (round(seconds * fps) frames); official: the official generate.py's count, "
        "min(video frames, frames with a full mel window), for the paper's tables (with --fps 25)",
    )
    flags.DEFINE_string(
        "side_by_side", None, "also write video source | lip-synced | driving clip side by side (.mp4), driving audio"
    )
    flags.DEFINE_bool("overwrite", False, "replace existing --out / --fig3_strip / --side_by_side files")
    flags.DEFINE_bool("progress", True, "progress bars on stderr")
    # `--help` lists the key flags of the module named by argv[0] (the console script).
    for name in (
        "checkpoint",
        "video",
        "audio",
        "out",
        "mode",
        "ddim_steps",
        "precision",
        "seed",
        "step",
        "weights",
        "config",
        "face_detector",
        "s3fd_weights",
        "pads",
        "box",
        "face_index",
        "face_hint",
        "nosmooth",
        "batch_size",
        "static",
        "fig3_strip",
        "fig3_steps",
        "paste",
        "side_by_side",
        "fps",
        "length",
        "overwrite",
        "progress",
    ):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def _config_given() -> bool:
    """Whether --config or a --config.a.b override is on the command line: without them a
    model directory is sampled with the flags it was trained with (its meta), not the
    library default's."""
    return FLAGS["config"].present or any(FLAGS[n].present for n in FLAGS if n.startswith("config."))


def _ints(values: list[str] | None, name: str) -> tuple[int, ...] | None:
    """A y1,y2,x1,x2 flag as ints (None when not given); one-line error otherwise."""
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"{name}={','.join(values)}: expected four integers y1,y2,x1,x2") from None


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; every input is a flag (--video, --audio, ...)")
    missing = [f"--{n}" for n in ("checkpoint", "video", "audio", "out") if not FLAGS[n].value]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}; see --help")
    box = _ints(FLAGS.box, "--box")
    from diff2lip_jax.generate.pipeline import generate

    stats = generate(
        FLAGS.video,
        FLAGS.audio,
        FLAGS.out,
        checkpoint=FLAGS.checkpoint,
        config=FLAGS.config if _config_given() else None,
        step=FLAGS.step,
        weights=FLAGS.weights,
        mode=FLAGS.mode,
        ddim_steps=FLAGS.ddim_steps,
        precision=FLAGS.precision,
        seed=FLAGS.seed,
        face_detector=FLAGS.face_detector,
        pads=FLAGS.pads,
        box=box,
        face_index=FLAGS.face_index,
        face_hint=_ints(FLAGS.face_hint, "--face_hint"),
        nosmooth=FLAGS.nosmooth,
        batch_size=FLAGS.batch_size,
        static=FLAGS.static,
        s3fd_weights=FLAGS.s3fd_weights,
        progress=FLAGS.progress,
        fig3_strip=FLAGS.fig3_strip,
        fig3_steps=FLAGS.fig3_steps,
        paste=FLAGS.paste,
        side_by_side=FLAGS.side_by_side,
        overwrite=FLAGS.overwrite,
        # Without --fps: native for a video, 25 for a still image or reconstruction.
        fps=FLAGS.fps if FLAGS["fps"].present else None,
        length=FLAGS.length,
    )
    print(
        f"wrote {stats['output']}: {stats['num_frames']} frames ({stats['num_frames'] / stats['fps']:.2f} s at "
        f"{stats['fps']:.4g} fps; audio {stats['audio_sample_rate']} Hz, {stats['audio_channels']} ch), "
        f"{stats['faces']} lip-synced, {stats['passthrough']} without a face; "
        f"{stats['frames_per_second']:.2f} frames/s on {stats['devices']} device(s)"
        + (f"; Fig. 3 strip -> {stats['fig3']['path']}" if "fig3" in stats else "")
        + (f"; side by side -> {stats['side_by_side']}" if "side_by_side" in stats else "")
    )


def run() -> None:
    """Console script `diff2lip-generate`."""
    define_flags()
    cli.run_app(PROG, _main, doc=__doc__)

"""diff2lip-evaluate: metrics over a filelist of generated vs. source videos -> JSON + Markdown table.

Usage:
  diff2lip-evaluate --filelist F --generated_dir G --source_dir S --mode reconstruction|cross
      [--out results.json] [--table results.md] [--on crops|full] [--face_detector dlib|s3fd|voxceleb2|box]
      [--syncnet DIR_OR_FILE --syncnet_kind ours|wav2lip|syncnet_python|module:factory]
      [--inception_weights pt_inception-2015-12-05-6726825d.pth] [--landmarks module:factory]
      [--metrics psnr,ssim,fid,lmd,lse,mouth] [--max_pairs N] [--nobaselines]
  diff2lip-evaluate --table_from a.json,b.json [--table out.md]      (table of earlier runs only)

Filelist lines are ``audio_source video_source`` (relative, no extension); the
generated video of a line is ``G/<audio_source>_<video_source>.mp4`` with "/"
replaced by "." (the official generate_dist.py naming); sources are
``S/<path>.mp4`` (``--source_ext``). Reconstruction: PSNR, SSIM, FID, LMD, LSE
against the source video; cross: FID and LSE. Each metric runs when its network
is given (FID: ``--inception_weights``; LSE: ``--syncnet``; LMD: dlib's 68-point
model of the ``landmarks`` extra, or ``--landmarks=module:factory``) and is
otherwise reported as not computed, with the reason; naming a metric in
``--metrics`` makes its network mandatory. Source faces are found by S3FD when
its weights are cached or can be fetched, else by dlib's offline HOG detector
(``--face_detector`` to choose). Mouth r (synthetic clips only) needs
the ``<clip>.json`` ground truth that diff2lip-synth writes beside each source.

Baselines (default on; ``--nobaselines`` to skip): LSE and mouth r of two rows
scored from the sources alone, "real (audio source)" -- the audio source's own
video and sound, the ceiling -- and, in cross mode, "unsynced (video source +
driving audio)" -- the untouched video source with the driving audio, the floor.
A lip-sync method's LSE-C/D read between the two. Missing generated files are
counted, not fatal. See diff2lip_jax/evaluate/run.py for what each metric is
computed on.

The paper's protocol (Table 2): generate with the official frame count and rate,
``diff2lip-generate --length official --fps 25 --paste full`` (the official crops:
``--face_detector voxceleb2`` or ``s3fd``): min(video frames, frames with a full mel
window), 1 s of audio -> 22 frames. The defaults (``--length audio``: as long as the
audio; the video's own fps; the feathered paste) are for users, not for the tables.
Frames are decoded at 25 fps here, so outputs at another rate are resampled.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

from absl import flags

from diff2lip_jax import weights
from diff2lip_jax.evaluate import fid as fid_lib
from diff2lip_jax.evaluate import mouth as mouth_lib
from diff2lip_jax.evaluate import run as run_lib

PROG = "diff2lip-evaluate"
FLAGS = flags.FLAGS
_NAMES = (
    "filelist",
    "generated_dir",
    "source_dir",
    "mode",
    "out",
    "table",
    "on",
    "face_detector",
    "s3fd_weights",
    "box",
    "pads",
    "syncnet",
    "syncnet_kind",
    "vshift",
    "inception_weights",
    "fid_weights",
    "fid_method",
    "fid_frame_stride",
    "fid_batch_size",
    "landmarks",
    "lmd_center",
    "metrics",
    "max_pairs",
    "source_ext",
    "dataset",
    "method",
    "table_from",
    "overwrite",
    "baselines",
)


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines the flags (idempotent; called by :func:`run`, not at import)."""
    if "generated_dir" in fv:
        return
    from diff2lip_jax.evaluate.metrics import FID_METHODS
    from diff2lip_jax.face import DETECTOR_KINDS

    kw = dict(flag_values=fv)
    flags.DEFINE_string("filelist", None, "pairs 'audio_source video_source' per line (relative, no extension)", **kw)
    flags.DEFINE_string("generated_dir", None, "folder of generated videos <audio>_<video>.mp4 ('/' -> '.')", **kw)
    flags.DEFINE_string("source_dir", None, "dataset root holding <path>.<source_ext> source videos", **kw)
    flags.DEFINE_enum("mode", None, list(run_lib.MODES), "reconstruction (own audio) or cross (other audio)", **kw)
    flags.DEFINE_string("out", None, "JSON results (default <generated_dir>/evaluation_<mode>.json)", **kw)
    flags.DEFINE_string("table", None, "Markdown table (default: the --out path with .md)", **kw)
    flags.DEFINE_enum("on", "crops", list(run_lib.ON), "PSNR/SSIM/FID on 128 px face crops or full frames", **kw)
    flags.DEFINE_enum(
        "face_detector",
        None,
        list(DETECTOR_KINDS),
        "face boxes of the source videos (default: s3fd when its weights are cached or can be fetched, else dlib)",
        **kw,
    )
    flags.DEFINE_string("s3fd_weights", None, "local s3fd.pth for --face_detector=s3fd", **kw)
    flags.DEFINE_string("box", None, "fixed box y1,y2,x1,x2 for --face_detector=box", **kw)
    flags.DEFINE_string("pads", "0,0,0,0", "box padding top,bottom,left,right (as generation)", **kw)
    flags.DEFINE_string("syncnet", None, "LSE scorer weights: workdir (ours) or .pth/.model file", **kw)
    flags.DEFINE_string("syncnet_kind", "ours", "ours | wav2lip | syncnet_python | module:factory", **kw)
    flags.DEFINE_integer("vshift", 15, "LSE: largest AV shift searched, frames", **kw)
    flags.DEFINE_string("inception_weights", None, f"FID: local {fid_lib.FID_WEIGHTS_FILE}", **kw)
    flags.DEFINE_string("fid_weights", None, "'random': FID with random Inception weights (tests only)", **kw)
    flags.DEFINE_enum("fid_method", "sqrtm", list(FID_METHODS), "sqrtm (pytorch-fid) or spectral (faster)", **kw)
    flags.DEFINE_integer("fid_frame_stride", 1, "FID: use every k-th frame", **kw)
    flags.DEFINE_integer("fid_batch_size", 16, "FID: frames per Inception batch", **kw)
    flags.DEFINE_string(
        "landmarks", None, "LMD landmark model plug-in module:factory (default: dlib's, with the landmarks extra)", **kw
    )
    flags.DEFINE_bool("lmd_center", False, "LMD: remove each mouth's centroid first", **kw)
    flags.DEFINE_list("metrics", None, f"subset of {','.join(run_lib.METRICS)} (default: all available)", **kw)
    flags.DEFINE_integer("max_pairs", None, "evaluate only the first N pairs", **kw)
    flags.DEFINE_string("source_ext", "mp4", "extension of the source files", **kw)
    flags.DEFINE_string("dataset", None, "dataset label for the table (default: from the filelist name)", **kw)
    flags.DEFINE_string("method", "diff2lip-jax", "method label (table row)", **kw)
    flags.DEFINE_list("table_from", None, "only render a table from these result JSON files", **kw)
    flags.DEFINE_bool("overwrite", False, "replace an existing --out / --table (refused otherwise)", **kw)
    flags.DEFINE_bool(
        "baselines", True, "also score the sources: real (audio source) and, in cross, unsynced rows", **kw
    )
    for name in _NAMES:
        fv.register_key_flag_for_module(sys.argv[0], fv[name])


def _fid_missing_reason() -> str:
    return (
        f"needs --inception_weights=<path to {fid_lib.FID_WEIGHTS_FILE}>, the FID Inception weights "
        f"(`diff2lip-weights fetch fid_inception` puts them in the cache, where they are found; or download "
        f"{fid_lib.FID_WEIGHTS_URL})"
    )


_LSE_MISSING = (
    "needs --syncnet: a diff2lip-train-syncnet workdir (--syncnet_kind=ours), Wav2Lip's "
    "lipsync_expert.pth (--syncnet_kind=wav2lip) or syncnet_python's syncnet_v2.model "
    "(--syncnet_kind=syncnet_python)"
)


def _table_only() -> None:
    results = []
    for path in FLAGS.table_from:
        p = pathlib.Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--table_from: {p}: no such file")
        try:
            r = json.loads(p.read_text())
            if not isinstance(r, dict) or "metrics" not in r or r.get("mode") not in run_lib.MODES:
                raise ValueError
        except ValueError:
            raise ValueError(f"--table_from: {p} is not a {PROG} results JSON") from None
        results.append(r)
    table = run_lib.render_table(results)
    if FLAGS.table:
        path = pathlib.Path(FLAGS.table)
        _check_writable(path, "table")
        _write_text(path, table)
    print(table, end="")


def _check_writable(path: pathlib.Path, flag: str) -> None:
    """Refuses, before any work, an output that exists (without --overwrite) or cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"--{flag}={path} is a directory; pass a file path such as {path / 'results.json'}")
    if path.exists() and not FLAGS.overwrite:
        raise FileExistsError(f"--{flag}={path} exists; pass another --{flag}, or --overwrite to replace it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"--{flag}={path}: {parent} is a file, not a directory; pass another --{flag}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"--{flag}={path}: {parent} is not writable; pass another --{flag}")


def _write_text(path: pathlib.Path, text: str) -> None:
    """Writes `text` atomically (temp name + rename; no temp file left on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _no_pair_evaluated(results: dict[str, Any]) -> str:
    """The one-line reason when no pair could be evaluated, naming the argument to fix."""
    n = results["num_pairs"]
    records = results["pairs"]
    if results["num_missing"] == n:
        example = pathlib.Path(FLAGS.generated_dir) / records[0]["generated"]
        return (
            f"--generated_dir={FLAGS.generated_dir}: none of the {n} generated videos of --filelist exists "
            f"(e.g. {example}); check --generated_dir and --filelist"
        )
    failed = [r for r in records if r["status"] == "failed"]
    sdir = pathlib.Path(FLAGS.source_dir)
    no_source = [
        r
        for r in failed
        if not (sdir / f"{r['video_source']}.{FLAGS.source_ext}").is_file()
        or not (sdir / f"{r['audio_source']}.{FLAGS.source_ext}").is_file()
    ]
    if failed and len(no_source) == len(failed):
        r = no_source[0]
        example = sdir / f"{r['video_source']}.{FLAGS.source_ext}"
        return (
            f"--source_dir={FLAGS.source_dir}: no source video found for the {len(failed)} pairs with a generated "
            f"video (e.g. {example}); check --source_dir and --source_ext"
        )
    first = failed[0].get("error", "") if failed else ""
    return f"none of the {n} pairs of --filelist could be evaluated (first failure: {first})"


def _setup(pairs: list[run_lib.Pair]) -> dict[str, Any]:
    """Validates the flags and builds detector and networks (ValueError/FileNotFoundError = user error)."""
    for name in ("filelist", "generated_dir", "source_dir", "mode"):
        if not FLAGS[name].value:
            raise ValueError(f"--{name} is required (see --help)")
    for name in ("generated_dir", "source_dir"):
        path = pathlib.Path(FLAGS[name].value)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"--{name}={FLAGS[name].value} is a file; pass the folder holding the videos")
        if not path.is_dir():
            raise FileNotFoundError(f"--{name}={FLAGS[name].value}: no such directory")
    if FLAGS.max_pairs is not None and FLAGS.max_pairs < 1:
        raise ValueError(f"--max_pairs must be >= 1, got {FLAGS.max_pairs}")
    for name in ("fid_frame_stride", "fid_batch_size", "vshift"):
        if FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    explicit = FLAGS.metrics is not None
    wanted = list(FLAGS.metrics or run_lib.METRICS)
    for m in wanted:
        if m not in run_lib.METRICS:
            raise ValueError(f"--metrics: unknown metric {m!r}; choose from {','.join(run_lib.METRICS)}")
        if explicit and m not in run_lib.MODE_METRICS[FLAGS.mode]:
            raise ValueError(f"--metrics={m}: {run_lib.NO_GROUND_TRUTH}")
    if FLAGS.fid_weights not in (None, "", "random"):
        raise ValueError(
            f"--fid_weights={FLAGS.fid_weights!r}: only 'random' (tests); real weights go in --inception_weights"
        )
    if FLAGS.fid_weights == "random" and FLAGS.inception_weights:
        raise ValueError("pass --inception_weights or --fid_weights=random, not both")

    from diff2lip_jax.face import default_detector_kind, make_detector, parse_pads

    try:
        box = [int(v) for v in FLAGS.box.split(",")] if FLAGS.box else None
    except ValueError:
        box = []
    if box is not None and len(box) != 4:
        raise ValueError(f"--box={FLAGS.box!r}: expected four integers y1,y2,x1,x2")
    pads = parse_pads(FLAGS.pads)
    kind, detector_notice = FLAGS.face_detector, None
    if kind is None:  # the default policy; its notice is printed once every input is valid
        kind, detector_notice = ("s3fd", None) if FLAGS.s3fd_weights else default_detector_kind()
    detector = make_detector(kind, weights_path=FLAGS.s3fd_weights, box=box)
    not_computed: dict[str, str] = {}
    mode_metrics = [m for m in wanted if m in run_lib.MODE_METRICS[FLAGS.mode]]

    inception, inception_source = None, FLAGS.inception_weights
    cached_inception = weights.path("fid_inception")
    if "fid" in mode_metrics:
        if FLAGS.inception_weights:
            inception = fid_lib.InceptionFeatures.from_weights(FLAGS.inception_weights, FLAGS.fid_batch_size)
        elif FLAGS.fid_weights != "random" and cached_inception.is_file():  # `diff2lip-weights fetch fid_inception`
            inception_source = str(cached_inception)
            inception = fid_lib.InceptionFeatures.from_weights(inception_source, FLAGS.fid_batch_size)
        elif FLAGS.fid_weights == "random":
            inception = fid_lib.InceptionFeatures.from_weights("random", FLAGS.fid_batch_size)
        elif explicit:
            raise ValueError(f"cannot compute FID: it {_fid_missing_reason()}")
        else:
            not_computed["fid"] = _fid_missing_reason()

    scorer = None
    if "lse" in mode_metrics:
        from diff2lip_jax.evaluate.lse import make_scorer

        if FLAGS.syncnet or ":" in FLAGS.syncnet_kind:
            scorer = make_scorer(FLAGS.syncnet_kind, FLAGS.syncnet)
        elif explicit:
            raise ValueError(f"cannot compute LSE: it {_LSE_MISSING}")
        else:
            not_computed["lse"] = _LSE_MISSING

    landmarks, landmarks_source = None, None
    if "lmd" in mode_metrics:
        from diff2lip_jax.evaluate import lmd as lmd_lib

        landmarks, landmarks_source = lmd_lib.choose_landmark_model(FLAGS.landmarks)
        if landmarks is None and explicit:
            raise ValueError(f"cannot compute LMD: it {lmd_lib.MISSING_REASON}")
        if landmarks is None:
            not_computed["lmd"] = lmd_lib.MISSING_REASON
    if "mouth" in mode_metrics and not run_lib.has_mouth_truth(pairs, FLAGS.source_dir, FLAGS.source_ext):
        if explicit:
            raise ValueError(f"--metrics=mouth: {mouth_lib.NO_TRUTH}; no pair of --filelist has one under --source_dir")
        not_computed["mouth"] = mouth_lib.NO_TRUTH
    return dict(
        detector=detector,
        detector_kind=kind,
        detector_notice=detector_notice,
        landmarks_source=landmarks_source,
        pads=pads,
        inception=inception,
        inception_source=inception_source,
        scorer=scorer,
        landmarks=landmarks,
        not_computed=not_computed,
        wanted=wanted,
    )


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {' '.join(argv[1:])}; all options are --flags")
    if FLAGS.table_from:
        _table_only()
        return
    if not FLAGS.filelist:
        raise ValueError("--filelist is required (see --help)")
    pairs = run_lib.read_filelist(FLAGS.filelist)
    for name in ("generated_dir", "mode"):
        if not FLAGS[name].value:
            raise ValueError(f"--{name} is required (see --help)")
    out = pathlib.Path(FLAGS.out or pathlib.Path(FLAGS.generated_dir) / f"evaluation_{FLAGS.mode}.json")
    table_path = pathlib.Path(FLAGS.table) if FLAGS.table else out.with_suffix(".md")
    if out.suffix == ".md" and not FLAGS.table:
        raise ValueError(f"--out={out} ends in .md, the table's name; pass a .json --out (or --table)")
    if out.absolute() == table_path.absolute():
        raise ValueError(f"--out and --table are the same file {out}; pass different paths")
    _check_writable(out, "out" if FLAGS.out else "out (default)")
    _check_writable(table_path, "table" if FLAGS.table else "table (default: --out with .md)")
    if FLAGS.max_pairs:
        pairs = pairs[: FLAGS.max_pairs]
    setup = _setup(pairs)
    # Only now, when every input is valid: a user error stays the one line on stderr.
    if setup["inception"] is not None and FLAGS.fid_weights == "random":
        print(
            f"{PROG}: warning: FID uses RANDOM Inception weights (--fid_weights=random, for tests); "
            "its values are meaningless",
            file=sys.stderr,
        )
    if setup["detector_notice"]:
        print(f"{PROG}: note: {setup['detector_notice']}", file=sys.stderr)
    for m, why in setup["not_computed"].items():
        print(f"{PROG}: note: {m.upper()} not computed: {why}", file=sys.stderr)
    settings = {
        "filelist": FLAGS.filelist,
        "generated_dir": FLAGS.generated_dir,
        "source_dir": FLAGS.source_dir,
        "face_detector": setup["detector_kind"],
        "pads": FLAGS.pads,
        "crop_size": run_lib.CROP_SIZE,
        "syncnet_kind": FLAGS.syncnet_kind if setup["scorer"] is not None else None,
        "syncnet": FLAGS.syncnet,
        "inception_weights": setup["inception_source"] or FLAGS.fid_weights,
        "fid_frame_stride": FLAGS.fid_frame_stride,
        "landmarks": setup["landmarks_source"],
        "lmd_center": FLAGS.lmd_center,
    }
    results = run_lib.evaluate_pairs(
        pairs,
        FLAGS.generated_dir,
        FLAGS.source_dir,
        FLAGS.mode,
        setup["detector"],
        pads=setup["pads"],
        metrics_wanted=setup["wanted"],
        inception=setup["inception"],
        scorer=setup["scorer"],
        landmarks=setup["landmarks"],
        on=FLAGS.on,
        source_ext=FLAGS.source_ext,
        fid_frame_stride=FLAGS.fid_frame_stride,
        fid_method=FLAGS.fid_method,
        vshift=FLAGS.vshift,
        lmd_center=FLAGS.lmd_center,
        baselines=FLAGS.baselines,
        not_computed=setup["not_computed"],
        dataset=FLAGS.dataset or run_lib.dataset_name(FLAGS.filelist),
        method=FLAGS.method,
        settings=settings,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if results["num_evaluated"] == 0:
        raise ValueError(_no_pair_evaluated(results))
    table = run_lib.render_table([run_lib.json_safe(results)])
    run_lib.write_json(out, results)
    try:
        _write_text(table_path, table)
    except BaseException:
        out.unlink(missing_ok=True)  # both outputs or neither
        raise
    print(table, end="")
    print(
        f"{PROG}: {results['num_evaluated']}/{results['num_pairs']} pairs evaluated "
        f"({results['num_missing']} missing, {results['num_failed']} failed); wrote {out} and {table_path}"
    )


def run(argv: list[str] | None = None) -> None:
    """Console script ``diff2lip-evaluate``."""
    from diff2lip_jax.cli import run_app

    define_flags()
    run_app(PROG, _main, argv=argv, doc=__doc__)


if __name__ == "__main__":
    run()

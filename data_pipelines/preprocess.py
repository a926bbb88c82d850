"""diff2lip-preprocess: videos -> 25 fps face crops + mels -> an ArrayRecord (TFDS) dataset.

Usage: diff2lip-preprocess --input DIR|GLOB|FILELIST|VIDEO --out DIR [--builder local_videos|voxceleb2|lrw]
                           [--face_detector dlib|s3fd|voxceleb2|box] [--num_workers N] ...

Output (``--out``)::

    OUT/<dataset_name>/1.0.0/       the TFDS dataset: dataset_info.json, features.json,
                                    <name>-<split>.array_record-XXXXX-of-YYYYY
    OUT/cache/<clip_id>.npz         per-clip results (what makes a re-run resumable)
    OUT/cache/<clip_id>.failed.json per-clip failure markers
    OUT/failures.jsonl              the clips that failed (now or in an earlier run, unless
                                    retried): {"clip_id", "source", "reason"}
    OUT/report.json, OUT/report.md  the quality report: clips and segments in and out, every
                                    drop with its reason, offsets, sync confidences

Filters (see the README, "Preparing in-the-wild data"): clips are cut at shot
boundaries (PySceneDetect, --shot_threshold) into segments of at least
--min_segment_seconds, each a record; per segment the audio-visual offset and sync
confidence (syncnet_python protocol, --sync_scorer) correct the audio
(--max_av_offset) and drop out-of-sync segments (--min_sync_confidence).

Clips are processed in ``--num_workers`` processes; a re-run skips clips already
done (and, unless ``--retry_failed``, those that failed) and rebuilds the dataset
from all results. A failing clip (unreadable file, no audio, too short, no face)
is reported and the run goes on. Read the dataset with
``diff2lip_jax.data.make_train_loader(OUT, "train", ...)``.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shlex
import sys
import time

from absl import flags

PROG = "diff2lip-preprocess"
FLAGS = flags.FLAGS
_KEY_FLAGS = (
    "input",
    "out",
    "builder",
    "dataset_name",
    "face_detector",
    "s3fd_weights",
    "box",
    "pads",
    "smooth",
    "jpeg_quality",
    "image_size",
    "num_workers",
    "min_frames",
    "min_face_rate",
    "split",
    "val_fraction",
    "test_fraction",
    "first_utterance_only",
    "retry_failed",
    "overwrite",
    "beam_options",
)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the CLI flags (idempotent; called by :func:`run`, not at import)."""
    if "face_detector" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "input",
        None,
        "Videos: a folder (searched recursively), a glob, a filelist (one path per "
        "line) or one video; for --builder voxceleb2/lrw the download's root folder.",
        **fv,
    )
    flags.DEFINE_string("out", None, "Output folder (created; must not be a file).", **fv)
    flags.DEFINE_enum(
        "builder",
        "local_videos",
        ["local_videos", "voxceleb2", "lrw"],
        "Input layout: any videos (speaker = parent folder), VoxCeleb2 (dev/mp4, test/mp4) or "
        "LRW (lipread_mp4/<WORD>/<split>).",
        **fv,
    )
    flags.DEFINE_string("dataset_name", None, "Dataset name (folder under --out); default: the builder's name.", **fv)
    flags.DEFINE_enum(
        "face_detector",
        None,
        ["dlib", "s3fd", "voxceleb2", "box"],
        "dlib: offline HOG detector (boxes mapped to S3FD's; landmark-refined with the landmarks extra); "
        "s3fd: the official detector (--s3fd_weights); voxceleb2: the official fixed crop; box: a fixed "
        "--box. Default: s3fd when its weights are cached or can be fetched, else dlib.",
        **fv,
    )
    flags.DEFINE_string(
        "s3fd_weights", None, "Local copy of the official s3fd.pth (default: the weights cache's, fetched).", **fv
    )
    flags.DEFINE_string("box", None, "Fixed face box 'y1,y2,x1,x2' in pixels (for --face_detector=box).", **fv)
    flags.DEFINE_string("pads", "0,0,0,0", "Pixels added to detected boxes: 'top,bottom,left,right'.", **fv)
    flags.DEFINE_boolean("smooth", True, "Smooth boxes over 5 frames, as the official code (--nosmooth: off).", **fv)
    flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of the stored crops, 1-100.", **fv)
    flags.DEFINE_integer("image_size", 128, "Side of the stored face crops in pixels.", **fv)
    flags.DEFINE_integer(
        "num_workers",
        os.cpu_count() or 1,
        "Processes over clips (0: in this process). With --face_detector=s3fd on one GPU use 1.",
        **fv,
    )
    flags.DEFINE_integer("min_frames", 10, "Clips with fewer frames at 25 fps fail (at least 7).", **fv)
    flags.DEFINE_float(
        "min_face_rate",
        0.95,
        "Clips where the detector finds a face in fewer than this fraction "
        "of frames fail (official Wav2Lip: 1.0); not checked for fixed crops.",
        **fv,
    )
    flags.DEFINE_enum(
        "split",
        "auto",
        ["auto", "train", "val", "test"],
        "auto: official splits, else speakers "
        "held out by --val_fraction/--test_fraction; or put every clip in one split.",
        **fv,
    )
    flags.DEFINE_float("val_fraction", 0.05, "Fraction of speakers (without an official split) held out for val.", **fv)
    flags.DEFINE_float(
        "test_fraction", 0.0, "Fraction of speakers (without an official split) held out for test.", **fv
    )
    flags.DEFINE_boolean(
        "first_utterance_only",
        True,
        "VoxCeleb2: only the first utterance of each video (the paper's training set).",
        **fv,
    )
    flags.DEFINE_boolean("retry_failed", False, "Retry clips that failed in an earlier run.", **fv)
    flags.DEFINE_boolean(
        "overwrite",
        False,
        "Replace a dataset in --out that holds clips this --input does not give (refused otherwise; "
        "a re-run over the same --input resumes without it).",
        **fv,
    )
    flags.DEFINE_string(
        "beam_options",
        None,
        "Process clips with Apache Beam instead of --num_workers, e.g. "
        "'--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp' "
        "(needs apache-beam; no per-clip cache, failures are logged).",
        **fv,
    )
    from data_pipelines.quality import flags as quality_flags

    quality_flags.define_flags(flag_values)
    for name in (*_KEY_FLAGS, *quality_flags.KEY_FLAGS):  # `--help` lists the key flags of the module named by argv[0]
        flag_values.register_key_flag_for_module(sys.argv[0], flag_values[name])


def _ints(text: str, flag: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"--{flag}={text!r} must be 4 comma-separated integers")
    return values  # type: ignore[return-value]


def _options():
    """(ProcessOptions from the flags (validated, nothing written), the default detector
    policy's one-line notice or None, the sync filter's status line)."""
    from data_pipelines.builders import ProcessOptions
    from data_pipelines.quality.flags import filter_options

    if not 1 <= FLAGS.jpeg_quality <= 100:
        raise ValueError(f"--jpeg_quality must be 1-100, got {FLAGS.jpeg_quality}")
    if not 16 <= FLAGS.image_size <= 1024:
        raise ValueError(f"--image_size must be 16-1024, got {FLAGS.image_size}")
    if not 0.0 <= FLAGS.min_face_rate <= 1.0:
        raise ValueError(f"--min_face_rate must be in [0, 1], got {FLAGS.min_face_rate}")
    if FLAGS.min_frames < 7:
        raise ValueError(
            f"--min_frames must be >= 7 (a 5-frame window after frame 0, plus a reference), got {FLAGS.min_frames}"
        )
    if FLAGS.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {FLAGS.num_workers}")
    filters, sync_status = filter_options(FLAGS)  # before the detector policy may fetch weights
    box = _ints(FLAGS.box, "box") if FLAGS.box else None
    if FLAGS.face_detector == "box" and box is None:
        raise ValueError("--face_detector=box needs --box=y1,y2,x1,x2")
    weights = FLAGS.s3fd_weights
    kind, notice = FLAGS.face_detector, None
    if kind is None and box is not None:
        kind = "box"
    elif kind is None and weights:
        kind = "s3fd"
    elif kind is None:  # the default policy, once here (not once per worker)
        from diff2lip_jax import face
        from diff2lip_jax import weights as weights_lib

        kind, notice = face.default_detector_kind()
        if kind == "s3fd":
            weights = str(weights_lib.path("s3fd"))  # there now: fetched by the policy
    if kind == "s3fd":
        if not weights:  # the weights cache's copy, fetched on first use (one line offline)
            from diff2lip_jax import weights as weights_lib

            try:
                weights = str(weights_lib.fetch("s3fd"))
            except weights_lib.WeightsError as e:
                raise ValueError(f"--face_detector=s3fd without --s3fd_weights: {e}") from None
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"--s3fd_weights={weights}: no such file")
        weights = os.path.abspath(weights)
    return (
        ProcessOptions(
            face_detector=kind,
            s3fd_weights=weights,
            box=box,
            pads=_ints(FLAGS.pads, "pads"),
            smooth=FLAGS.smooth,
            jpeg_quality=FLAGS.jpeg_quality,
            image_size=FLAGS.image_size,
            min_frames=FLAGS.min_frames,
            min_face_rate=FLAGS.min_face_rate,
            **filters,
        ),
        notice,
        sync_status,
    )


def _write_failures(out: pathlib.Path, failed: list) -> pathlib.Path:
    path = out / "failures.jsonl"
    lines = "".join(
        json.dumps({"clip_id": r.source.clip_id, "source": r.source.path, "reason": r.reason}) + "\n" for r in failed
    )
    tmp = out / f".failures.jsonl.{secrets.token_hex(4)}.tmp"
    tmp.write_text(lines)
    os.replace(tmp, path)
    return path


def _existing_datasets(out: pathlib.Path) -> dict[str, dict[str, int]]:
    """The prepared datasets in ``out``: ``{"<name>/<version>": {split: clips}}``."""
    found = {}
    for info in sorted(out.glob("*/*/dataset_info.json")):
        try:
            splits = json.loads(info.read_text()).get("splits", [])
            found[f"{info.parent.parent.name}/{info.parent.name}"] = {
                s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in splits
            }
        except (OSError, ValueError, KeyError, TypeError):
            found[f"{info.parent.parent.name}/{info.parent.name}"] = {}
    return found


def _cached_sources(cache: pathlib.Path) -> dict[str, str]:
    """clip_id -> source path of every per-clip result in the cache."""
    import numpy as np

    found: dict[str, str] = {}
    if not cache.is_dir():
        return found
    for path in cache.rglob("*"):
        name = path.name
        if name.startswith(".") or "tfds_downloads" in path.parts or "beam" in path.relative_to(cache).parts[:1]:
            continue
        try:
            if name.endswith(".npz"):
                clip_id = path.relative_to(cache).as_posix()[: -len(".npz")]
                with np.load(path, allow_pickle=False) as z:
                    found[clip_id] = json.loads(str(z["meta"])).get("source", "")
            elif name.endswith(".failed.json"):
                clip_id = path.relative_to(cache).as_posix()[: -len(".failed.json")]
                found[clip_id] = json.loads(path.read_text()).get("source", "")
        except (OSError, ValueError, KeyError):
            found.setdefault(clip_id, "")  # damaged: it still was a clip of the dataset
    return found


def _check_out(out: pathlib.Path, sources: list) -> list[str]:
    """Refuses to replace a dataset made from other clips (unless --overwrite).

    A re-run over the same input resumes (the per-clip cache); an --input that
    lacks clips of the dataset already in --out, or gives other videos under the
    same clip ids, would silently drop or replace them. Returns the cached clip
    ids this run does not use (removed after a successful --overwrite).
    """
    datasets = _existing_datasets(out)
    cached = _cached_sources(out / "cache")
    current = {s.clip_id: s.path for s in sources}
    foreign = sorted(k for k, path in cached.items() if k not in current or (path and path != current[k]))
    if datasets and foreign and not FLAGS.overwrite:
        n = sum(sum(splits.values()) for splits in datasets.values())
        what = "; ".join(
            f"{name}: {' '.join(f'{k}={v}' for k, v in sorted(splits.items()))}" for name, splits in datasets.items()
        )
        raise FileExistsError(
            f"--out={FLAGS.out} holds a dataset of {n} clips ({what}) with {len(foreign)} clips that "
            f"--input={FLAGS.input} does not give (e.g. {foreign[0]}); use a new --out, or --overwrite to replace it"
        )
    return [k for k in foreign if k not in current]


def _remove_cached(cache: pathlib.Path, clip_ids: list[str]) -> None:
    from data_pipelines.builders.process import cache_paths

    for clip_id in clip_ids:
        for path in cache_paths(os.fspath(cache), clip_id):
            path.unlink(missing_ok=True)


def _write_quality_report(out: pathlib.Path, builder, sync_status: str) -> str:
    """Writes OUT/report.json and report.md from the run's outcomes; returns a summary phrase."""
    from data_pipelines.quality import report as quality

    rep = quality.build_report(builder.outcomes(), sync_status)
    js, _ = quality.write_report(out, rep)
    counts = ", ".join(f"{k} {v}" for k, v in rep["counts"].items()) or "none"
    seg = rep["segments"]
    return f"segments {seg['out']} of {seg['in']} kept (drops: {counts}; {js})"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}; all options are --flags")
    if not FLAGS.input:
        raise ValueError("--input is required: a video folder, glob, filelist or dataset root")
    if not FLAGS.out:
        raise ValueError("--out is required: the folder to write the dataset to")
    out = pathlib.Path(FLAGS.out).absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out={FLAGS.out} exists and is not a directory; pass a directory path")
    options, notice, sync_status = _options()

    # Heavy imports only now: `--help` and flag errors stay fast.
    import tensorflow_datasets as tfds

    from data_pipelines.builders import make_builder

    kwargs = dict(first_utterance_only=FLAGS.first_utterance_only) if FLAGS.builder == "voxceleb2" else {}
    builder = make_builder(
        FLAGS.builder,
        FLAGS.dataset_name,
        data_dir=os.fspath(out),
        source=FLAGS.input,
        options=options,
        cache_dir=os.fspath(out / "cache"),
        num_workers=FLAGS.num_workers,
        split=FLAGS.split,
        val_fraction=FLAGS.val_fraction,
        test_fraction=FLAGS.test_fraction,
        retry_failed=FLAGS.retry_failed,
        log=lambda msg: print(msg, flush=True),
        beam=FLAGS.beam_options is not None,
        **kwargs,
    )
    sources = builder.sources()  # input errors surface here, before anything is written
    stale = _check_out(out, sources)
    if notice:  # the inputs are valid: a user error above stays one line
        print(f"{PROG}: note: {notice}", file=sys.stderr, flush=True)
    config = dict(download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
    if FLAGS.beam_options is not None:
        beam = tfds.core.lazy_imports.apache_beam
        config["beam_options"] = beam.options.pipeline_options.PipelineOptions(shlex.split(FLAGS.beam_options))
    tfds.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    print(f"{PROG}: {sync_status}", flush=True)
    start = time.perf_counter()
    try:
        builder.download_and_prepare(
            download_dir=os.fspath(out / "cache" / "tfds_downloads"),
            download_config=tfds.download.DownloadConfig(**config),
        )
    finally:
        result = builder.run_result
        report = _write_failures(out, result.failed) if result is not None else None
    quality = _write_quality_report(out, builder, sync_status)
    _remove_cached(out / "cache", stale)  # --overwrite: the replaced dataset's clips
    dataset = pathlib.Path(os.fspath(builder.data_dir))
    splits = " ".join(f"{k}={v.num_examples}" for k, v in sorted(builder.info.splits.items()))
    if result is None:  # Beam: the pipeline reports per-clip outcomes in its logs and counters
        print(
            f"{PROG}: {len(sources)} clips through Beam in {time.perf_counter() - start:.0f} s; "
            f"splits {splits}; {quality}; dataset {dataset}"
        )
        return
    ok = result.ok
    frames, nbytes = sum(r.num_frames for r in ok), sum(r.num_bytes for r in ok)
    stored = sum(f.stat().st_size for f in dataset.glob("*.array_record-*"))
    raw = options.image_size**2 * 3
    new = result.count("new", "failed")
    rate = f"{new / result.seconds:.2f} clips/s" if new else "nothing new to process"
    failed = f"{len(result.failed)} failed (reasons in {report})" if result.failed else "0 failed"
    print(
        f"{PROG}: {len(ok)} clips ok ({result.count('new')} new, {result.count('cached')} reused), {failed}; "
        f"{frames} frames, {_size(nbytes)} of JPEG + mel ({_size(nbytes / max(frames, 1))}/frame vs "
        f"{_size(raw)} raw), {_size(stored)} stored; splits {splits}; {rate}; {quality}; dataset {dataset}"
    )


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point ``diff2lip-preprocess``."""
    from diff2lip_jax.cli import run_app

    define_flags()
    run_app(PROG, _main, argv=argv, doc=__doc__)


if __name__ == "__main__":
    run()

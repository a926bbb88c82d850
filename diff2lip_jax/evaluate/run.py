"""Filelist evaluation: generated vs. source videos -> per-pair and aggregate metrics.

Filelists are the paper's: one pair per line, ``audio_source video_source``,
paths relative to the dataset root without extension (blank lines and ``#``
comments are skipped). Files:

* source video: ``<source_dir>/<video_source>.<source_ext>`` (mp4 by default);
  the audio source ``<source_dir>/<audio_source>.<source_ext>``.
* generated video: ``<generated_dir>/<audio_source with / -> .>_<video_source
  with / -> .>.mp4`` -- the naming of the official ``generate_dist.py
  --generate_from_filelist`` (e.g. ``id00017.01dfn2spqyE.00001_id00017.01dfn2spqyE.00001.mp4``),
  so official outputs can be scored too (:func:`generated_name`).

For the paper's numbers, generate with ``--length official --fps 25 --paste full``
(the official frame count; see the CLI's help). Per pair, frames are decoded at 25
fps (other rates are resampled); faces are detected once, on the source
video (the generated video is the source with a new lower face, so the same
boxes apply; when the generated video is longer than the source, or has another
frame size, it is detected on itself). What each metric sees:

* PSNR, SSIM (reconstruction only): ``on="crops"`` (default) the 128x128 face
  crops of generated and source frame i (same box, bilinear resize), which is
  what lip-sync papers report; ``on="full"`` the full frames. Mean over the first
  ``min(len(generated), len(source))`` frames; pairs averaged.
* FID: Inception pool3 features of the same crops (or full frames), every
  ``fid_frame_stride``-th of those n frames, pooled over all pairs: generated set
  vs. source set (in the cross setting: the video-source frames the generated
  frames were made from).
* LMD (reconstruction only): :mod:`.lmd` on the 128 px crops.
* LSE-C/D: :mod:`.lse` on the generated video with its own audio track (the
  audio source file when the generated file has no sound).
* mouth r (synthetic clips, when ``<clip>.json`` ground truth lies beside both
  sources): :mod:`.mouth` -- the generated video's mouth opening, measured in the
  video source's (steady) true mouth boxes, correlated with the driving clip's true opening
  (``mouth_sync``), the video source's (``mouth_copy``) and the two true openings with
  each other (``mouth_chance``), over the first ``min`` frames of the three. In
  reconstruction the sources are one clip: copy = sync and chance = 1.
* Baselines (``baselines=True``, the default): :mod:`.baselines` -- LSE and mouth r of
  "real" (the audio source's own video and audio) and, in the cross setting,
  "unsynced" (the untouched video source with the driving audio), on the same pairs.

Missing generated files are counted and listed, never fatal; a pair that fails
(unreadable video, clip too short, ...) is recorded with its error. JSON has no
infinity: non-finite numbers are written as strings "inf" / "-inf" and NaN as
null (see :func:`json_safe`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from diff2lip_jax.audio import load_audio
from diff2lip_jax.constants import FPS
from diff2lip_jax.evaluate import baselines as baselines_lib
from diff2lip_jax.evaluate import lmd as lmd_lib
from diff2lip_jax.evaluate import lse as lse_lib
from diff2lip_jax.evaluate import metrics
from diff2lip_jax.evaluate import mouth as mouth_lib
from diff2lip_jax.evaluate.table import NO_GROUND_TRUTH, NOT_REQUESTED, render_table
from diff2lip_jax.face import FaceDetector, crop_and_resize, detect_faces
from diff2lip_jax.video import MediaError, probe, read_frames

MODES = ("reconstruction", "cross")
ON = ("crops", "full")
CROP_SIZE = 128
METRICS = ("psnr", "ssim", "fid", "lmd", "lse", "mouth")
MODE_METRICS = {"reconstruction": METRICS, "cross": ("fid", "lse", "mouth")}

__all__ = [
    "Pair",
    "read_filelist",
    "generated_name",
    "evaluate_pairs",
    "json_safe",
    "write_json",
    "render_table",
    "dataset_name",
    "has_mouth_truth",
    "MODES",
    "ON",
    "METRICS",
    "MODE_METRICS",
]


@dataclasses.dataclass(frozen=True)
class Pair:
    """One filelist line: sources relative to the dataset root, without extension."""

    audio_source: str
    video_source: str
    line: int


def read_filelist(path: str | os.PathLike[str]) -> list[Pair]:
    """Parse a filelist; ValueError naming the line for anything but two fields."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--filelist={p}: no such file")
    pairs = []
    for i, raw in enumerate(p.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{p}:{i}: expected 'audio_source video_source', got {raw.strip()!r}")
        pairs.append(Pair(fields[0], fields[1], i))
    if not pairs:
        raise ValueError(f"--filelist={p}: no pairs in the file")
    return pairs


def generated_name(pair: Pair) -> str:
    """The generated file's name: ``<audio_source>_<video_source>.mp4`` with "/" -> "." (official naming)."""
    return f"{pair.audio_source.replace('/', '.')}_{pair.video_source.replace('/', '.')}.mp4"


def dataset_name(filelist: str | os.PathLike[str]) -> str:
    """A display name from a filelist's file name (VoxCeleb2, LRW, or the file stem)."""
    stem = pathlib.Path(filelist).stem
    for key, name in (("voxceleb2", "VoxCeleb2"), ("lrw", "LRW"), ("lrs2", "LRS2"), ("lrs3", "LRS3")):
        if key in stem.lower():
            return name
    return stem


@dataclasses.dataclass
class _Options:
    """What every pair is evaluated with (see :func:`evaluate_pairs`)."""

    mode: str
    wanted: Sequence[str]
    detector: FaceDetector
    pads: Sequence[int]
    inception: Callable[[np.ndarray], np.ndarray] | None
    scorer: lse_lib.SyncScorer | None
    landmarks: lmd_lib.LandmarkModel | None
    on: str
    fid_frame_stride: int
    vshift: int
    lmd_center: bool
    baselines: baselines_lib.BaselineScorer | None = None
    truths: mouth_lib.TruthCache = dataclasses.field(default_factory=lambda: mouth_lib.TruthCache(FPS))
    # FID features of all pairs so far (generated and source sets).
    fid_generated: list[np.ndarray] = dataclasses.field(default_factory=list)
    fid_source: list[np.ndarray] = dataclasses.field(default_factory=list)


def has_mouth_truth(pairs: Iterable[Pair], source_dir: str | os.PathLike[str], source_ext: str = "mp4") -> bool:
    """Whether any pair has mouth ground truth (:func:`.mouth.truth_path`) beside both of its sources."""
    sdir = pathlib.Path(source_dir)
    return any(mouth_lib.has_truth(sdir / f"{s}.{source_ext}" for s in (p.audio_source, p.video_source)) for p in pairs)


def _evaluate_pair(
    gen_path: pathlib.Path, src_path: pathlib.Path, audio_path: pathlib.Path, opt: _Options
) -> dict[str, Any]:
    """One pair's record; FID features go to ``opt.fid_*``."""
    mode, wanted, on = opt.mode, opt.wanted, opt.on
    gen, src = read_frames(gen_path), read_frames(src_path)
    n = min(len(gen), len(src))
    rec: dict[str, Any] = {"generated_frames": len(gen), "source_frames": len(src), "num_frames": n}
    same_size = gen.shape[1:3] == src.shape[1:3]
    if mode == "reconstruction" and not same_size:
        raise ValueError(
            f"generated frames are {gen.shape[2]}x{gen.shape[1]}, source frames "
            f"{src.shape[2]}x{src.shape[1]}; a reconstruction must keep the frame size"
        )
    track = detect_faces(src, opt.detector, opt.pads)
    src_boxes = track.boxes
    rec["faceless_frames"] = int((~track.has_face[:n]).sum())
    if same_size and len(gen) <= len(src):
        gen_boxes, rec["boxes_from"] = src_boxes[: len(gen)], "source"
    else:  # frames the source cannot place: the generated video's own faces
        gen_boxes, rec["boxes_from"] = detect_faces(gen, opt.detector, opt.pads).boxes, "generated"

    # Frame i of the generated video against frame i of the source, i < n, same box.
    image_metrics = [m for m in ("psnr", "ssim", "fid") if m in wanted]
    if "lmd" in wanted or (image_metrics and on == "crops"):
        gen_crops = crop_and_resize(gen[:n], gen_boxes[:n], CROP_SIZE)
        src_crops = crop_and_resize(src[:n], src_boxes[:n], CROP_SIZE)
    if image_metrics:
        gen_img, src_img = (gen_crops, src_crops) if on == "crops" else (gen[:n], src[:n])
    if "psnr" in wanted:
        rec["psnr"] = float(np.mean(metrics.psnr(gen_img, src_img)))
    if "ssim" in wanted:
        rec["ssim"] = float(np.mean(metrics.ssim(gen_img, src_img)))
    if "lmd" in wanted:
        rec["lmd"], rec["lmd_frames"] = lmd_lib.landmark_distance(gen_crops, src_crops, opt.landmarks, opt.lmd_center)
    if "lse" in wanted:
        has_audio = probe(gen_path).has_audio
        wav = load_audio(gen_path if has_audio else audio_path)
        rec["lse_audio"] = "generated" if has_audio else "audio_source"
        rec.update(lse_lib.evaluate_sync(gen, gen_boxes, wav, opt.scorer, vshift=opt.vshift).record())
    audio_truth = video_truth = None
    if "mouth" in wanted:  # the generated mouth in the video source's true mouth boxes
        audio_truth, video_truth, why = opt.truths.pair(audio_path, src_path)
        if why is None and not same_size:
            why = f"generated frames are {gen.shape[2]}x{gen.shape[1]}, not the source's {src.shape[2]}x{src.shape[1]}"
        if why is None:
            rec.update(mouth_lib.mouth_record(gen, video_truth, audio_truth, video_truth))
        else:
            rec["mouth_skipped"] = why
    if opt.baselines is not None:
        rec["baselines"] = opt.baselines.pair(src, src_boxes, src_path, audio_path, audio_truth, video_truth)
    if "fid" in wanted:  # last, both sets at once: a failed pair adds nothing to either FID set
        g, s = (opt.inception(x[:: opt.fid_frame_stride]) for x in (gen_img, src_img))
        opt.fid_generated.append(g)
        opt.fid_source.append(s)
    return rec


def evaluate_pairs(
    pairs: Sequence[Pair],
    generated_dir: str | os.PathLike[str],
    source_dir: str | os.PathLike[str],
    mode: str,
    detector: FaceDetector,
    *,
    pads: Sequence[int] = (0, 0, 0, 0),
    metrics_wanted: Iterable[str] | None = None,
    inception: Callable[[np.ndarray], np.ndarray] | None = None,
    scorer: lse_lib.SyncScorer | None = None,
    landmarks: lmd_lib.LandmarkModel | None = None,
    on: str = "crops",
    source_ext: str = "mp4",
    fid_frame_stride: int = 1,
    fid_method: metrics.FIDMethod = "sqrtm",
    vshift: int = lse_lib.VSHIFT,
    lmd_center: bool = False,
    baselines: bool = True,
    not_computed: dict[str, str] | None = None,
    dataset: str = "",
    method: str = "diff2lip-jax",
    settings: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate generated videos against their sources (see module doc).

    Args:
      pairs: from :func:`read_filelist`.
      generated_dir, source_dir: roots of generated and source files.
      mode: "reconstruction" or "cross".
      detector: face detector for the source videos; pads: its box padding (top, bottom, left, right).
      metrics_wanted: subset of ``METRICS`` (default: every metric of the mode
        whose network is given); metrics of the other setting are dropped.
      inception: frames uint8 ``[N, H, W, 3]`` -> features ``[N, D]`` (FID).
      scorer: LSE scoring network; landmarks: LMD landmark model.
      on: "crops" or "full" for PSNR, SSIM, FID.
      baselines: also score the :mod:`.baselines` rows (LSE and mouth r of the sources).
      not_computed: metric -> reason, for metrics the caller could not set up.
      dataset, method, settings: copied into the result (table labels, provenance).
      log: progress lines.

    Returns:
      JSON-able dict: dataset, method, mode, settings, counts, ``metrics``
      (aggregates), ``not_computed`` (metric -> reason), ``missing`` (generated
      files not found), ``pairs`` (per-pair records), ``baselines`` (kind -> row,
      :func:`.baselines.summarize`; ``{}`` without them).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if on not in ON:
        raise ValueError(f"on must be one of {ON}, got {on!r}")
    if fid_frame_stride < 1:
        raise ValueError(f"fid_frame_stride must be >= 1, got {fid_frame_stride}")
    skipped = dict(not_computed or {})
    for m in METRICS:
        if m not in MODE_METRICS[mode]:
            skipped[m] = NO_GROUND_TRUTH
    for m in MODE_METRICS[mode]:
        if metrics_wanted is not None and m not in metrics_wanted and m not in skipped:
            skipped[m] = NOT_REQUESTED
    if "mouth" not in skipped and not has_mouth_truth(pairs, source_dir, source_ext):
        skipped["mouth"] = mouth_lib.NO_TRUTH
    available = {"fid": inception, "lse": scorer, "lmd": landmarks}
    for m, obj in available.items():
        if obj is None and m not in skipped:
            skipped[m] = {
                "fid": "no Inception network given",
                "lse": "no SyncNet scorer given",
                "lmd": "no landmark model given",
            }[m]
    wanted = [m for m in METRICS if m in MODE_METRICS[mode] and m not in skipped]
    gdir, sdir = pathlib.Path(generated_dir), pathlib.Path(source_dir)
    opt = _Options(
        mode, wanted, detector, tuple(pads), inception, scorer, landmarks, on, fid_frame_stride, vshift, lmd_center
    )
    if baselines and any(m in wanted for m in baselines_lib.METRICS):
        lse_scorer = scorer if "lse" in wanted else None
        opt.baselines = baselines_lib.BaselineScorer(mode, detector, pads, lse_scorer, vshift, "mouth" in wanted)
    records, missing = [], []
    start = time.perf_counter()
    for k, pair in enumerate(pairs, start=1):
        rec: dict[str, Any] = {
            "audio_source": pair.audio_source,
            "video_source": pair.video_source,
            "generated": generated_name(pair),
        }
        gen_path = gdir / rec["generated"]
        if not gen_path.is_file():
            rec["status"] = "missing"
            missing.append(rec["generated"])
        else:
            try:
                rec.update(
                    _evaluate_pair(
                        gen_path,
                        sdir / f"{pair.video_source}.{source_ext}",
                        sdir / f"{pair.audio_source}.{source_ext}",
                        opt,
                    )
                )
                rec["status"] = "ok"
            except (MediaError, ValueError) as e:
                rec.update(status="failed", error=" ".join(str(e).split()))
        records.append(rec)
        if log:
            log(
                f"[{k}/{len(pairs)}] {rec['generated']}: {rec['status']}"
                + (f" ({rec.get('error')})" if rec["status"] == "failed" else f" {_shown(rec)}")
            )
    ok = [r for r in records if r["status"] == "ok"]
    agg: dict[str, Any] = {m: baselines_lib.mean_over(ok, m) for m in ("psnr", "ssim", "lmd") if m in wanted}
    agg.update(baselines_lib.aggregate(ok, wanted))
    if "fid" in wanted:
        g = np.concatenate(opt.fid_generated) if opt.fid_generated else np.zeros((0, 1))
        s = np.concatenate(opt.fid_source) if opt.fid_source else np.zeros((0, 1))
        if min(len(g), len(s)) >= 2:
            agg["fid"] = metrics.fid_from_features(g, s, fid_method)
            agg["fid_frames"] = {"generated": int(len(g)), "source": int(len(s))}
        else:
            agg["fid"] = float("nan")
            skipped["fid"] = "fewer than 2 frames in a set"
    return {
        "dataset": dataset,
        "method": method,
        "mode": mode,
        "settings": dict(settings or {}, on=on, fid_method=fid_method, vshift=vshift, baselines=bool(opt.baselines)),
        "num_pairs": len(pairs),
        "num_evaluated": len(ok),
        "num_missing": len(missing),
        "num_failed": sum(r["status"] == "failed" for r in records),
        "metrics": agg,
        "not_computed": {m: skipped[m] for m in METRICS if m in skipped},
        "missing": missing,
        "seconds": round(time.perf_counter() - start, 2),
        "pairs": records,
        "baselines": baselines_lib.summarize(ok, mode, wanted) if opt.baselines else {},
    }


_LOGGED = ("psnr", "ssim", "lmd", "lse_c", "lse_d", "mouth_sync")


def _shown(rec: dict[str, Any]) -> str:
    """The progress line's metrics of an evaluated pair, and of its baselines."""
    shown = ", ".join(f"{m} {rec[m]:.4g}" for m in _LOGGED if m in rec)
    for kind, b in rec.get("baselines", {}).items():
        got = ", ".join(f"{m} {b[m]:.4g}" for m in _LOGGED if m in b)
        shown += f"; {kind}: " + (got if b["status"] == "ok" else f"failed ({b['error']})")
    return shown + (f"; mouth r not computed: {rec['mouth_skipped']}" if "mouth_skipped" in rec else "")


def json_safe(obj: Any) -> Any:
    """Recursively: inf -> "inf", -inf -> "-inf", NaN -> None, numpy scalars/arrays -> Python."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def write_json(path: str | os.PathLike[str], results: dict[str, Any]) -> None:
    """Write ``json_safe(results)`` (strict JSON, indented) atomically."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)

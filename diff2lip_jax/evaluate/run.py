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

Per pair, frames are decoded at 25 fps; faces are detected once, on the source
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
from diff2lip_jax.evaluate import lmd as lmd_lib
from diff2lip_jax.evaluate import lse as lse_lib
from diff2lip_jax.evaluate import metrics
from diff2lip_jax.face import FaceDetector, crop_and_resize, detect_faces
from diff2lip_jax.video import MediaError, probe, read_frames

MODES = ("reconstruction", "cross")
ON = ("crops", "full")
CROP_SIZE = 128
METRICS = ("psnr", "ssim", "fid", "lmd", "lse")
MODE_METRICS = {"reconstruction": METRICS, "cross": ("fid", "lse")}
NO_GROUND_TRUTH = "not defined in the cross setting (no ground-truth video for the new audio)"

__all__ = [
    "Pair",
    "read_filelist",
    "generated_name",
    "evaluate_pairs",
    "json_safe",
    "write_json",
    "render_table",
    "dataset_name",
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
    # FID features of all pairs so far (generated and source sets).
    fid_generated: list[np.ndarray] = dataclasses.field(default_factory=list)
    fid_source: list[np.ndarray] = dataclasses.field(default_factory=list)


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
        res = lse_lib.evaluate_sync(gen, gen_boxes, wav, opt.scorer, vshift=opt.vshift)
        rec.update(lse_c=res.lse_c, lse_d=res.lse_d, av_offset=res.offset, lse_windows=res.num_windows)
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
      not_computed: metric -> reason, for metrics the caller could not set up.
      dataset, method, settings: copied into the result (table labels, provenance).
      log: progress lines.

    Returns:
      JSON-able dict: dataset, method, mode, settings, counts, ``metrics``
      (aggregates), ``not_computed`` (metric -> reason), ``missing`` (generated
      files not found), ``pairs`` (per-pair records).
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
            skipped[m] = "not requested"
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
            shown = ", ".join(f"{m} {rec[m]:.4g}" for m in ("psnr", "ssim", "lmd", "lse_c", "lse_d") if m in rec)
            log(
                f"[{k}/{len(pairs)}] {rec['generated']}: {rec['status']}"
                + (f" ({rec.get('error')})" if rec["status"] == "failed" else f" {shown}")
            )
    ok = [r for r in records if r["status"] == "ok"]
    agg: dict[str, Any] = {}
    for m in ("psnr", "ssim", "lmd", "lse_c", "lse_d"):
        if (m if not m.startswith("lse") else "lse") in wanted:
            vals = np.array([r[m] for r in ok if m in r and not (isinstance(r[m], float) and math.isnan(r[m]))])
            agg[m] = float(vals.mean()) if vals.size else float("nan")
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
        "settings": dict(settings or {}, on=on, fid_method=fid_method, vshift=vshift),
        "num_pairs": len(pairs),
        "num_evaluated": len(ok),
        "num_missing": len(missing),
        "num_failed": sum(r["status"] == "failed" for r in records),
        "metrics": agg,
        "not_computed": {m: skipped[m] for m in METRICS if m in skipped},
        "missing": missing,
        "seconds": round(time.perf_counter() - start, 2),
        "pairs": records,
    }


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


# ---------------------------------------------------------------- table

_COLUMNS = {
    "reconstruction": (
        ("psnr", "PSNR↑", 2),
        ("ssim", "SSIM↑", 3),
        ("fid", "FID↓", 2),
        ("lmd", "LMD↓", 3),
        ("lse_c", "LSE-C↑", 3),
        ("lse_d", "LSE-D↓", 3),
    ),
    "cross": (("fid", "FID↓", 2), ("lse_c", "LSE-C↑", 3), ("lse_d", "LSE-D↓", 3)),
}


def _cell(value: Any, decimals: int) -> str:
    if value is None or value == "nan" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value in ("inf", float("inf")):
        return "∞"
    return f"{float(value):.{decimals}f}"


def render_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table shaped like the paper's Table 2: one row per method, a column
    group per (dataset, setting): reconstruction PSNR↑ SSIM↑ FID↓ LMD↓ LSE-C↑ LSE-D↓,
    cross FID↓ LSE-C↑ LSE-D↓. "–" = not computed (reasons in the notes), "∞" = identical frames."""
    groups: list[tuple[str, str]] = []
    rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in results:
        key = (r.get("dataset") or "data", r["mode"])
        if key not in groups:
            groups.append(key)
        rows.setdefault(r.get("method") or "method", {})[key] = r
    header = ["Method"] + [
        f"{d} {'recon.' if m == 'reconstruction' else 'cross'} {label}"
        for d, m in groups
        for _, label, _ in _COLUMNS[m]
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for method, by_group in rows.items():
        cells = [method]
        for g in groups:
            r = by_group.get(g)
            cells += [_cell(r["metrics"].get(k) if r else None, dec) for k, _, dec in _COLUMNS[g[1]]]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for r in results:
        where = f"{r.get('method')} / {r.get('dataset')} {r['mode']}"
        s = r.get("settings", {})
        done = r.get("metrics", {})
        how = [f"PSNR/SSIM/FID on {s.get('on', 'crops')}"]
        if "fid" in done:
            how.append(
                f"FID via {s.get('fid_method', 'sqrtm')}"
                + (" with RANDOM Inception weights" if s.get("inception_weights") == "random" else "")
            )
        if "lse_c" in done:
            how.append(f"LSE scorer {s.get('syncnet_kind') or 'custom'}, vshift {s.get('vshift', lse_lib.VSHIFT)}")
        notes.append(
            f"- {where}: {r['num_evaluated']}/{r['num_pairs']} pairs evaluated, {r['num_missing']} "
            f"generated files missing, {r['num_failed']} failed; {'; '.join(how)}."
        )
        for m, why in r.get("not_computed", {}).items():
            if why not in (NO_GROUND_TRUTH, "not requested"):
                notes.append(f"  - {m.upper()} not computed: {why}")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"

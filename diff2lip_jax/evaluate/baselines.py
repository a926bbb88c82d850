"""Baseline rows, scored from the source files only, and the per-pair means rows are made of.

LSE-C/D have no absolute scale (they depend on the scorer and the data), so the
evaluation scores two references beside the generated videos:

* ``real`` -- "real (audio source)": the audio source's own video with its own
  audio. A perfectly lip-synced talking face: the ceiling.
* ``unsynced`` -- "unsynced (video source + driving audio)", cross setting only: the
  video source untouched, with the driving (audio source) audio. What a method
  that changes nothing scores: the floor. It is exactly the score the video
  source would get as the generated video with the audio source's sound.

In the reconstruction setting audio and video source are the same clip, so real
and unsynced coincide; only ``real`` is computed there.

They are scored as the generated video is (same face detector and padding, LSE
scorer and vshift; audio: the audio source file's sound), on the pairs whose
generated video was evaluated, so that the rows cover the same pairs. Only LSE and
mouth r (:mod:`.mouth`) are computed: image metrics of a source against itself are
trivial (PSNR ∞, SSIM 1, FID and LMD 0). A baseline that fails for a pair (an
unreadable audio source, say) is recorded with its error and leaves the generated
row alone. Each audio source's own scores are computed once and reused across pairs.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from diff2lip_jax.audio import load_audio
from diff2lip_jax.evaluate import lse as lse_lib
from diff2lip_jax.evaluate import mouth as mouth_lib
from diff2lip_jax.face import FaceDetector, detect_faces
from diff2lip_jax.video import MediaError, read_frames

KINDS = {"reconstruction": ("real",), "cross": ("real", "unsynced")}
LABELS = {"real": "real (audio source)", "unsynced": "unsynced (video source + driving audio)"}
METRICS = ("lse", "mouth")  # what a baseline computes (when the run computes it)

__all__ = ["KINDS", "LABELS", "METRICS", "BaselineScorer", "mean_over", "aggregate", "summarize"]


def mean_over(records: Sequence[dict[str, Any]], key: str) -> float:
    """Mean of ``record[key]`` over the records that have it, NaN values skipped (NaN if none)."""
    vals = [r[key] for r in records if key in r and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(np.mean(vals)) if vals else float("nan")


def aggregate(records: Sequence[dict[str, Any]], wanted: Sequence[str]) -> dict[str, Any]:
    """The LSE and mouth means of per-pair records (for the metrics in ``wanted``).

    Mouth: ``mouth_sync``/``mouth_copy``/``mouth_chance`` averaged over the pairs
    where r is defined, ``mouth_pairs`` (pairs measured) and ``mouth_undefined``
    (per key, the pairs where r was undefined).
    """
    out: dict[str, Any] = {}
    if "lse" in wanted:
        out.update(lse_c=mean_over(records, "lse_c"), lse_d=mean_over(records, "lse_d"))
    if "mouth" in wanted:
        measured = [r for r in records if "mouth_frames" in r]
        out.update({k: mean_over(measured, k) for k in mouth_lib.MOUTH_KEYS})
        out["mouth_pairs"] = len(measured)
        out["mouth_undefined"] = {k: sum(math.isnan(r[k]) for r in measured) for k in mouth_lib.MOUTH_KEYS}
    return out


class BaselineScorer:
    """Per-pair baseline records (see module doc).

    Args:
      mode: "reconstruction" or "cross".
      detector, pads: face boxes of the audio source videos (as of the video sources).
      scorer: the LSE network, or None to skip LSE; vshift: its largest shift.
      mouth: compute mouth r where the pair has ground truth.
    """

    def __init__(
        self,
        mode: str,
        detector: FaceDetector,
        pads: Sequence[int],
        scorer: lse_lib.SyncScorer | None,
        vshift: int,
        mouth: bool,
    ) -> None:
        self.kinds = KINDS[mode]
        self.detector, self.pads, self.scorer, self.vshift, self.mouth = detector, tuple(pads), scorer, vshift, mouth
        self._own: dict[pathlib.Path, dict[str, Any]] = {}  # audio source -> its LSE record, mouth measure

    def pair(
        self,
        video_frames: np.ndarray,
        video_boxes: np.ndarray,
        video_path: pathlib.Path,
        audio_path: pathlib.Path,
        audio_truth: mouth_lib.MouthTruth | None,
        video_truth: mouth_lib.MouthTruth | None,
    ) -> dict[str, dict[str, Any]]:
        """``{kind: record}`` for one pair.

        Args:
          video_frames, video_boxes: the decoded video source, uint8 ``[N, H, W, 3]``,
            and its face boxes ``[N, 4]`` (x1, y1, x2, y2).
          video_path, audio_path: the video and audio source files.
          audio_truth, video_truth: the sources' mouth ground truth (mouth r needs both).

        Returns:
          Per kind: ``status`` "ok" with ``lse_c``, ``lse_d``, ``av_offset``,
          ``lse_windows`` and :func:`.mouth.correlations` keys, or "failed" with ``error``.
        """
        truths = (audio_truth, video_truth) if audio_truth is not None and video_truth is not None else None
        out = {}
        for kind in self.kinds:
            try:
                if kind == "real":
                    rec = self._real(video_frames, video_boxes, video_path, audio_path, audio_truth, truths)
                else:
                    rec = self._unsynced(video_frames, video_boxes, audio_path, truths)
                out[kind] = dict(rec, status="ok")
            except (MediaError, ValueError) as e:
                out[kind] = {"status": "failed", "error": " ".join(str(e).split())}
        return out

    def _real(self, video_frames, video_boxes, video_path, audio_path, audio_truth, truths) -> dict[str, Any]:
        if audio_path not in self._own:
            try:
                if audio_path == video_path:
                    frames, boxes = video_frames, video_boxes
                else:
                    frames = read_frames(audio_path)
                    boxes = detect_faces(frames, self.detector, self.pads).boxes
                own: dict[str, Any] = {}
                if self.scorer is not None:
                    res = lse_lib.evaluate_sync(frames, boxes, load_audio(audio_path), self.scorer, vshift=self.vshift)
                    own["lse"] = res.record()
                if self.mouth and audio_truth is not None:  # its own frames in its own mouth boxes
                    own["measure"] = mouth_lib.measure_mouth(frames, audio_truth)
            except (MediaError, ValueError) as e:
                own = {"error": " ".join(str(e).split())}
            self._own[audio_path] = own
        own = self._own[audio_path]
        if "error" in own:
            raise ValueError(own["error"])
        rec = dict(own.get("lse", {}))
        if self.mouth and truths is not None:
            rec.update(mouth_lib.correlations(own["measure"], truths[0].opening, truths[1].opening))
        return rec

    def _unsynced(self, video_frames, video_boxes, audio_path, truths) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        if self.scorer is not None:
            wav = load_audio(audio_path)
            rec.update(lse_lib.evaluate_sync(video_frames, video_boxes, wav, self.scorer, vshift=self.vshift).record())
        if self.mouth and truths is not None:
            rec.update(mouth_lib.mouth_record(video_frames, truths[1], *truths))
        return rec


def summarize(records: Sequence[dict[str, Any]], mode: str, wanted: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The baseline rows of a run from its evaluated pairs' records.

    Returns:
      ``{kind: {"method": label, "num_evaluated", "num_failed", "metrics"}}``, the
      metrics as :func:`aggregate`; ``{}`` when the run computes no baseline metric.
    """
    computed = [m for m in METRICS if m in wanted]
    if not computed:
        return {}
    rows = {}
    for kind in KINDS[mode]:
        recs = [r["baselines"][kind] for r in records if kind in r.get("baselines", {})]
        ok = [b for b in recs if b["status"] == "ok"]
        rows[kind] = {
            "method": LABELS[kind],
            "num_evaluated": len(ok),
            "num_failed": len(recs) - len(ok),
            "metrics": aggregate(ok, computed),
        }
    return rows

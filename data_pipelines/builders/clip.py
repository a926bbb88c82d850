"""One clip -> its segments' records: decode, detect, cut at shots, check faces and sync, crop, mel.

Per clip (:func:`process_segments`): decode at 25 fps in chunks; per chunk run the
face detector and feed PySceneDetect (:class:`data_pipelines.quality.shots.CutFinder`);
split the clip at the cuts into shots; per shot finish the boxes with
:func:`diff2lip_jax.face.track_from_detections` (pads, gap filling, the official
5-frame smoothing: never across a cut), check it, then crop to 128 x 128, JPEG
encode, score its sync (when a scorer is set), shift its audio by the found
offset and compute its mel spectrogram. Frames are kept between the two passes
while they fit in ``buffer_bytes``; a longer video is decoded a second time.

Every shot is either a record or a drop with a reason code
(:data:`data_pipelines.quality.report.REASONS`). A clip without cuts is one
shot whose record has the clip's id; the shots of a cut clip are
``<clip_id>#<k>`` (k counts every shot, dropped ones too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import cv2
import numpy as np

from data_pipelines.builders.sources import ClipSource
from data_pipelines.quality import shots, sync
from diff2lip_jax import audio, constants, face
from diff2lip_jax.data import records
from diff2lip_jax.video import iter_frames

CHUNK = 64  # frames per decoded chunk (and per detector call)


class ClipError(Exception):
    """A clip (or shot) that cannot become a record; the message is the one-line reason,
    ``code`` one of :data:`data_pipelines.quality.report.REASONS`."""

    def __init__(self, message: str, code: str = "too_short") -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class ProcessOptions:
    """What shapes a record. Every field but ``buffer_bytes`` is part of the cache fingerprint.

    face_detector: "dlib" (offline HOG), "s3fd" (``s3fd_weights``, default the
      weights cache's), "voxceleb2" (fixed crop), "box" (needs ``box`` = (y1, y2,
      x1, x2)) or None: the default policy, s3fd when its weights are at hand,
      else dlib (``face.resolve_detector_kind``; the CLI resolves it once, so that
      the cache fingerprint names the detector used).
    pads: (top, bottom, left, right) pixels added to detected boxes.
    smooth: the official 5-frame box smoothing.
    jpeg_quality: 0-100; image_size: crop side in pixels.
    min_frames: clips with fewer frames at 25 fps fail.
    min_face_rate: shots where the detector finds a face in fewer than this
      fraction of frames are dropped (fixed-crop detectors: not checked). The official
      Wav2Lip preprocessing drops a video for a single missed frame; a low rate
      mostly means a detector that sees faces where there are none, and its
      crops (eyes, background) would teach the models nothing.
    shot_threshold: PySceneDetect ContentDetector threshold (<= 0: no cut detection).
    min_segment_seconds: shots of a cut clip shorter than this are dropped ("cut_too_short").
    sync_scorer, sync_weights: the resolved scorer (:func:`sync.resolve_scorer`; "off": no sync filter).
    min_sync_confidence: segments whose corrected confidence is below it are dropped.
    max_av_offset: largest |offset| in frames that is corrected; beyond it the segment is dropped.
    buffer_bytes: decoded frames kept between passes (beyond it: decode twice).
    """

    face_detector: str | None = None
    s3fd_weights: str | None = None
    box: tuple[int, int, int, int] | None = None
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    smooth: bool = True
    jpeg_quality: int = 95
    image_size: int = records.IMAGE_SIZE
    min_frames: int = 10
    min_face_rate: float = 0.95
    shot_threshold: float = shots.DEFAULT_THRESHOLD
    min_segment_seconds: float = 2.0
    sync_scorer: str = "off"
    sync_weights: str | None = None
    min_sync_confidence: float = 3.0
    max_av_offset: int = 5
    buffer_bytes: int = 512 << 20

    def make_detector(self) -> face.FaceDetector:
        return face.make_detector(self.face_detector, weights_path=self.s3fd_weights, box=self.box)

    def make_scorer(self):
        """The sync scorer (one per process), or None when the filter is off."""
        return None if self.sync_scorer == "off" else sync.get_scorer(self.sync_scorer, self.sync_weights)

    def fingerprint(self, path: str) -> str:
        """Hash of the options and of the source file's identity (path, size, mtime)."""
        fields = dataclasses.asdict(self)
        fields.pop("buffer_bytes")
        try:
            st = os.stat(path)
            fields["source"] = [path, st.st_size, st.st_mtime_ns]
        except OSError:
            fields["source"] = [path, None, None]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class ClipOutcome:
    """What one clip gave: ``records`` (dicts of :func:`records.tfds_features`), ``shots``
    (one summary dict per shot, kept or dropped: id, start/end seconds, status, code, reason,
    av_offset, sync_confidence, sync_confidence_before) and ``num_frames`` of the clip."""

    records: list[dict[str, Any]]
    shots: list[dict[str, Any]]
    num_frames: int

    @property
    def dropped(self) -> list[dict[str, Any]]:
        return [s for s in self.shots if s["status"] == "dropped"]


def _check_shot(found: np.ndarray, fixed: bool, opts: ProcessOptions) -> None:
    n = len(found)
    if not fixed and found.any() and found.mean() < opts.min_face_rate:
        raise ClipError(
            f"face detected in only {found.mean():.0%} of its {n} frames (need "
            f"--min_face_rate={opts.min_face_rate:g}); try --face_detector=s3fd",
            "face_rate",
        )


def _first_pass(src: ClipSource, opts: ProcessOptions, detector: face.FaceDetector):
    raw_boxes, raw_found = [], []
    kept: list[np.ndarray] | None = []
    kept_bytes, height, width = 0, 0, 0
    cuts = shots.CutFinder(opts.shot_threshold, constants.FPS)
    for chunk in iter_frames(src.path, fps=constants.FPS, chunk=CHUNK):
        height, width = chunk.shape[1:3]
        b, f = detector(chunk)
        raw_boxes.append(np.asarray(b, np.int64))
        raw_found.append(np.asarray(f, bool))
        cuts.feed(chunk)
        kept_bytes += chunk.nbytes
        if kept is not None and kept_bytes <= opts.buffer_bytes:
            kept.append(chunk)
        else:
            kept = None  # too long to hold: decode again for the crops
    n = sum(len(f) for f in raw_found)
    if n < opts.min_frames:
        raise ClipError(f"too short: {n} frames at 25 fps, need at least {opts.min_frames}", "too_short")
    return np.concatenate(raw_boxes), np.concatenate(raw_found), kept, cuts.finish(), (height, width), n


def process_segments(src: ClipSource, opts: ProcessOptions, detector: face.FaceDetector, scorer=None) -> ClipOutcome:
    """Decode, detect, cut, check, crop and encode one clip: its kept segments' records.

    Args:
      src: the clip. opts: how it is processed. detector: the face detector.
      scorer: a :class:`~diff2lip_jax.evaluate.lse.SyncScorer` (None: no sync filter).

    Raises:
      MediaError: missing/empty/unreadable file, no audio or video stream, decoding failure.
      ClipError: the clip is too short. (Shots that fail a check are drops, not errors.)
    """
    # load_audio probes the file first: not a media file, empty, or no audio -> MediaError.
    wav = audio.load_audio(src.path)
    boxes_raw, found, kept, cuts, (height, width), n = _first_pass(src, opts, detector)
    ranges = shots.shot_ranges(n, cuts)
    fixed = getattr(detector, "fixed", False)
    min_seg = int(round(opts.min_segment_seconds * constants.FPS))
    summaries, todo = [], []  # todo: (index, start, stop, track)
    for k, (a, b) in enumerate(ranges):
        summary = {"id": src.clip_id if len(ranges) == 1 else f"{src.clip_id}#{k}", "start": a / constants.FPS}
        summary.update(end=b / constants.FPS, status="kept", code="", reason="", av_offset=0)
        summary.update(sync_confidence=None, sync_confidence_before=None)
        summaries.append(summary)
        try:
            if len(ranges) > 1 and b - a < min_seg:
                raise ClipError(
                    f"cut too short: {b - a} frames between cuts, need --min_segment_seconds="
                    f"{opts.min_segment_seconds:g} ({min_seg} frames)",
                    "cut_too_short",
                )
            _check_shot(found[a:b], fixed, opts)
            track = face.track_from_detections(
                boxes_raw[a:b], found[a:b], height, width, fixed=fixed, pads=opts.pads, smooth=opts.smooth
            )
            if not track.has_face.any():
                raise ClipError(f"no face detected in any of its {b - a} frames", "face_rate")
            todo.append((k, a, b, track))
        except ClipError as e:
            summary.update(status="dropped", code=e.code, reason=str(e))
    out: list[dict[str, Any]] = []
    if todo:
        _second_pass(src, opts, kept, n, todo, wav, scorer, summaries, out, (height, width))
    return ClipOutcome(out, summaries, n)


def _second_pass(src, opts, kept, n, todo, wav, scorer, summaries, out, frame_size) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(opts.jpeg_quality)]
    jpegs: dict[int, list[bytes]] = {k: [] for k, *_ in todo}
    frames: dict[int, list[np.ndarray]] = {k: [] for k, *_ in todo}
    pending = list(todo)
    pos = 0
    chunks = kept if kept is not None else iter_frames(src.path, fps=constants.FPS, chunk=CHUNK)
    for chunk in chunks:
        if pos + len(chunk) > n:
            raise ClipError("the second decoding pass gave more frames than the first; re-encode the video", "error")
        for k, a, b, track in pending:
            lo, hi = max(a, pos), min(b, pos + len(chunk))
            if hi <= lo:
                continue
            part = chunk[lo - pos : hi - pos]
            for crop in face.crop_and_resize(part, track.boxes[lo - a : hi - a], opts.image_size):
                ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]), params)  # OpenCV wants BGR
                if not ok:
                    raise ClipError("JPEG encoding failed", "error")
                jpegs[k].append(buf.tobytes())
            if scorer is not None:
                frames[k].append(part)
        pos += len(chunk)
        for item in [p for p in pending if p[2] <= pos]:
            pending.remove(item)
            _finish(
                src, opts, item, jpegs.pop(item[0]), frames.pop(item[0]), wav, n, scorer, summaries, out, frame_size
            )
    if pos != n:
        raise ClipError(f"the second decoding pass gave {pos} frames, the first {n}; re-encode the video", "error")


def _finish(src, opts, item, jpegs, frames, wav, n, scorer, summaries, out, frame_size) -> None:
    """Sync-check one shot and append its record (or mark it dropped)."""
    k, a, b, track = item
    summary = summaries[k]
    shift = 0
    try:
        if scorer is not None:
            score = sync.score_segment(np.concatenate(frames), track.boxes, wav, a, b, scorer, opts.max_av_offset)
            summary.update(
                av_offset=score.offset,
                sync_confidence=score.confidence,
                sync_confidence_before=score.confidence_before,
            )
            if score.lse_c < opts.min_sync_confidence:  # no match at any offset
                raise ClipError(
                    f"sync confidence {score.lse_c:.2f} at the best offset ({score.offset:+d}) below "
                    f"--min_sync_confidence={opts.min_sync_confidence:g}; dubbed, off-screen or another clip's audio",
                    "sync_confidence",
                )
            if abs(score.offset) > opts.max_av_offset:
                raise ClipError(
                    f"offset too large: audio-visual offset {score.offset:+d} frames, beyond --max_av_offset="
                    f"{opts.max_av_offset}",
                    "offset_too_large",
                )
            if score.confidence < opts.min_sync_confidence:
                raise ClipError(
                    f"sync confidence {score.confidence:.2f} after correcting the offset ({score.offset:+d}) below "
                    f"--min_sync_confidence={opts.min_sync_confidence:g}",
                    "sync_confidence",
                )
            shift = score.offset if score.corrected else 0
        mel = audio.melspectrogram(sync.cut_audio(wav, a, b, shift, to_end=b == n))
        if not records.valid_window_starts(track.has_face, mel.shape[1]).any():
            raise ClipError(
                f"no usable window: needs 5 consecutive face frames (not the first) with audio under "
                f"them and another face frame; {int(track.has_face.sum())} of {b - a} frames have a face",
                "too_short",
            )
    except ClipError as e:
        summary.update(status="dropped", code=e.code, reason=str(e))
        return
    out.append(
        {
            "clip_id": summary["id"],
            "speaker_id": src.speaker_id,
            "source": src.path,
            "fps": constants.FPS,
            "num_frames": b - a,
            "frame_size": np.array(frame_size, np.int32),
            "boxes": track.boxes.astype(np.int32),
            "has_face": track.has_face,
            "frames": jpegs,
            "mel": mel,
            "segment": np.array([a / constants.FPS, b / constants.FPS], np.float32),
            "av_offset": int(summary["av_offset"]),
            "sync_confidence": np.float32(np.nan if summary["sync_confidence"] is None else summary["sync_confidence"]),
        }
    )


def process_clip(src: ClipSource, opts: ProcessOptions, detector: face.FaceDetector, scorer=None) -> dict[str, Any]:
    """The record of a clip that stays one segment (no cut, nothing dropped).

    Raises:
      MediaError: unreadable input. ClipError: the clip (its only shot) was dropped,
      or it has several shots (use :func:`process_segments`).
    """
    outcome = process_segments(src, opts, detector, scorer)
    if outcome.dropped and not outcome.records:
        first = outcome.dropped[0]
        raise ClipError(first["reason"], first["code"])
    if len(outcome.shots) != 1:
        raise ClipError(f"{len(outcome.shots)} shots: use process_segments", "error")
    return outcome.records[0]

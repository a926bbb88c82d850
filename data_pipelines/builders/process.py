"""One clip -> one record, in parallel over clips, resumable, with a failure report.

Per clip (:func:`process_clip`): decode at 25 fps in chunks, run the face detector
chunk by chunk, finish the boxes with :func:`diff2lip_jax.face.track_from_detections`
(pads, gap filling, the official 5-frame smoothing), crop to 128 x 128 and
JPEG-encode; decode the audio at 16 kHz and compute the mel spectrogram. Frames are
kept between the detection pass and the cropping pass while they fit in
``buffer_bytes``; a longer video is decoded a second time instead, so memory
stays bounded whatever the length.

Resumability (:func:`run_clips`): each clip's result is a file in the cache
folder, written atomically: ``<clip_id>.npz`` when it worked,
``<clip_id>.failed.json`` (with the one-line reason) when it did not. Each
holds a fingerprint of the source file (path, size, mtime) and of the options
that shape the record, so a re-run skips clips whose result is still valid and
redoes those whose video or options changed. Failed clips are not retried
unless asked (``retry_failed``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import multiprocessing
import os
import pathlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from data_pipelines.builders.sources import ClipSource
from diff2lip_jax import audio, constants, face
from diff2lip_jax.data import records
from diff2lip_jax.video import MediaError, iter_frames

CHUNK = 64  # frames per decoded chunk (and per detector call)


class ClipError(Exception):
    """A clip that cannot become a training record; the message is the one-line reason."""


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
    min_face_rate: clips where the detector finds a face in fewer than this
      fraction of frames fail (fixed-crop detectors: not checked). The official
      Wav2Lip preprocessing drops a video for a single missed frame; a low rate
      mostly means a detector that sees faces where there are none, and its
      crops (eyes, background) would teach the models nothing.
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
    buffer_bytes: int = 512 << 20

    def make_detector(self) -> face.FaceDetector:
        return face.make_detector(self.face_detector, weights_path=self.s3fd_weights, box=self.box)

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


def process_clip(src: ClipSource, opts: ProcessOptions, detector: face.FaceDetector) -> dict[str, Any]:
    """Decode, detect, crop and encode one clip: the record (see :func:`records.tfds_features`).

    Raises:
      MediaError: missing/empty/unreadable file, no audio or video stream, decoding failure.
      ClipError: too short, no face, no usable 5-frame window.
    """
    # load_audio probes the file first: not a media file, empty, or no audio -> MediaError.
    mel = audio.melspectrogram(audio.load_audio(src.path))
    raw_boxes: list[np.ndarray] = []
    raw_found: list[np.ndarray] = []
    kept: list[np.ndarray] | None = []
    kept_bytes, height, width = 0, 0, 0
    for chunk in iter_frames(src.path, fps=constants.FPS, chunk=CHUNK):
        height, width = chunk.shape[1:3]
        b, f = detector(chunk)
        raw_boxes.append(np.asarray(b, np.int64))
        raw_found.append(np.asarray(f, bool))
        kept_bytes += chunk.nbytes
        if kept is not None and kept_bytes <= opts.buffer_bytes:
            kept.append(chunk)
        else:
            kept = None  # too long to hold: decode again for the crops
    n = sum(len(f) for f in raw_found)
    if n < opts.min_frames:
        raise ClipError(f"too short: {n} frames at 25 fps, need at least {opts.min_frames}")
    found = np.concatenate(raw_found)
    if not getattr(detector, "fixed", False) and found.any() and found.mean() < opts.min_face_rate:
        raise ClipError(
            f"face detected in only {found.mean():.0%} of its {n} frames (need "
            f"--min_face_rate={opts.min_face_rate:g}); try --face_detector=s3fd"
        )
    track = face.track_from_detections(
        np.concatenate(raw_boxes),
        found,
        height,
        width,
        fixed=getattr(detector, "fixed", False),
        pads=opts.pads,
        smooth=opts.smooth,
    )
    boxes, has_face = track.boxes, track.has_face
    if not has_face.any():
        raise ClipError(f"no face detected in any of its {n} frames")
    if not records.valid_window_starts(has_face, mel.shape[1]).any():
        raise ClipError(
            f"no usable window: needs 5 consecutive face frames (not the first) with audio under "
            f"them and another face frame; {int(has_face.sum())} of {n} frames have a face"
        )
    chunks = kept if kept is not None else iter_frames(src.path, fps=constants.FPS, chunk=CHUNK)
    jpegs: list[bytes] = []
    params = [cv2.IMWRITE_JPEG_QUALITY, int(opts.jpeg_quality)]
    for chunk in chunks:
        start = len(jpegs)
        if start + len(chunk) > n:
            raise ClipError("the second decoding pass gave more frames than the first; re-encode the video")
        crops = face.crop_and_resize(chunk, boxes[start : start + len(chunk)], opts.image_size)
        for crop in crops:
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop[..., ::-1]), params)  # OpenCV wants BGR
            if not ok:
                raise ClipError("JPEG encoding failed")
            jpegs.append(buf.tobytes())
    if len(jpegs) != n:
        raise ClipError(f"the second decoding pass gave {len(jpegs)} frames, the first {n}; re-encode the video")
    return {
        "clip_id": src.clip_id,
        "speaker_id": src.speaker_id,
        "source": src.path,
        "fps": constants.FPS,
        "num_frames": n,
        "frame_size": np.array([height, width], np.int32),
        "boxes": boxes.astype(np.int32),
        "has_face": has_face,
        "frames": jpegs,
        "mel": mel,
    }


# -- the per-clip cache -------------------------------------------------------------------


def cache_paths(cache_dir: str, clip_id: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(record file, failure marker) of a clip: ``<cache_dir>/<clip_id>.npz`` / ``.failed.json``."""
    base = pathlib.Path(cache_dir, *clip_id.split("/"))
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".failed.json")


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_record(path: pathlib.Path, example: dict[str, Any], fingerprint: str) -> int:
    """Write a record as .npz (no pickles: JPEGs concatenated + offsets); returns its payload bytes."""
    jpegs = example["frames"]
    offsets = np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).astype(np.int64)
    meta = {k: example[k] for k in ("clip_id", "speaker_id", "source", "fps", "num_frames")}
    meta.update(fingerprint=fingerprint, num_bytes=int(offsets[-1]) + example["mel"].nbytes)
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.array(json.dumps(meta)),
        frame_size=example["frame_size"],
        boxes=example["boxes"],
        has_face=example["has_face"],
        mel=example["mel"],
        jpeg_offsets=offsets,
        jpeg_data=np.frombuffer(b"".join(jpegs), np.uint8),
    )
    _atomic_write(path, buf.getvalue())
    return meta["num_bytes"]


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record saved by :func:`save_record` (``frames`` as a list of JPEG bytes)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        data, offsets = z["jpeg_data"].tobytes(), z["jpeg_offsets"]
        del meta["fingerprint"], meta["num_bytes"]
        return {
            **meta,
            "frame_size": z["frame_size"],
            "boxes": z["boxes"],
            "has_face": z["has_face"],
            "mel": z["mel"],
            "frames": [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])],
        }


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """Outcome for one clip. status: "new", "cached", "failed" (now) or "failed_before" (marker reused)."""

    source: ClipSource
    status: str
    cache_path: str = ""
    num_frames: int = 0
    num_bytes: int = 0
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("new", "cached")


def _one_line(e: BaseException, path: str) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    if msg.startswith(f"{path}: "):  # MediaError names the file; the report already has it
        msg = msg[len(path) + 2 :]
    return msg if isinstance(e, (MediaError, ClipError)) else f"{type(e).__name__}: {msg}"


def lookup(src: ClipSource, opts: ProcessOptions, cache_dir: str, retry_failed: bool) -> ClipResult | None:
    """The still-valid earlier result of a clip, or None if it must be (re)done."""
    rec_path, fail_path = cache_paths(cache_dir, src.clip_id)
    fp = opts.fingerprint(src.path)
    if rec_path.is_file():
        try:
            with np.load(rec_path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("fingerprint") == fp:
                    return ClipResult(src, "cached", str(rec_path), int(meta["num_frames"]), int(meta["num_bytes"]))
        except (OSError, ValueError, KeyError):  # a damaged cache file: redo the clip
            pass
    if fail_path.is_file() and not retry_failed:
        try:
            marker = json.loads(fail_path.read_text())
            if marker.get("fingerprint") == fp:
                return ClipResult(src, "failed_before", reason=marker["reason"])
        except (OSError, ValueError, KeyError):
            pass
    return None


_DETECTORS: dict[ProcessOptions, face.FaceDetector] = {}


def _detector(opts: ProcessOptions) -> face.FaceDetector:
    """One detector per process and options (each pool worker builds its own)."""
    if opts not in _DETECTORS:
        _DETECTORS[opts] = opts.make_detector()
    return _DETECTORS[opts]


_INTERRUPTED = False  # set in a worker process by Ctrl-C (see _worker_init)


def _worker_init() -> None:
    """Pool workers: Ctrl-C is the parent's to handle (it terminates the pool); SIGTERM
    from `Pool.terminate` unwinds so that temp files are removed."""
    import signal

    def on_sigint(signum, frame):
        global _INTERRUPTED
        _INTERRUPTED = True

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _start_pool(ctx, processes: int):
    """A pool whose workers start with SIGINT blocked (a Ctrl-C while they import, before
    `_worker_init` unblocks it, prints no traceback); the parent gets a pending Ctrl-C after."""
    import signal

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return ctx.Pool(processes=processes, initializer=_worker_init)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def process_to_cache(src: ClipSource, opts: ProcessOptions, cache_dir: str) -> ClipResult:
    """Process one clip and store its record or failure marker; never raises for a bad clip."""
    rec_path, fail_path = cache_paths(cache_dir, src.clip_id)
    fp = opts.fingerprint(src.path)
    try:
        example = process_clip(src, opts, _detector(opts))
    except Exception as e:
        reason = _one_line(e, src.path)
        if _INTERRUPTED:  # Ctrl-C killed this clip's ffmpeg: not the clip's fault, no marker
            return ClipResult(src, "failed", reason="interrupted")
        _atomic_write(
            fail_path,
            json.dumps({"clip_id": src.clip_id, "source": src.path, "reason": reason, "fingerprint": fp}).encode(),
        )
        rec_path.unlink(missing_ok=True)  # a stale record of an older version of the file
        return ClipResult(src, "failed", reason=reason)
    nbytes = save_record(rec_path, example, fp)
    fail_path.unlink(missing_ok=True)
    return ClipResult(src, "new", str(rec_path), example["num_frames"], nbytes)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """All clips' outcomes (input order) and the wall time of the run."""

    results: tuple[ClipResult, ...]
    seconds: float

    def count(self, *statuses: str) -> int:
        return sum(r.status in statuses for r in self.results)

    @property
    def ok(self) -> list[ClipResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[ClipResult]:
        return [r for r in self.results if not r.ok]


def run_clips(
    sources: Sequence[ClipSource],
    opts: ProcessOptions,
    cache_dir: str,
    num_workers: int = 0,
    retry_failed: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Process every clip not already done, in ``num_workers`` processes (0: in this one).

    Workers are spawned (not forked: the parent may hold JAX threads) and each
    builds its own detector. The detector is built once here first, so that a bad
    detector setting fails the run at once instead of every clip.
    """
    start = time.perf_counter()
    _detector(opts)
    done = {i: r for i, s in enumerate(sources) if (r := lookup(s, opts, cache_dir, retry_failed))}
    todo = [i for i in range(len(sources)) if i not in done]
    if log:
        log(
            f"{len(sources)} clips: {len(done)} done before, {len(todo)} to process with "
            f"{num_workers or 'no'} worker process{'es' if num_workers != 1 else ''}"
        )
    work = functools.partial(process_to_cache, opts=opts, cache_dir=cache_dir)
    for k, (i, result) in enumerate(_map(work, [sources[i] for i in todo], todo, num_workers), 1):
        done[i] = result
        if log:
            what = f"{result.num_frames} frames" if result.ok else f"FAILED: {result.reason}"
            log(f"[{k}/{len(todo)}] {result.source.clip_id}: {what}")
    return RunResult(tuple(done[i] for i in range(len(sources))), time.perf_counter() - start)


def _indexed(work: Callable[[ClipSource], ClipResult], item: tuple[int, ClipSource]) -> tuple[int, ClipResult]:
    return item[0], work(item[1])


def _map(
    work: Callable[[ClipSource], ClipResult], items: list[ClipSource], indices: list[int], num_workers: int
) -> Iterator[tuple[int, ClipResult]]:
    """(index, result) pairs as clips finish."""
    pairs = list(zip(indices, items))
    if num_workers <= 0 or not pairs:
        yield from (_indexed(work, p) for p in pairs)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = _start_pool(ctx, min(num_workers, len(pairs)))
    try:
        yield from pool.imap_unordered(functools.partial(_indexed, work), pairs, chunksize=1)
        pool.close()  # done: workers exit on their own (a SIGTERM at their exit prints a traceback)
    except BaseException:  # Ctrl-C, an error, or the caller stopped early: stop the workers now
        pool.terminate()
        raise
    finally:
        pool.join()

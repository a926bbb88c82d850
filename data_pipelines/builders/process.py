"""Clips in parallel, resumable, with a failure report: the per-clip cache and the run.

The per-clip work (decode, detect, cut at shots, check faces and sync, crop,
JPEG, mel) is :func:`data_pipelines.builders.clip.process_segments`; this module
stores its outcome and runs it over many clips.

Resumability (:func:`run_clips`): each clip's outcome is a file in the cache
folder, written atomically: ``<clip_id>.npz`` when at least one segment was kept
(its records, and the summary of every shot), ``<clip_id>.failed.json`` (with
the one-line reason and the shots' summaries) when none was. Each holds a
fingerprint of the source file (path, size, mtime) and of the options that shape
the records, so a re-run skips clips whose result is still valid and redoes those
whose video or options changed. Failed clips are not retried unless asked
(``retry_failed``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import multiprocessing
import os
import pathlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from data_pipelines.builders.clip import ClipError, ClipOutcome, ProcessOptions, process_clip, process_segments
from data_pipelines.builders.sources import ClipSource
from diff2lip_jax import face
from diff2lip_jax.video import MediaError

__all__ = ["ClipError", "ClipOutcome", "ProcessOptions", "process_clip", "process_segments"]  # re-exported


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


_META_FIELDS = ("clip_id", "speaker_id", "source", "fps", "num_frames", "av_offset")


def save_records(path: pathlib.Path, outcome: ClipOutcome, fingerprint: str) -> int:
    """Write a clip's records as one .npz (no pickles: JPEGs concatenated + offsets, arrays
    suffixed ``_<i>`` per record) with the shots' summaries; returns the payload bytes."""
    arrays: dict[str, np.ndarray] = {}
    metas, nbytes = [], 0
    for i, rec in enumerate(outcome.records):
        jpegs = rec["frames"]
        offsets = np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).astype(np.int64)
        metas.append({k: rec[k] for k in _META_FIELDS} | {"sync_confidence": float(rec["sync_confidence"])})
        nbytes += int(offsets[-1]) + rec["mel"].nbytes
        arrays.update(
            {
                f"frame_size_{i}": rec["frame_size"],
                f"boxes_{i}": rec["boxes"],
                f"has_face_{i}": rec["has_face"],
                f"mel_{i}": rec["mel"],
                f"segment_{i}": rec["segment"],
                f"jpeg_offsets_{i}": offsets,
                f"jpeg_data_{i}": np.frombuffer(b"".join(jpegs), np.uint8),
            }
        )
    meta = dict(
        records=metas,
        shots=outcome.shots,
        fingerprint=fingerprint,
        num_bytes=nbytes,
        num_frames=sum(m["num_frames"] for m in metas),
    )
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    _atomic_write(path, buf.getvalue())
    return nbytes


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records saved by :func:`save_records` (``frames`` as lists of JPEG bytes), in shot order."""
    out = []
    with np.load(path, allow_pickle=False) as z:
        for i, meta in enumerate(json.loads(str(z["meta"]))["records"]):
            data, offsets = z[f"jpeg_data_{i}"].tobytes(), z[f"jpeg_offsets_{i}"]
            out.append(
                {
                    **{k: meta[k] for k in _META_FIELDS},
                    "sync_confidence": np.float32(meta["sync_confidence"]),
                    **{k: z[f"{k}_{i}"] for k in ("frame_size", "boxes", "has_face", "mel", "segment")},
                    "frames": [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])],
                }
            )
    return out


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """The first (for an uncut clip: the only) record in a clip's cache file."""
    return load_records(path)[0]


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """Outcome for one clip. status: "new", "cached", "failed" (now) or "failed_before" (marker reused).

    num_frames: frames in the kept records; code: the failure's reason code
    (:data:`data_pipelines.quality.report.REASONS`); shots: one summary dict per shot
    (see :class:`~data_pipelines.builders.clip.ClipOutcome`), empty when the clip failed as a whole.
    """

    source: ClipSource
    status: str
    cache_path: str = ""
    num_frames: int = 0
    num_bytes: int = 0
    reason: str = ""
    code: str = ""
    shots: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in ("new", "cached")


def _one_line(e: BaseException, path: str) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    if msg.startswith(f"{path}: "):  # MediaError names the file; the report already has it
        msg = msg[len(path) + 2 :]
    return msg if isinstance(e, (MediaError, ClipError)) else f"{type(e).__name__}: {msg}"


def reason_code(e: BaseException) -> str:
    """The report's reason code of a clip-level failure."""
    if isinstance(e, MediaError):
        return "unreadable"
    return e.code if isinstance(e, ClipError) else "error"


def lookup(src: ClipSource, opts: ProcessOptions, cache_dir: str, retry_failed: bool) -> ClipResult | None:
    """The still-valid earlier result of a clip, or None if it must be (re)done."""
    rec_path, fail_path = cache_paths(cache_dir, src.clip_id)
    fp = opts.fingerprint(src.path)
    if rec_path.is_file():
        try:
            with np.load(rec_path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("fingerprint") == fp:
                    return ClipResult(
                        src,
                        "cached",
                        str(rec_path),
                        int(meta["num_frames"]),
                        int(meta["num_bytes"]),
                        shots=tuple(meta["shots"]),
                    )
        except (OSError, ValueError, KeyError):  # a damaged cache file: redo the clip
            pass
    if fail_path.is_file() and not retry_failed:
        try:
            marker = json.loads(fail_path.read_text())
            if marker.get("fingerprint") == fp:
                return ClipResult(
                    src,
                    "failed_before",
                    reason=marker["reason"],
                    code=marker.get("code", "error"),
                    shots=tuple(marker.get("shots", ())),
                )
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


def run_one(src: ClipSource, opts: ProcessOptions) -> ClipOutcome:
    """One clip's outcome with this process's detector and scorer (what the pool and Beam run)."""
    return process_segments(src, opts, _detector(opts), opts.make_scorer())


def process_to_cache(src: ClipSource, opts: ProcessOptions, cache_dir: str) -> ClipResult:
    """Process one clip and store its records or failure marker; never raises for a bad clip."""
    rec_path, fail_path = cache_paths(cache_dir, src.clip_id)
    fp = opts.fingerprint(src.path)

    def failed(reason: str, code: str, shots: tuple = ()) -> ClipResult:
        marker = {"clip_id": src.clip_id, "source": src.path, "reason": reason, "code": code, "shots": list(shots)}
        _atomic_write(fail_path, json.dumps(marker | {"fingerprint": fp}).encode())
        rec_path.unlink(missing_ok=True)  # a stale record of an older version of the file
        return ClipResult(src, "failed", reason=reason, code=code, shots=shots)

    try:
        outcome = run_one(src, opts)
    except Exception as e:
        if _INTERRUPTED:  # Ctrl-C killed this clip's ffmpeg: not the clip's fault, no marker
            return ClipResult(src, "failed", reason="interrupted", code="error")
        return failed(_one_line(e, src.path), reason_code(e))
    if not outcome.records:
        first = outcome.dropped[0]
        return failed(first["reason"], first["code"], tuple(outcome.shots))
    nbytes = save_records(rec_path, outcome, fp)
    fail_path.unlink(missing_ok=True)
    frames = sum(r["num_frames"] for r in outcome.records)
    return ClipResult(src, "new", str(rec_path), frames, nbytes, shots=tuple(outcome.shots))


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
    builds its own detector and sync scorer. Both are built once here first, so that a bad
    setting fails the run at once instead of every clip.
    """
    start = time.perf_counter()
    _detector(opts)
    opts.make_scorer()
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

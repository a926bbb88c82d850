"""Data pipeline throughput: preprocessing clips/s, stored bytes per frame, loader windows/s.

    python benchmarks/data.py [--num_clips 8] [--seconds 3] [--size 160] [--detectors box,dlib]
                              [--pre_workers 2] [--workers 0,1,2] [--batch_size 8] [--batches 40]

Synthesises clips (diff2lip-synth), prepares them with each face detector
(``--pre_workers`` processes; "box" is a fixed crop, so it measures decoding, mel,
cropping and JPEG; "dlib" adds the offline detector), then times
``diff2lip_jax.data.make_train_loader`` for each grain ``worker_count``: windows/s
after a warm-up (a window = 5 frames + reference + mels). Target: >= 200
windows/s on a 2-core machine. Everything lives in a temporary folder unless
``--work_dir`` is given.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import grain
import tensorflow_datasets as tfds
from absl import app, flags

from data_pipelines import synthetic
from data_pipelines.builders import ProcessOptions, make_builder
from diff2lip_jax import data as d2l_data

_NUM_CLIPS = flags.DEFINE_integer("num_clips", 8, "Synthetic clips.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Seconds per clip.")
_SIZE = flags.DEFINE_integer("size", 160, "Side of the synthetic frames in pixels.")
_DETECTORS = flags.DEFINE_list("detectors", ["box", "dlib"], "Face detectors to time preprocessing with.")
_PRE_WORKERS = flags.DEFINE_integer("pre_workers", 2, "Preprocessing worker processes.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker_count values to time.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Windows per batch.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per loader setting.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Keep the data here (default: a temporary folder).")


def _prepare(synth: pathlib.Path, out: pathlib.Path, detector: str) -> dict:
    """Preprocess with one detector: clips/s, frames/s, bytes/frame."""
    side = _SIZE.value
    options = ProcessOptions(face_detector=detector, box=(side // 10, side - side // 10, side // 8, side - side // 8))
    builder = make_builder(
        "local_videos",
        data_dir=str(out),
        source=str(synth),
        options=options,
        num_workers=_PRE_WORKERS.value,
        split="train",
    )
    builder.download_and_prepare()
    result = builder.run_result
    frames = sum(r.num_frames for r in result.ok)
    stored = sum(f.stat().st_size for f in pathlib.Path(builder.data_dir).glob("*.array_record-*"))
    return {
        "clips_per_s": len(result.results) / result.seconds,
        "frames_per_s": frames / result.seconds,
        "ok": len(result.ok),
        "frames": frames,
        "stored_per_frame": stored / max(frames, 1),
        "payload_per_frame": sum(r.num_bytes for r in result.ok) / max(frames, 1),
    }


def _windows_per_second(data_dir: pathlib.Path, workers: int) -> float:
    it = d2l_data.make_train_loader(
        data_dir, "train", _BATCH.value, seed=0, worker_count=workers, shard_options=grain.sharding.ShardOptions(0, 1)
    )
    try:
        for _ in range(3):  # warm-up: worker start, first reads
            next(it)
        start = time.perf_counter()
        for _ in range(_BATCHES.value):
            next(it)
        return _BATCHES.value * _BATCH.value / (time.perf_counter() - start)
    finally:
        if hasattr(it, "close"):
            it.close()


def main(argv: list[str]) -> None:
    del argv
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(_WORK_DIR.value or tmp)
        synth = work / "synth"
        synthetic.generate_dataset(
            synth,
            num_clips=_NUM_CLIPS.value,
            seed=0,
            size=(_SIZE.value, _SIZE.value),
            seconds=_SECONDS.value,
            identities=4,
        )
        print(
            f"{_NUM_CLIPS.value} clips x {_SECONDS.value:g} s, {_SIZE.value} px, "
            f"{_PRE_WORKERS.value} preprocessing workers"
        )
        prepared = {}
        raw = d2l_data.IMAGE_SIZE**2 * 3
        for det in _DETECTORS.value:
            prepared[det] = work / f"prepared_{det}"
            s = _prepare(synth, prepared[det], det)
            print(
                f"preprocess [{det:>8}]: {s['clips_per_s']:6.2f} clips/s  {s['frames_per_s']:7.1f} frames/s  "
                f"({s['ok']} clips ok, {s['frames']} frames, wall time incl. worker start-up)"
            )
            print(
                f"  storage: {s['stored_per_frame'] / 1024:.1f} KB/frame in ArrayRecord (JPEG q95 + mel: "
                f"{s['payload_per_frame'] / 1024:.1f} KB) vs {raw / 1024:.1f} KB raw 128x128x3 "
                f"({raw / s['stored_per_frame']:.1f}x smaller)"
            )
        data_dir = prepared[_DETECTORS.value[0]]
        for w in (int(v) for v in _WORKERS.value):
            rate = _windows_per_second(data_dir, w)
            print(f"loader worker_count={w}: {rate:7.1f} windows/s (batch {_BATCH.value}, {_BATCHES.value} batches)")


if __name__ == "__main__":
    app.run(main)

"""The data-quality filters on the synthetic set with planted faults: what they drop, and how fast.

    python benchmarks/quality.py [--copies 2] [--workers 2] [--scorers mouth,syncnet_python_random]

Writes ``--copies`` copies of :func:`data_pipelines.synthetic.faults.make_faulty_set`
(per copy: 2 clean clips, a clip with a hard cut between two identities, one with
a cut leaving a 1 s shot, one with audio 3 frames late, one with another speaker's
audio, one unreadable file; 128 px, 3-6 s), then runs the per-clip work
(:func:`data_pipelines.builders.process.run_clips`, ``--workers`` processes, fixed
face box) once per scorer:

* ``none``: cuts and face checks only (the sync filter off);
* ``mouth``: the synthetic faces' transparent scorer (what the tests use);
* ``syncnet_python_random``: syncnet_python's network (224 px crops, MFCC) with
  random weights saved as a ``syncnet_v2.model``-shaped file: its drops mean
  nothing, its speed is the official scorer's cost on this machine.

Prints one line per scorer: segments in/out, drops by reason, offsets, and
segments/s (the segments over the wall time of the run, decoding, JPEG and the
workers' compiles included), then the warm time of one 3 s segment in one process. Everything lives in a temporary folder unless ``--work_dir`` is given.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import numpy as np
from absl import app, flags

from data_pipelines.builders import ProcessOptions, local_video_sources, process
from data_pipelines.quality import report as quality
from data_pipelines.synthetic import faults

_COPIES = flags.DEFINE_integer("copies", 2, "Copies of the faulty set (7 inputs, 8 shots each).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes over clips.")
_SCORERS = flags.DEFINE_list("scorers", ["none", "mouth", "syncnet_python_random"], "Scorers to run.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Keep the data here (default: a temporary folder).")
BOX = (8, 124, 8, 120)


def _random_syncnet_python(path: pathlib.Path) -> pathlib.Path:
    import torch

    from diff2lip_jax.evaluate import syncnet_python as sp

    rng = np.random.default_rng(0)
    sd = {}
    for key, shape in sp.state_dict_shapes().items():
        if key.endswith("running_var"):
            value = np.ones(shape)
        elif key.endswith("weight") and len(shape) > 1:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            value = 0.01 * rng.standard_normal(shape)
        sd[key] = torch.from_numpy(value.astype(np.float32))
    torch.save(sd, path)
    return path


def _options(scorer: str, work: pathlib.Path) -> ProcessOptions:
    base = dict(face_detector="box", box=BOX)
    if scorer == "none":
        return ProcessOptions(**base)
    if scorer == "mouth":
        return ProcessOptions(**base, sync_scorer=faults.SCORER, min_sync_confidence=faults.MIN_CONFIDENCE)
    if scorer == "syncnet_python_random":
        weights = _random_syncnet_python(work / "syncnet_v2_random.model")
        return ProcessOptions(**base, sync_scorer="syncnet_python", sync_weights=str(weights))
    raise app.UsageError(f"--scorers: unknown {scorer!r}")


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(_WORK_DIR.value or tmp)
        start = time.perf_counter()
        faults.make_faulty_set(work / "raw", copies=_COPIES.value)
        sources = local_video_sources(str(work / "raw"))
        print(f"{len(sources)} inputs written in {time.perf_counter() - start:.1f} s; workers {_WORKERS.value}")
        for scorer in _SCORERS.value:
            opts = _options(scorer, work)
            result = process.run_clips(sources, opts, str(work / f"cache_{scorer}"), num_workers=_WORKERS.value)
            rep = quality.build_report([quality.outcome_from_result(r) for r in result.results], scorer)
            seg = rep["segments"]
            rate = seg["in"] / result.seconds
            print(
                f"{scorer:>22}: {rep['clips']['in']} clips -> {rep['clips']['out']}, segments {seg['in']} -> "
                f"{seg['out']}; drops {rep['counts']}; offsets {rep['offset_histogram']}; "
                f"confidence q50 {rep['confidence_quantiles'].get('q50', float('nan')):.2f}; "
                f"{result.seconds:.1f} s = {rate:.2f} segments/s ({_WORKERS.value} workers, compiles included)"
            )
            # Warm, in this process: one 3 s clip again once the scorer is compiled.
            src = next(s for s in sources if s.clip_id.endswith("good_a"))
            process.run_one(src, opts)
            t0 = time.perf_counter()
            process.run_one(src, opts)
            print(f"{'':>22}  warm, one process: {time.perf_counter() - t0:.2f} s per 3 s segment (75 frames)")


if __name__ == "__main__":
    app.run(main)
